"""Every fault of a real server, end to end: the real CLI against the loopback fake server.

Each test drives one fault into a `fetcher sync` subprocess and asserts what a user sees:
the exit code, the line about the entry, the bytes on disk (never a partial or wrong file
under a final name) and, from the server's request log, what fetcher asked for (retries,
`Range` + `If-Range` on resume, no retry for a permanent status).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Result, run_fetcher
from tests.fakeserver import FakeServer, Fault, make_pdf
from tests.integration.faultkit import (
    FAST_ENV,
    Lib,
    assert_polite,
    new_lib,
    report,
    requests_to,
)


def etag_of(data: bytes) -> str:
    """The ETag the fake server gives a body."""
    import hashlib

    return '"' + hashlib.sha256(data).hexdigest()[:24] + '"'


def ok(result: Result) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def failed_line(result: Result, key: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"FAILED     {key}:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def lib(tmp_path: Path, fake: FakeServer) -> Lib:
    return new_lib(tmp_path, fake)


# --- the fake server's own switches for these faults ------------------------------------


def test_fake_server_reset_rebuild_and_if_range_switches(fake: FakeServer) -> None:
    old, new = make_pdf("old", 5000), make_pdf("new", 6000)
    fake.add_file("/web/h/x.pdf", old)
    fake.fault("/web/h/x.pdf", Fault.reset())
    with httpx.Client(timeout=5) as client:
        with pytest.raises(httpx.ReadError):
            client.get(f"{fake.url}/web/h/x.pdf")
        fake.fault("/web/h/x.pdf", Fault.cut_then_rebuild(100, new))
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"{fake.url}/web/h/x.pdf")
        assert client.get(f"{fake.url}/web/h/x.pdf").content == new
        stale = {"Range": "bytes=10-", "If-Range": etag_of(old)}
        assert client.get(f"{fake.url}/web/h/x.pdf", headers=stale).status_code == 200
        fake.fault("/web/h/x.pdf", Fault.ignore_if_range())
        spliced = client.get(f"{fake.url}/web/h/x.pdf", headers=stale)
        assert spliced.status_code == 206 and spliced.content == new[10:]
    assert [r.fault for r in fake.requests] == [
        "reset",
        "cut_then_rebuild",
        None,
        None,
        "ignore_if_range",
    ]


# --- a body cut mid-stream: resume, never splice ---------------------------------------


def test_a_chunked_body_cut_mid_stream_resumes_with_range_and_if_range(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", 200_000)
    lib.write()
    lib.fake.fault(path, Fault.cut_after(70_000))
    ok(lib.sync())
    first, second = requests_to(lib.fake, path)
    assert first.fault == "cut_after" and "range" not in first.headers
    assert second.headers["range"] == "bytes=70000-"
    assert second.headers["if-range"] == etag_of(lib.expected("2101.00001"))
    assert second.status == 206
    assert lib.stored("2101.00001") == lib.expected("2101.00001")
    assert lib.partials() == []


def test_a_body_with_content_length_cut_mid_stream_resumes(lib: Lib) -> None:
    path = lib.add_web("paper", 150_000)
    lib.write()
    lib.fake.fault(path, Fault.cut_after(40_000), times=2)
    ok(lib.sync())
    ranges = [r.headers.get("range") for r in requests_to(lib.fake, path)]
    assert ranges == [None, "bytes=40000-", "bytes=80000-"]
    assert lib.stored("paper") == lib.expected("paper")


def test_a_200_answer_to_a_range_request_restarts_from_zero(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", 100_000)
    lib.write()
    lib.fake.fault(path, Fault.cut_after(30_000))
    lib.fake.fault(path, Fault.ignore_range())
    ok(lib.sync())
    log = requests_to(lib.fake, path)
    assert [(r.headers.get("range"), r.status) for r in log] == [(None, 200), ("bytes=30000-", 200)]
    assert lib.stored("2101.00001") == lib.expected("2101.00001")  # not 30 kB + 100 kB


def test_a_206_starting_elsewhere_is_never_spliced(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", 100_000)
    lib.write()
    lib.fake.fault(path, Fault.cut_after(30_000))
    lib.fake.fault(path, Fault.wrong_content_range(1000))
    result = lib.sync("-v")
    ok(result)
    assert "answered the resume request with another range ('bytes 1000-99999" in result.stderr
    log = requests_to(lib.fake, path)
    assert [(r.headers.get("range"), r.status) for r in log] == [
        (None, 200),
        ("bytes=30000-", 206),
        (None, 200),
    ]
    assert lib.stored("2101.00001") == lib.expected("2101.00001")


def test_a_pdf_rebuilt_between_attempts_is_fetched_whole(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", 100_000)
    lib.write()
    rebuilt = make_pdf("2101.00001v1 rebuilt", 120_000)
    lib.fake.fault(path, Fault.cut_then_rebuild(30_000, rebuilt))
    ok(lib.sync())
    log = requests_to(lib.fake, path)
    assert log[1].headers["if-range"] == etag_of(lib.expected("2101.00001"))
    assert log[1].status == 200  # If-Range did not match: the whole new file
    assert lib.stored("2101.00001") == rebuilt


def test_a_cache_that_ignores_if_range_cannot_splice_two_versions(lib: Lib) -> None:
    """A 206 of the rebuilt file after 30 kB of the old one: the ETag differs, restart."""
    path = lib.add_arxiv("2101.00001", 100_000)
    lib.write()
    rebuilt = make_pdf("2101.00001v1 rebuilt", 100_000)
    lib.fake.fault(path, Fault.cut_then_rebuild(30_000, rebuilt))
    lib.fake.fault(path, Fault.ignore_if_range())
    ok(lib.sync())
    log = requests_to(lib.fake, path)
    assert [(r.headers.get("range"), r.status) for r in log] == [
        (None, 200),
        ("bytes=30000-", 206),
        (None, 200),
    ]
    assert lib.stored("2101.00001") == rebuilt


# --- statuses and the network: retried or not -------------------------------------------


def test_5xx_and_429_are_retried_with_backoff(lib: Lib) -> None:
    codes = [500, 502, 503, 504, 429]
    for code in codes:
        path = lib.add_web(f"e{code}", 5000)
        lib.fake.fault(path, Fault.status(code), times=2)
    lib.write()
    ok(lib.sync())
    for code in codes:
        log = requests_to(lib.fake, lib.web[f"e{code}"][0])
        assert [r.status for r in log] == [code, code, 200]
        # backoff: at least half the initial backoff (0.05 s) between the answer and the retry
        assert all(b.start - a.end >= 0.025 for a, b in itertools.pairwise(log))  # type: ignore[operator]
        assert lib.stored(f"e{code}") == lib.expected(f"e{code}")


def test_resets_and_timeouts_are_retried(lib: Lib) -> None:
    reset = lib.add_web("reset", 5000)
    slow = lib.add_web("slow", 60_000)
    stall = lib.add_arxiv("2101.00001", 100_000)
    lib.write()
    lib.fake.fault(reset, Fault.reset(), times=2)
    lib.fake.fault(slow, Fault.delay(3))  # no answer within the read timeout
    lib.fake.fault(stall, Fault.trickle(3, chunk=40_000))  # 40 kB, then silence
    result = lib.sync("-v", env={"FETCHER_READ_TIMEOUT": "0.5"})
    ok(result)
    assert [r.fault for r in requests_to(lib.fake, reset)] == ["reset", "reset", None]
    assert [r.fault for r in requests_to(lib.fake, slow)] == ["delay", None]
    resumed = requests_to(lib.fake, stall)[1]
    assert resumed.headers["range"] == "bytes=40000-"
    assert "timed out" in result.stderr and "broke mid-response" in result.stderr
    for key in ("reset", "slow", "2101.00001"):
        assert lib.stored(key) == lib.expected(key)


def test_connection_refused_is_retried_then_the_entry_fails(lib: Lib) -> None:
    lib.add_arxiv("2101.00001")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lib.write()
    text = lib.manifest.read_text()
    text += f'\n[[paper]]\nurl = "http://localhost:{port}/gone.pdf"\nname = "gone"\n'
    lib.manifest.write_text(text)
    result = lib.sync("-v")
    assert result.returncode == 1
    assert "connection refused" in failed_line(result, "gone")
    retries = [line for line in result.stderr.splitlines() if line.startswith("retry gone:")]
    assert len(retries) == int(FAST_ENV["FETCHER_RETRY_ATTEMPTS"]) - 1
    assert lib.stored("2101.00001") == lib.expected("2101.00001")


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410])
def test_permanent_statuses_are_never_retried(lib: Lib, code: int) -> None:
    path = lib.add_web("bad", 5000)
    good = lib.add_arxiv("2101.00001")
    lib.write()
    lib.fake.fault(path, Fault.status(code), times=5)
    result = lib.sync()
    assert result.returncode == 1
    assert f"HTTP {code}" in failed_line(result, "bad")
    assert len(requests_to(lib.fake, path)) == 1
    assert lib.stored("bad") is None and lib.partials() == []
    assert len(requests_to(lib.fake, good)) == 1 and lib.stored("2101.00001") is not None


# --- slow servers: min rate, deadline -----------------------------------------------------


def test_a_trickle_fails_the_min_rate_and_the_retry_resumes(lib: Lib) -> None:
    path = lib.add_web("slow", 30_000)
    lib.write()
    lib.fake.fault(path, Fault.trickle(0.05, chunk=200))  # 4 kB/s
    env = {"FETCHER_MIN_RATE": "50000", "FETCHER_RATE_WINDOW": "0.4"}
    started = time.monotonic()
    result = lib.sync("-v", env=env)
    ok(result)
    assert time.monotonic() - started < 10
    assert "too slow" in result.stderr
    first, second = requests_to(lib.fake, path)
    assert first.fault == "trickle"
    offset = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 1000 <= offset < 30_000  # what trickled in was kept
    assert lib.stored("slow") == lib.expected("slow")


def test_the_per_file_deadline_stops_a_slow_body_and_the_next_run_resumes(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", 400_000)
    other = lib.add_web("other", 5000)
    lib.write()
    # 20 kB/s: fast enough for any min rate we set, 20 s for the file, so many attempts
    lib.fake.fault(path, Fault.trickle(0.05, chunk=1000), times=20)
    env = {"FETCHER_ENTRY_DEADLINE": "1.5", "FETCHER_MIN_RATE": "100"}
    started = time.monotonic()
    result = lib.sync("--json", env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 6, elapsed  # the deadline holds across attempts and backoff
    error = str(report(result)["2101.00001"]["error"])
    assert "per-file deadline" in error and "resumes next time" in error
    assert lib.stored("2101.00001") is None
    assert "2101.00001.pdf.part" in lib.partials()
    assert lib.stored("other") == lib.expected("other")
    assert len(requests_to(lib.fake, other)) == 1
    kept = (lib.partial_dir / "2101.00001.pdf.part").stat().st_size
    lib.fake.clear_faults()
    lib.fake.reset_log()
    ok(lib.sync())
    (resumed,) = requests_to(lib.fake, path)
    assert resumed.headers["range"] == f"bytes={kept}-" and resumed.status == 206
    assert lib.stored("2101.00001") == lib.expected("2101.00001")


# --- bodies that are wrong: fail, store nothing -------------------------------------------


def test_content_length_shorter_than_the_body_fails_and_stores_nothing(lib: Lib) -> None:
    path = lib.add_web("short", 20_000)
    lib.write()
    lib.fake.fault(path, Fault.content_length(-500))
    result = lib.sync()
    assert result.returncode == 1
    assert "truncated PDF" in failed_line(result, "short")
    assert len(requests_to(lib.fake, path)) == 1
    assert lib.final_files() == [] and lib.partials() == []


def test_content_length_longer_than_the_body_fails_and_stores_nothing(lib: Lib) -> None:
    path = lib.add_web("long", 20_000)
    lib.write()
    lib.fake.fault(path, Fault.content_length(+500), times=10)
    result = lib.sync()
    assert result.returncode == 1
    assert "gave up after 4 attempts" in failed_line(result, "long")
    assert [r.status for r in requests_to(lib.fake, path)] == [200, 416, 200, 416]
    assert lib.stored("long") is None
    assert lib.final_files() == []  # no file, no sidecar


def test_one_lying_content_length_is_overcome_by_a_restart(lib: Lib) -> None:
    """The body ended 500 bytes early by the header: the resume asks past the end (416),
    so the partial is dropped and the file fetched again, whole."""
    path = lib.add_web("long", 20_000)
    lib.write()
    lib.fake.fault(path, Fault.content_length(+500))
    ok(lib.sync())
    assert [r.status for r in requests_to(lib.fake, path)] == [200, 416, 200]
    assert lib.stored("long") == lib.expected("long")


def test_bodies_over_max_size_fail_and_store_nothing(lib: Lib) -> None:
    web = lib.add_web("big", 30_000)
    pdf = lib.add_arxiv("2101.00001", 30_000)  # chunked: refused mid-stream
    endless = lib.add_arxiv("2101.00002")
    lib.write(extra_settings="max_size = 25_000")
    lib.fake.fault(endless, Fault.endless(4096))
    result = lib.sync()
    assert result.returncode == 1
    assert "over max_size 25,000" in failed_line(result, "big")
    assert "more than max_size" in failed_line(result, "2101.00001")
    assert "more than max_size" in failed_line(result, "2101.00002")
    for path in (web, pdf, endless):
        assert len(requests_to(lib.fake, path)) == 1  # not retried
    assert lib.final_files() == [] and lib.partials() == []


def test_an_html_page_with_200_is_refused_and_not_retried(lib: Lib) -> None:
    path = lib.add_web("portal", 20_000)
    lib.write()
    lib.fake.fault(path, Fault.html_200(), times=3)
    result = lib.sync()
    assert result.returncode == 1
    assert "HTML page" in failed_line(result, "portal")
    assert len(requests_to(lib.fake, path)) == 1
    assert lib.final_files() == [] and lib.partials() == []


# --- the disk: full, or refusing -------------------------------------------------------------

# Runs the real CLI with one write made to fail the way a full disk or a read-only folder
# makes it fail; everything else (the network, the other entries) is untouched.
WRAPPER = r"""
import errno, os, sys
import fetcher.download as download

