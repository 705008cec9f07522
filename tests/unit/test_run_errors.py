"""A run survives what goes wrong in it: an unexpected exception fails one entry, a lock
file that cannot be written is a run-level error, a failed metadata batch fails only its
own ids and is retried alone (review findings F1, F10, F7)."""

from __future__ import annotations

import errno
import importlib
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

import fetcher
from fetcher.http import Policy
from fetcher.library import LockRecord, read_lock
from fetcher.manifest import Manifest, load
from fetcher.status import status
from fetcher.sync import Options
from tests.conftest import FakeClock
from tests.mockarxiv import Arxiv, pdf_for

POLICY = Policy(attempts=2, backoff_initial=0.1, backoff_max=0.1)


def manifest(tmp_path: Path, body: str) -> Manifest:
    path = tmp_path / "manifest.toml"
    path.write_text("[settings]\narxiv_interval = 3.0\nhost_interval = 0.0\n\n" + body)
    return load(path)


def papers(ids: list[str]) -> str:
    return "".join(f'[[paper]]\narxiv = "{i}"\n\n' for i in ids)


# --- F1: the last resort in one entry -----------------------------------------------------


def test_an_unexpected_exception_fails_one_entry_and_the_run_goes_on(tmp_path: Path) -> None:
    m = manifest(
        tmp_path,
        '[[paper]]\narxiv = "1706.03762"\n\n'
        '[[paper]]\narxiv = "1810.04805"\n\n'
        '[[paper]]\nurl = "https://cdn.example/bad.pdf"\nname = "bad"\n\n'
        '[[paper]]\nurl = "https://cdn.example/good.pdf"\nname = "good"\n',
    )
    with respx.mock(assert_all_called=False) as router:
        # the first arXiv paper and one url hit a bug (an exception nobody expects)
        router.get("https://export.arxiv.org/pdf/1706.03762v1").mock(
            side_effect=RuntimeError("boom")
        )
        router.get("https://cdn.example/bad.pdf").mock(side_effect=RuntimeError("boom"))
        router.get("https://cdn.example/good.pdf").mock(
            return_value=httpx.Response(200, content=pdf_for("good"))
        )
        Arxiv(router, {"1706.03762": 1, "1810.04805": 1})
        report = fetcher.sync(m, clock=FakeClock(), policy=POLICY)
    by_key = {e.key: e for e in report.entries}
    for key in ("1706.03762", "bad"):
        error = by_key[key].error
        assert by_key[key].status == "failed" and error is not None
        assert error.startswith("internal error: RuntimeError: boom"), error
    # the arXiv lane went on after its failed entry, and the other lane was not stopped
    assert [by_key[k].status for k in ("1810.04805", "good")] == ["downloaded"] * 2
    lib = tmp_path / "downloads"
    assert (lib / "good.pdf").read_bytes() == pdf_for("good")
    assert (lib / "1810.04805.pdf").read_bytes() == pdf_for("1810.04805v1")
    assert not (lib / "bad.pdf").exists() and not (lib / "1706.03762.pdf").exists()
    assert set(read_lock(tmp_path / "manifest.lock")) == {"1810.04805", "good"}
    data = json.loads(json.dumps(report.to_json()))  # the report is whole, for --json
    assert data["counts"] == {"downloaded": 2, "skipped": 0, "failed": 2}


# --- F10: the lock file cannot be written ----------------------------------------------------


