"""The sync pipeline end to end on respx: plan, fetch, commit, lock, sidecars, report."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
import respx

from fetcher import manifest as manifest_mod
from fetcher.library import Library, read_lock
from fetcher.sync import Options, Report, Syncer
from tests.conftest import SEED_MANIFEST, FakeClock
from tests.mockarxiv import Arxiv, pdf_for


def write_manifest(tmp_path: Path, body: str) -> manifest_mod.Manifest:
    path = tmp_path / "manifest.toml"
    path.write_text("[settings]\narxiv_interval = 3.0\nhost_interval = 1.0\n\n" + body)
    return manifest_mod.load(path)


BODY = """
[[paper]]
arxiv = "1706.03762"

[[paper]]
arxiv = "https://arxiv.org/abs/1810.04805v2"

[[paper]]
url = "https://cdn.example/gpt1.pdf"
name = "gpt1"

[[paper]]
url = "https://blog.example/moe"
name = "moe-blog"
format = "html"
"""


def run(m: manifest_mod.Manifest, clock: FakeClock, **options: object) -> Report:
    return Syncer(m, Options(**options), clock=clock).run()  # type: ignore[arg-type]


@pytest.fixture
def world(tmp_path: Path) -> tuple[respx.MockRouter, Arxiv]:
    router = respx.mock(assert_all_called=False)
    arxiv = Arxiv(router, {"1706.03762": 7, "1810.04805": 2})
    router.get("https://cdn.example/gpt1.pdf").mock(
        return_value=httpx.Response(200, content=pdf_for("gpt1"))
    )
    router.get("https://blog.example/moe").mock(
        return_value=httpx.Response(
            200, content=b"<html><title>MoE</title></html>", headers={"Content-Type": "text/html"}
        )
    )
    return router, arxiv


def test_cold_sync_stores_everything_with_one_api_request(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, arxiv = world
    m = write_manifest(tmp_path, BODY)
    with router:
        report = run(m, clock)
    assert report.ok
    assert report.counts == {"downloaded": 4, "skipped": 0, "failed": 0}
    assert arxiv.api_calls == 1
    assert report.requests == 5  # one API request + one per file
    lib = tmp_path / "downloads"
    assert (lib / "1706.03762.pdf").read_bytes() == pdf_for("1706.03762v7")
    assert (lib / "1810.04805.pdf").read_bytes() == pdf_for("1810.04805v2")
    assert (lib / "gpt1.pdf").read_bytes() == pdf_for("gpt1")
    assert (lib / "moe-blog.html").read_bytes().startswith(b"<html>")

    lock = read_lock(tmp_path / "manifest.lock")
    assert lock["1706.03762"].version == 7
    assert lock["1706.03762"].url == "https://export.arxiv.org/pdf/1706.03762v7"
    assert lock["1706.03762"].sha256 == hashlib.sha256(pdf_for("1706.03762v7")).hexdigest()
    assert lock["gpt1"].version is None and lock["gpt1"].file == "gpt1.pdf"

    side = json.loads((lib / "1706.03762.json").read_text())
    assert side["title"] == "Paper 1706.03762"
    assert side["authors"] == ["Ada Lovelace", "Alan Turing"]
    assert side["version"] == 7 and side["categories"] == ["cs.CL"]
    assert side["sha256"] == lock["1706.03762"].sha256
    assert side["source_url"] == lock["1706.03762"].url
    assert "fetched_at" in side
    blog = json.loads((lib / "moe-blog.json").read_text())
    assert blog["content_type"] == "text/html" and blog["url"] == "https://blog.example/moe"

    by_key = {e.key: e for e in report.entries}
    assert by_key["1706.03762"].to_json() == {
        "key": "1706.03762",
        "kind": "arxiv",
        "status": "downloaded",
        "version": 7,
        "path": os.path.join("downloads", "1706.03762.pdf"),
        "sha256": lock["1706.03762"].sha256,
        "size": len(pdf_for("1706.03762v7")),
    }
    assert list((lib / ".fetcher" / "partial").iterdir()) == []


def test_warm_sync_makes_no_request_and_reports_skipped(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, _ = world
    m = write_manifest(tmp_path, BODY)
    with router:
        run(m, clock)
        calls = len(router.calls)
        report = run(m, clock)
        assert len(router.calls) == calls
    assert report.requests == 0
    assert report.counts == {"downloaded": 0, "skipped": 4, "failed": 0}
    assert report.to_json()["ok"] is True


def test_unchanged_files_are_not_rehashed(
    tmp_path: Path,
    clock: FakeClock,
    world: tuple[respx.MockRouter, Arxiv],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router, _ = world
    m = write_manifest(tmp_path, BODY)
    with router:
        run(m, clock)
    hashed: list[Path] = []
    import fetcher.library as library

    real = library.hash_file
    monkeypatch.setattr(library, "hash_file", lambda p: hashed.append(p) or real(p))
    with router:
        run(m, clock)
    assert hashed == []
    gpt1 = tmp_path / "downloads" / "gpt1.pdf"
    os.utime(gpt1, ns=(1, 1))  # mtime changed, content not: re-hash that one file only
    with router:
        report = run(m, clock)
    assert hashed == [gpt1]
    assert report.counts["skipped"] == 4


def test_damaged_and_missing_files_are_refetched_without_the_api(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, arxiv = world
    m = write_manifest(tmp_path, BODY)
    with router:
        run(m, clock)
        lib = tmp_path / "downloads"
        (lib / "1706.03762.pdf").write_bytes(b"%PDF-garbage")
        (lib / "1810.04805.pdf").unlink()
        report = run(m, clock)
    assert arxiv.api_calls == 1  # the lock knew both versions
    assert report.counts == {"downloaded": 2, "skipped": 2, "failed": 0}
    assert (lib / "1706.03762.pdf").read_bytes() == pdf_for("1706.03762v7")


def test_unknown_arxiv_id_fails_only_that_entry(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, _ = world
    m = write_manifest(tmp_path, BODY + '\n[[paper]]\narxiv = "2301.99999"\n')
    with router:
        report = run(m, clock)
    assert not report.ok
    failed = [e for e in report.entries if e.status == "failed"]
    assert [e.key for e in failed] == ["2301.99999"]
    assert failed[0].error is not None and "not found on arXiv" in failed[0].error
    assert report.counts == {"downloaded": 4, "skipped": 0, "failed": 1}
    assert "2301.99999" not in read_lock(tmp_path / "manifest.lock")


def test_lost_lock_is_rebuilt_from_sidecars_without_requests(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, _ = world
    m = write_manifest(tmp_path, BODY)
    with router:
        run(m, clock)
        before = read_lock(tmp_path / "manifest.lock")
        (tmp_path / "manifest.lock").unlink()
        calls = len(router.calls)
        report = run(m, clock)
        assert len(router.calls) == calls
    assert report.counts["skipped"] == 4
    assert read_lock(tmp_path / "manifest.lock") == before


def test_dry_run_touches_nothing(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, _ = world
    m = write_manifest(tmp_path, BODY)
    with router:
        report = run(m, clock, dry_run=True)
        assert len(router.calls) == 0
    assert {e.status for e in report.entries} == {"would-download"}
    assert not (tmp_path / "downloads").exists()
    assert not (tmp_path / "manifest.lock").exists()


def test_pinned_version_is_fetched_as_pinned(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, _ = world
    m = write_manifest(tmp_path, '[[paper]]\narxiv = "1706.03762v3"\n')
    with router:
        report = run(m, clock)
    assert report.entries[0].version == 3
    assert (tmp_path / "downloads" / "1706.03762.pdf").read_bytes() == pdf_for("1706.03762v3")


def test_arxiv_requests_are_spaced_by_the_interval(
    tmp_path: Path, clock: FakeClock, world: tuple[respx.MockRouter, Arxiv]
) -> None:
    router, _ = world
    m = write_manifest(tmp_path, BODY)
    with router:
        run(m, clock)
        arxiv_calls = [c for c in router.calls if c.request.url.host == "export.arxiv.org"]
    assert len(arxiv_calls) == 3
    # API then two PDFs: two waits of the full interval on the fake clock
    assert sorted(clock.sleeps).count(3.0) >= 2


def test_seed_manifest_loads_with_43_entries() -> None:
    m = manifest_mod.load(SEED_MANIFEST)
    kinds = [e.kind for e in m.entries]
    assert len(m.entries) == 43
    assert kinds.count("arxiv") == 40
    by_key = m.by_key()
    assert by_key["gpt1"].url == (
        "https://cdn.openai.com/research-covers/language-unsupervised/"
        "language_understanding_paper.pdf"
    )
    assert by_key["moe-blog"].format == "html"
    assert Library(m.library).root == SEED_MANIFEST.parent / "downloads"