target, mode = os.environ["FAULT_TARGET"], os.environ["FAULT_MODE"]
real_open, real_replace = open, os.replace

class FillsUp:
    def __init__(self, fh):
        self.fh, self.n = fh, 0
    def write(self, data):
        self.n += len(data)
        if self.n > 8000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(data)
    def __getattr__(self, name):
        return getattr(self.fh, name)

def fake_open(path, mode_="r", *args, **kwargs):
    fh = real_open(path, mode_, *args, **kwargs)
    if mode == "enospc" and target in os.path.basename(str(path)) and "b" in mode_:
        return FillsUp(fh)
    return fh

def fake_replace(src, dst, *args, **kwargs):
    if mode == "eacces" and os.path.basename(str(dst)) == target:
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))
    return real_replace(src, dst, *args, **kwargs)

download.open = fake_open
download.os.replace = fake_replace
from fetcher.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_patched(lib: Lib, mode: str, target: str) -> Result:
    env = dict(os.environ)
    env.update(FAST_ENV)
    env.update(FAULT_MODE=mode, FAULT_TARGET=target)
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, "sync", "-m", str(lib.manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_disk_full_fails_that_entry_removes_its_partial_and_spares_the_rest(lib: Lib) -> None:
    for key in ("2101.00001", "2101.00002", "2101.00003"):
        lib.add_arxiv(key, 30_000)
    lib.add_web("other", 30_000)
    lib.write()
    result = run_patched(lib, "enospc", "2101.00002.pdf.part")
    assert result.returncode == 1, result.stderr
    line = failed_line(result, "2101.00002")
    assert "disk full while writing" in line and "free some space" in line
    assert lib.partials() == []
    assert lib.stored("2101.00002") is None
    for key in ("2101.00001", "2101.00003", "other"):
        assert lib.stored(key) == lib.expected(key)
    ok(lib.sync())  # space is back: the next sync completes the library
    assert lib.stored("2101.00002") == lib.expected("2101.00002")


def test_permission_denied_fails_that_entry_and_removes_its_partial(lib: Lib) -> None:
    lib.add_arxiv("2101.00001", 30_000)
    lib.add_web("locked", 30_000)
    lib.write()
    result = run_patched(lib, "eacces", "locked.pdf")
    assert result.returncode == 1, result.stderr
    assert "permission denied writing" in failed_line(result, "locked")
    assert lib.partials() == [] and lib.stored("locked") is None
    assert lib.stored("2101.00001") == lib.expected("2101.00001")


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "mounting a tmpfs needs root (CAP_SYS_ADMIN); the patched-write test covers ENOSPC"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs is Linux")
def test_a_really_full_disk_on_a_tiny_tmpfs(tmp_path: Path, fake: FakeServer) -> None:
    lib = Lib(tmp_path, fake)
    with tiny_tmpfs(tmp_path / "mnt", "320k"):
        for key in ("2101.00001", "2101.00002"):
            lib.add_arxiv(key, 40_000)
        lib.add_web("huge", 1_000_000)
        lib.write(extra_settings='library = "mnt"')
        small = run_fetcher(
            "sync", "-m", str(lib.manifest), "2101.00001", "2101.00002", env=FAST_ENV
        )
        ok(small)
        result = run_fetcher("sync", "-m", str(lib.manifest), env=FAST_ENV)
        assert result.returncode == 1, result.stderr
        assert "disk full while writing" in failed_line(result, "huge")
        library = tmp_path / "mnt"
        assert not (library / ".fetcher" / "partial" / "huge.pdf.part").exists()
        assert not (library / "huge.pdf").exists()
        for key in ("2101.00001", "2101.00002"):
            assert (library / f"{key}.pdf").read_bytes() == lib.expected(key)
            assert json.loads((library / f"{key}.json").read_text())["size"] == 40_000


# --- stale partials of dead processes ------------------------------------------------------


def _leave(
    lib: Lib, name: str, data: bytes, note: dict[str, object] | None, age: float = 0
) -> Path:
    lib.partial_dir.mkdir(parents=True, exist_ok=True)
    part = lib.partial_dir / f"{name}.part"
    part.write_bytes(data)
    if note is not None:
        (lib.partial_dir / f"{name}.part.json").write_text(json.dumps(note))
    if age:
        then = time.time() - age
        os.utime(part, (then, then))
    return part


def test_stale_partials_are_resumed_or_cleaned_never_taken_for_files(lib: Lib) -> None:
    live = lib.add_arxiv("2101.00001", 100_000)
    lib.add_arxiv("2101.00002", 50_000)
    lib.write()
    body = lib.expected("2101.00001")
    url = f"{lib.fake.url}{live}"
    note = {"url": url, "etag": etag_of(body), "last_modified": None, "key": "2101.00001"}
    _leave(lib, "2101.00001.pdf", body[:25_000], note)  # resumable
    _leave(lib, "2101.00002.pdf", b"%PDF-1.4 junk", None)  # no note: never resumable
    _leave(lib, "9912.00001.pdf", b"%PDF-1.4 old", {**note, "key": "9912.00001"})  # not ours
    _leave(lib, "ancient.pdf", b"%PDF", {**note, "key": "2101.00001"}, age=40 * 86400)
    (lib.partial_dir / "orphan.pdf.part.json").write_text("{}")
    tmp = lib.downloads / ".2101.00002.json.a1b2c3d4.tmp"
    tmp.write_text("{half a sidecar")
    os.utime(tmp, (time.time() - 7200, time.time() - 7200))
    lock_tmp = lib.root / ".manifest.lock.zz99yy88.tmp"
    lock_tmp.write_text("{")
    os.utime(lock_tmp, (time.time() - 7200, time.time() - 7200))

    ok(lib.sync())
    (resumed,) = requests_to(lib.fake, live)
    assert resumed.headers["range"] == "bytes=25000-" and resumed.status == 206
    assert [r.headers.get("range") for r in requests_to(lib.fake, "/pdf/2101.00002v1")] == [None]
    assert lib.stored("2101.00001") == body
    assert lib.stored("2101.00002") == lib.expected("2101.00002")
    assert lib.partials() == []
    assert not tmp.exists() and not lock_tmp.exists()
    assert lib.final_files() == sorted(
        ["2101.00001.pdf", "2101.00001.json", "2101.00002.pdf", "2101.00002.json"]
    )


def test_a_complete_partial_left_before_the_rename_is_not_a_dead_end(lib: Lib) -> None:
    """kill -9 between the last byte and the rename: the resume asks past the end (416);
    fetcher starts over instead of failing that entry on every later sync."""
    path = lib.add_arxiv("2101.00001", 50_000)
    lib.write()
    body = lib.expected("2101.00001")
    note = {"url": f"{lib.fake.url}{path}", "etag": etag_of(body), "key": "2101.00001"}
    _leave(lib, "2101.00001.pdf", body, note)
    ok(lib.sync())
    assert [r.status for r in requests_to(lib.fake, path)] == [416, 200]
    assert lib.stored("2101.00001") == body
    assert_polite(lib.fake)