def test_a_lock_that_cannot_be_written_is_a_run_error_not_a_failed_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = manifest(
        tmp_path,
        '[[paper]]\narxiv = "1706.03762"\n\n'
        '[[paper]]\nurl = "https://cdn.example/good.pdf"\nname = "good"\n',
    )

    def disk_full(path: Path, records: dict[str, LockRecord]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with respx.mock(assert_all_called=False) as router:
        Arxiv(router, {"1706.03762": 1})
        router.get("https://cdn.example/good.pdf").mock(
            return_value=httpx.Response(200, content=pdf_for("good"))
        )
        monkeypatch.setattr(importlib.import_module("fetcher.lockbook"), "write_lock", disk_full)
        report = fetcher.sync(m, clock=FakeClock(), policy=POLICY)  # no OSError escapes
        assert [e.status for e in report.entries] == ["downloaded", "downloaded"]
        assert not report.ok
        (error,) = report.errors
        assert "disk full" in error and "manifest.lock" in error
        lib = tmp_path / "downloads"
        assert (lib / "good.pdf").read_bytes() == pdf_for("good")
        assert not (tmp_path / "manifest.lock").exists()

        # space again: the next sync writes the lock from the sidecars, asking nothing
        monkeypatch.undo()
        calls = len(router.calls)
        again = fetcher.sync(m, clock=FakeClock(), policy=POLICY)
        assert again.ok and [e.status for e in again.entries] == ["skipped", "skipped"]
        assert len(router.calls) == calls
    assert set(read_lock(tmp_path / "manifest.lock")) == {"1706.03762", "good"}


# --- F7: one metadata batch at a time -------------------------------------------------------

IDS = [f"2301.{n:05d}" for n in range(1, 6)]  # three batches: 2, 2, 1


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 2 ids instead of 100: the same logic, 40 times fewer downloads."""
    monkeypatch.setattr("fetcher.arxiv_api.BATCH", 2)


class FlakyApi(Arxiv):
    """The API fails the batches whose first id is in `fail`, `times` times each."""

    def __init__(self, router: respx.MockRouter, fail: set[str], times: int):
        super().__init__(router, dict.fromkeys(IDS, 1))
        self.fail = dict.fromkeys(fail, times)
        self.asked: list[str] = []

    def api(self, request: httpx.Request) -> httpx.Response:
        first = parse_qs(urlsplit(str(request.url)).query)["id_list"][0].split(",")[0]
        self.asked.append(first)
        if self.fail.get(first, 0) > 0:
            self.fail[first] -= 1
            return httpx.Response(503, headers={"Retry-After": "1"})
        return super().api(request)


def test_a_failed_batch_is_retried_alone_and_the_others_are_not_asked_again(
    tmp_path: Path,
) -> None:
    m = manifest(tmp_path, papers(IDS))
    with respx.mock(assert_all_called=False) as router:
        api = FlakyApi(router, {IDS[4]}, times=1)
        report = fetcher.sync(m, Options(), clock=FakeClock(), policy=POLICY)
    assert report.ok
    assert api.asked == [IDS[0], IDS[2], IDS[4], IDS[4]]  # 4 requests, not 6 (all three again)


def test_a_batch_that_gives_up_fails_only_its_own_entries(tmp_path: Path) -> None:
    m = manifest(tmp_path, papers(IDS))
    with respx.mock(assert_all_called=False) as router:
        api = FlakyApi(router, {IDS[2]}, times=99)
        report = fetcher.sync(m, Options(), clock=FakeClock(), policy=POLICY)
    failed = [e for e in report.entries if e.status == "failed"]
    assert [e.key for e in failed] == IDS[2:4]
    assert all(e.error is not None and "503" in e.error for e in failed)
    assert report.counts["downloaded"] == 3
    assert api.asked == [IDS[0], IDS[2], IDS[2], IDS[4]]
    lib = tmp_path / "downloads"
    assert (lib / f"{IDS[4]}.pdf").read_bytes() == pdf_for(f"{IDS[4]}v1")


def test_check_updates_keeps_the_batches_that_answered(tmp_path: Path) -> None:
    m = manifest(tmp_path, papers(IDS))
    with respx.mock(assert_all_called=False) as router:
        Arxiv(router, dict.fromkeys(IDS, 1))
        assert fetcher.sync(m, clock=FakeClock(), policy=POLICY).ok
    with respx.mock(assert_all_called=False) as router:
        api = FlakyApi(router, {IDS[0]}, times=99)
        api.papers = dict.fromkeys(IDS, 2)  # every paper has a v2 now
        report = status(m, check_updates=True, clock=FakeClock(), policy=POLICY)
    newer = {e.key for e in report.entries if e.newer == 2}
    assert newer == set(IDS[2:])
    assert report.update_error is not None and "2 of 5 papers" in report.update_error
    assert api.asked == [IDS[0], IDS[0], IDS[2], IDS[4]]
