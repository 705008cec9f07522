"""Faults on a fake clock: slow bodies, deadlines, Retry-After, a full disk, stale partials.

No test here waits for real: bodies arrive on the `FakeClock` (each chunk advances it),
retries sleep on it, and the disk fails through a patched write.
"""

from __future__ import annotations

import email.utils
import errno
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import fetcher.download as download_mod
from fetcher.download import Downloader, commit
from fetcher.errors import RetryLater, StorageError, TransientError, UsageError
from fetcher.http import Gate, Http, Policy, retrying
from fetcher.partial import boot_id, clean_partials
from tests.conftest import FakeClock

URL = "https://cdn.example/paper.pdf"
ARXIV_PDF = "https://export.arxiv.org/pdf/2101.00001v1"
PDF = b"%PDF-1.5\n" + bytes(range(256)) * 400 + b"\n%%EOF\n"  # 102 416 bytes
ETAG = '"v1"'


class Trickle(httpx.SyncByteStream):
    """A body that arrives `chunk` bytes at a time, `every` seconds of the fake clock apart;
    optionally the connection breaks after `cut` bytes."""

    def __init__(
        self, clock: FakeClock, data: bytes, chunk: int, every: float, cut: int | None = None
    ):
        self.clock, self.data, self.chunk, self.every, self.cut = clock, data, chunk, every, cut

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), self.chunk):
            if self.cut is not None and i >= self.cut:
                raise httpx.ReadError("connection reset")
            if i:
                self.clock.sleep(self.every)
            yield self.data[i : i + self.chunk]


def make_http(clock: FakeClock, state_dir: Path | None = None, **policy: Any) -> Http:
    return Http(
        arxiv_hosts=frozenset({"export.arxiv.org"}),
        arxiv_interval=3.0,
        host_interval=0.0,
        clock=clock,
        state_dir=state_dir,
        policy=Policy(**policy),
    )


def make_downloader(tmp_path: Path, clock: FakeClock, **policy: Any) -> Downloader:
    http = make_http(clock, **policy)
    return Downloader(http, tmp_path / ".fetcher" / "partial", http.policy, clock)


def fetch(d: Downloader, deadline: float | None = None, url: str = URL) -> Any:
    return d.fetch(url, "paper.pdf", expect="pdf", max_size=10**7, key="k", deadline=deadline)


# --- slow bodies: the min-rate rule and the deadline ---------------------------------------


@respx.mock
def test_one_byte_a_minute_fails_the_min_rate_rule(tmp_path: Path, clock: FakeClock) -> None:
    """Each read returns before any read timeout; only the rate rule can stop it."""
    d = make_downloader(tmp_path, clock, min_rate=2048, rate_window=30)
    respx.get(URL).mock(
        return_value=httpx.Response(
            200, stream=Trickle(clock, PDF, 1, 59.0), headers={"ETag": ETAG}
        )
    )
    start = clock.time()
    with pytest.raises(TransientError, match="too slow"):
        fetch(d)
    assert clock.time() - start == 59.0  # the second byte, not the 30-minute deadline
    part, note = d.paths("paper.pdf")
    assert part.read_bytes() == PDF[:2] and note.exists()  # kept for a resume


@respx.mock
def test_a_slow_but_steady_body_passes(tmp_path: Path, clock: FakeClock) -> None:
    d = make_downloader(tmp_path, clock, min_rate=2048, rate_window=30)
    respx.get(URL).mock(return_value=httpx.Response(200, stream=Trickle(clock, PDF, 2500, 1.0)))
    fetched = fetch(d)  # 2.5 kB/s for 40 s
    assert fetched.partial.read_bytes() == PDF


@respx.mock
def test_a_body_that_stalls_halfway_fails_within_one_window(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = make_downloader(tmp_path, clock, min_rate=2048, rate_window=30)

    class SlowsDown(Trickle):
        def __iter__(self) -> Iterator[bytes]:
            yield PDF[:60_000]  # fast
            for i in range(60_000, len(PDF), 100):
                self.clock.sleep(1.0)  # then 100 B/s
                yield PDF[i : i + 100]

    respx.get(URL).mock(return_value=httpx.Response(200, stream=SlowsDown(clock, PDF, 0, 0)))
    start = clock.time()
    with pytest.raises(TransientError, match="too slow"):
        fetch(d)
    # 60 kB at once lifts the average until it falls out of the window: 30 s, then 1 more
    assert 30 <= clock.time() - start <= 31


@respx.mock
def test_the_entry_deadline_holds_across_attempts_and_backoff(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Every attempt breaks after 30 s of a body that would need 100 s: resumes, until the
    deadline (120 s), which no attempt, backoff or read overruns by more than a chunk."""
    policy = {"min_rate": 100, "rate_window": 30, "entry_deadline": 120, "attempts": 50}
    d = make_downloader(tmp_path, clock, **policy)
    calls: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(clock.time())
        start = int((request.headers.get("range") or "bytes=0-")[6:-1])
        body = Trickle(clock, PDF[start:], 1024, 2.0, cut=15 * 1024)  # 512 B/s
        headers = {"ETag": ETAG}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(PDF) - 1}/{len(PDF)}"
        return httpx.Response(206 if start else 200, stream=body, headers=headers)

    respx.get(URL).mock(side_effect=answer)
    begin = clock.time()
    deadline = begin + 120
    with pytest.raises(TransientError, match="per-file deadline") as info:
        retrying(
            lambda: fetch(d, deadline=deadline),
            policy=d.policy,
            clock=clock,
            rng=random.Random(0),
            deadline=deadline,
        )
    assert len(calls) >= 3  # it did resume
    assert clock.time() - begin <= 120 + 2.0  # at most one chunk (2 s) past the deadline
    assert "gave up after" in str(info.value)


@respx.mock
def test_a_retry_after_beyond_the_time_left_is_not_waited_for(clock: FakeClock) -> None:
    http = make_http(clock)
    respx.get(URL).mock(return_value=httpx.Response(503, headers={"Retry-After": "500"}))
    with pytest.raises(TransientError, match="gave up after 1 attempts|HTTP 503"):
        retrying(
            lambda: http.get(URL),
            policy=http.policy,
            clock=clock,
            deadline=clock.time() + 100,
        )
    assert 500 not in clock.sleeps and clock.sleeps == []


# --- Retry-After: the cap, the host, other processes ----------------------------------------


@respx.mock
def test_retry_after_up_to_the_cap_is_waited_beyond_it_fails_saying_when(
    clock: FakeClock,
) -> None:
    http = make_http(clock)

    def later(request: httpx.Request) -> httpx.Response:
        when = email.utils.formatdate(clock.time() + 700, usegmt=True)
        return httpx.Response(503, headers={"Retry-After": when})

    respx.get("https://h.example/600").mock(
        return_value=httpx.Response(503, headers={"Retry-After": "600"})
    )
    respx.get("https://h.example/601").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "601"})
    )
    respx.get("https://d.example/date").mock(side_effect=later)  # h.example closes at 601
    with pytest.raises(TransientError) as within:
        http.get("https://h.example/600")
    assert within.value.retry_after == 600
    with pytest.raises(RetryLater, match=r"asks to wait 601s \(more than 600s\); try again after"):
        http.get("https://h.example/601")
    assert clock.sleeps == [600]  # the host's pause held for the next request too
    with pytest.raises(RetryLater, match="asks to wait 700s.*try again after 2023-11-14 22:35 UTC"):
        http.get("https://d.example/date")


@respx.mock
def test_retry_after_pauses_the_whole_host_not_only_the_entry(clock: FakeClock) -> None:
    http = make_http(clock)
    seen: dict[str, float] = {}
    respx.get("https://h.example/a").mock(
        return_value=httpx.Response(503, headers={"Retry-After": "120"})
    )

    def b(request: httpx.Request) -> httpx.Response:
        seen["b"] = clock.time()
        return httpx.Response(200, content=b"ok")

    respx.get("https://h.example/b").mock(side_effect=b)
    start = clock.time()
    with pytest.raises(TransientError):
        http.get("https://h.example/a")
    http.get("https://h.example/b")
    assert seen["b"] - start >= 120


@respx.mock
def test_retry_after_from_arxiv_holds_for_another_process(clock: FakeClock, tmp_path: Path) -> None:
    first, second = make_http(clock, tmp_path), make_http(clock, tmp_path)
    respx.get(ARXIV_PDF).mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "60"}),
            httpx.Response(200, content=b"%PDF-"),
        ]
    )
    start = clock.time()
    with pytest.raises(TransientError):
        first.get(ARXIV_PDF)
    second.get(ARXIV_PDF)
    assert clock.time() - start >= 60


@respx.mock
def test_arxiv_asking_for_a_pause_beyond_the_cap_stops_its_traffic(clock: FakeClock) -> None:
    http = make_http(clock)
    route = respx.get(url__startswith="https://export.arxiv.org/").mock(
        return_value=httpx.Response(503, headers={"Retry-After": "7200"})
    )
    other = respx.get(URL).mock(return_value=httpx.Response(200, content=b"%PDF-"))
    with pytest.raises(RetryLater) as first:
        http.get(ARXIV_PDF)
    with pytest.raises(RetryLater) as second:
        http.get("https://export.arxiv.org/pdf/2101.00002v1")
    assert str(second.value) == str(first.value)
    assert "no more arXiv requests in this run" in str(first.value)
    assert route.call_count == 1
    assert http.get(URL).status_code == 200 and other.call_count == 1


def test_a_gate_state_from_the_far_future_is_ignored(clock: FakeClock, tmp_path: Path) -> None:
    """A clock set back, a damaged file: the gate must not wait for days."""
    state = tmp_path / "arxiv.gate"
    state.write_text(f"{clock.time() + 86_400:.6f}\n")
    gate = Gate("arXiv", 3.0, clock, state_file=state, max_defer=600)
    with gate.slot():
        pass
    assert clock.sleeps == []


def test_a_gate_waits_without_holding_the_shared_lock(clock: FakeClock, tmp_path: Path) -> None:
    """While one process waits its turn, another can read the state (no starvation)."""
    state = tmp_path / "arxiv.gate"
    first = Gate("arXiv", 3.0, clock, state_file=state)
    second = Gate("arXiv", 3.0, clock, state_file=state)
    with first.slot():
        pass
    peeked: list[float] = []
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        if seconds > 0.1:  # the spacing wait: the file must be free now
            import fcntl

            with open(state) as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if held
                peeked.append(float(fh.read()))
        real_sleep(seconds)

    clock.sleep = sleep  # type: ignore[method-assign]
    with second.slot():
        pass
    assert peeked and clock.sleeps == [3.0]


# --- the disk: full, refusing --------------------------------------------------------------


class FillsUp:
    """A file whose writes fail with ENOSPC after `room` bytes."""

    def __init__(self, fh: Any, room: int):
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(self.fh.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


@respx.mock
def test_disk_full_mid_body_fails_removes_the_partial_and_nothing_else(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_downloader(tmp_path, clock)
    d.partial_dir.mkdir(parents=True)
    other = d.partial_dir / "other.pdf.part"
    other.write_bytes(b"%PDF- another entry's partial")
    keep = tmp_path / "kept.pdf"
    keep.write_bytes(b"%PDF- a finished file")
    real_open = open

    def small_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(path, mode, *args, **kwargs)
        return FillsUp(fh, 50_000) if str(path).endswith("paper.pdf.part") else fh

    monkeypatch.setattr(download_mod, "open", small_disk, raising=False)
    respx.get(URL).mock(return_value=httpx.Response(200, stream=Trickle(clock, PDF, 10_000, 0.01)))
    with pytest.raises(StorageError, match="disk full while writing .*paper.pdf.part"):
        fetch(d)
    assert sorted(p.name for p in d.partial_dir.iterdir()) == ["other.pdf.part"]
    assert keep.read_bytes() == b"%PDF- a finished file"


@respx.mock
def test_disk_full_at_the_flush_to_disk_also_removes_the_partial(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_downloader(tmp_path, clock)
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF, headers={"ETag": ETAG}))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_mod.os, "fsync", full)
    with pytest.raises(StorageError, match="disk full"):
        fetch(d)
    assert list(d.partial_dir.iterdir()) == []


@respx.mock
def test_disk_full_writing_the_resume_note_leaves_nothing(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_downloader(tmp_path, clock)
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF, headers={"ETag": ETAG}))

    def full(path: Path, note: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_mod, "write_note", full)
    with pytest.raises(StorageError, match="disk full"):
        fetch(d)
    assert list(d.partial_dir.iterdir()) == []


@respx.mock
def test_permission_denied_at_the_rename_removes_the_partial(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_downloader(tmp_path, clock)
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF))
    fetched = fetch(d)

    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(download_mod.os, "replace", refuse)
    dest = tmp_path / "paper.pdf"
    with pytest.raises(StorageError, match="permission denied writing .*paper.pdf"):
        commit(fetched, dest)
    assert not dest.exists() and list(d.partial_dir.iterdir()) == []


# --- resume corner cases ----------------------------------------------------------------------


def _leave(d: Downloader, data: bytes, **note: Any) -> None:
    part, note_path = d.paths("paper.pdf")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    note_path.write_text(json.dumps({"url": URL, "etag": ETAG, "last_modified": None, **note}))


@respx.mock
def test_a_416_to_a_resume_drops_the_partial_and_the_retry_starts_over(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = make_downloader(tmp_path, clock)
    _leave(d, PDF)  # complete: killed between the last byte and the rename
    route = respx.get(URL).mock(
        side_effect=[
            httpx.Response(416, headers={"Content-Range": f"bytes */{len(PDF)}"}),
            httpx.Response(200, content=PDF, headers={"ETag": ETAG}),
        ]
    )
    fetched = retrying(lambda: fetch(d), policy=d.policy, clock=clock)
    assert fetched.partial.read_bytes() == PDF and fetched.resumed_from == 0
    assert route.calls[0].request.headers["range"] == f"bytes={len(PDF)}-"
    assert "range" not in route.calls[1].request.headers


@respx.mock
def test_if_range_uses_last_modified_when_there_is_no_strong_etag(
    tmp_path: Path, clock: FakeClock
) -> None:
    d = make_downloader(tmp_path, clock)
    stamp = "Tue, 14 Nov 2023 22:13:20 GMT"
    _leave(d, PDF[:1000], etag='W/"weak"', last_modified=stamp)
    route = respx.get(URL).mock(
        return_value=httpx.Response(
            206,
            content=PDF[1000:],
            headers={
                "ETag": 'W/"weak"',
                "Last-Modified": stamp,
                "Content-Range": f"bytes 1000-{len(PDF) - 1}/{len(PDF)}",
            },
        )
    )
    fetched = fetch(d)
    assert route.calls[0].request.headers["if-range"] == stamp
    assert fetched.resumed_from == 1000 and fetched.partial.read_bytes() == PDF


@respx.mock
def test_a_206_of_a_file_of_another_size_is_never_spliced(tmp_path: Path, clock: FakeClock) -> None:
    d = make_downloader(tmp_path, clock)
    _leave(d, PDF[:1000], etag=None, last_modified=None, total=len(PDF) + 10)
    _, note_path = d.paths("paper.pdf")
    note_path.write_text(
        json.dumps({"url": URL, "etag": None, "last_modified": "x", "total": len(PDF) + 10})
    )
    respx.get(URL).mock(
        return_value=httpx.Response(
            206,
            content=PDF[1000:],
            headers={"Content-Range": f"bytes 1000-{len(PDF) - 1}/{len(PDF)}"},
        )
    )
    with pytest.raises(TransientError, match="another range"):
        fetch(d)
    assert not d.paths("paper.pdf")[0].exists()


@respx.mock
def test_the_note_records_the_entry_and_the_size(tmp_path: Path, clock: FakeClock) -> None:
    d = make_downloader(tmp_path, clock)
    respx.get(URL).mock(
        return_value=httpx.Response(
            200,
            stream=Trickle(clock, PDF, 1000, 0.0, cut=5000),
            headers={"ETag": ETAG, "Content-Length": str(len(PDF))},
        )
    )
    with pytest.raises(TransientError):
        fetch(d)
    note = json.loads(d.paths("paper.pdf")[1].read_text())
    assert note == {
        "url": URL,
        "etag": ETAG,
        "last_modified": None,
        "key": "k",
        "total": len(PDF),
        "durable": 5000,  # fsynced when the connection broke
        "boot": boot_id(),
    }


# --- stale partials ---------------------------------------------------------------------------


def test_clean_partials_keeps_what_can_resume_and_removes_the_rest(tmp_path: Path) -> None:
    partial = tmp_path / ".fetcher" / "partial"
    partial.mkdir(parents=True)
    now = 1_800_000_000.0

    def leave(name: str, note: dict[str, Any] | None, age: float = 60) -> None:
        (partial / f"{name}.part").write_bytes(b"%PDF-")
        os.utime(partial / f"{name}.part", (now - age, now - age))
        if note is not None:
            (partial / f"{name}.part.json").write_text(json.dumps({"url": URL, **note}))

    leave("live.pdf", {"key": "live"})
    leave("legacy.pdf", {})  # a note from before keys were written: kept while young
    leave("gone.pdf", {"key": "gone"})
    leave("nonote.pdf", None)
    leave("old.pdf", {"key": "live"}, age=30 * 86400)
    (partial / "lonely.pdf.part.json").write_text("{}")
    (partial / "broken.pdf.part").write_bytes(b"x")
    (partial / "broken.pdf.part.json").write_text("{not json")
    library = tmp_path
    tmps = {
        ".live.json.abcd1234.tmp": now - 7200,  # an interrupted atomic write: old
        ".live.json.wxyz9876.tmp": now - 10,  # maybe being written right now: kept
        ".notes.tmp": now - 7200,  # not a name fetcher makes: kept
        ".manifest.lock.q1w2e3r4.tmp": now - 7200,
    }
    for name, when in tmps.items():
        (library / name).write_text("{")
        os.utime(library / name, (when, when))

    removed = clean_partials(
        partial, {"live", "legacy"}, now, temps=[(library, "")], max_age=14 * 86400
    )
    left = sorted(p.name for p in partial.iterdir())
    assert left == [
        "legacy.pdf.part",
        "legacy.pdf.part.json",
        "live.pdf.part",
        "live.pdf.part.json",
    ]
    assert sorted(p.name for p in library.iterdir() if p.name.endswith(".tmp")) == [
        ".live.json.wxyz9876.tmp",
        ".notes.tmp",
    ]
    assert len(removed) == 10


def test_clean_partials_limits_temp_files_to_their_prefix(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    for name in (".manifest.lock.q1w2e3r4.tmp", ".reading-list.md.q1w2e3r4.tmp"):
        (tmp_path / name).write_text("{")
        os.utime(tmp_path / name, (now - 7200, now - 7200))
    clean_partials(tmp_path / "none", set(), now, temps=[(tmp_path, "manifest.lock")])
    assert [p.name for p in tmp_path.iterdir()] == [".reading-list.md.q1w2e3r4.tmp"]


# --- the tuning knobs -------------------------------------------------------------------------


def test_policy_from_the_environment() -> None:
    policy = Policy.from_env(
        {
            "FETCHER_RETRY_ATTEMPTS": "2",
            "FETCHER_BACKOFF": "0.05",
            "FETCHER_MIN_RATE": "0",
            "FETCHER_ENTRY_DEADLINE": " 90 ",
            "FETCHER_READ_TIMEOUT": "",
            "UNRELATED": "x",
        }
    )
    assert (policy.attempts, policy.backoff_initial, policy.min_rate) == (2, 0.05, 0.0)
    assert policy.entry_deadline == 90.0 and policy.read_timeout == Policy().read_timeout
    assert Policy.from_env({}) == Policy()


@pytest.mark.parametrize(
    "var, value",
    [
        ("FETCHER_RETRY_ATTEMPTS", "0"),
        ("FETCHER_RETRY_ATTEMPTS", "2.5"),
        ("FETCHER_BACKOFF", "-1"),
        ("FETCHER_READ_TIMEOUT", "0"),
        ("FETCHER_MIN_RATE", "fast"),
        ("FETCHER_ENTRY_DEADLINE", "inf"),
    ],
)
def test_a_bad_tuning_knob_is_a_usage_error_naming_it(var: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"{var}='{value}' is not valid"):
        Policy.from_env({var: value})
