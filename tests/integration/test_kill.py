"""A sync killed at any moment: never a partial or wrong file under a final name, and the
next sync resumes. SIGTERM (and Ctrl-C) stop cleanly, keep the partial and exit non-zero.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakeserver import FakeServer, Fault
from tests.integration.faultkit import Lib, new_lib, pdf_path, requests_to, wait_for

BIG = 1_000_000


@pytest.fixture
def lib(tmp_path: Path, fake: FakeServer) -> Lib:
    return new_lib(tmp_path, fake)


def partial_size(lib: Lib, name: str) -> int:
    part = lib.partial_dir / f"{name}.part"
    return part.stat().st_size if part.exists() else 0


def assert_library_sound(lib: Lib) -> None:
    """Whatever is under a final name is complete and right; state files parse."""
    for name in lib.final_files():
        path = lib.downloads / name
        if name.endswith(".json"):
            json.loads(path.read_text())
            continue
        key = name.rsplit(".", 1)[0]
        assert path.read_bytes() == lib.expected(key), f"{name} is not the served file"
    lock = lib.root / "manifest.lock"
    if lock.exists():
        json.loads(lock.read_text())


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[float, str]:
    started = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return time.monotonic() - started, err


def test_sigkill_mid_download_leaves_no_final_file_and_the_rerun_resumes(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", BIG)
    lib.write()
    lib.fake.fault(path, Fault.trickle(0.02, chunk=20_000))  # about a second
    proc = lib.popen()
    assert wait_for(lambda: partial_size(lib, "2101.00001.pdf") >= 200_000)
    stop(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert lib.stored("2101.00001") is None
    kept = partial_size(lib, "2101.00001.pdf")
    assert 200_000 <= kept < BIG
    note = json.loads((lib.partial_dir / "2101.00001.pdf.part.json").read_text())
    assert note["key"] == "2101.00001"

    lib.fake.reset_log()
    result = lib.sync()
    assert result.returncode == 0, result.stderr
    (resumed,) = requests_to(lib.fake, path)
    assert resumed.headers["range"] == f"bytes={kept}-" and resumed.status == 206
    assert lib.stored("2101.00001") == lib.expected("2101.00001")
    assert lib.partials() == []


def test_sigkill_at_any_moment_never_leaves_a_wrong_file(lib: Lib) -> None:
    keys = ["2101.00001", "2101.00002", "2101.00003"]
    for key in keys:
        lib.add_arxiv(key, 200_000)
    lib.add_web("web", 200_000)
    lib.write()
    for delay in (0.3, 0.45, 0.6, 0.75, 0.9):
        lib.fake.clear_faults()
        for path in [*map(pdf_path, keys), lib.web["web"][0]]:
            lib.fake.fault(path, Fault.trickle(0.01, chunk=25_000))
        proc = lib.popen()
        time.sleep(delay)
        stop(proc, signal.SIGKILL)
        assert_library_sound(lib)
    lib.fake.clear_faults()
    result = lib.sync()
    assert result.returncode == 0, result.stderr
    for key in [*keys, "web"]:
        assert lib.stored(key) == lib.expected(key)
    assert lib.partials() == []


def test_sigterm_stops_cleanly_keeps_the_partial_and_exits_non_zero(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", BIG)
    lib.add_web("done", 5000)
    lib.add_web("done2", 5000)
    lib.write()
    lib.fake.fault(path, Fault.trickle(0.02, chunk=20_000))
    proc = lib.popen()
    assert wait_for(lambda: partial_size(lib, "2101.00001.pdf") >= 200_000)
    assert wait_for(lambda: None not in (lib.stored("done"), lib.stored("done2")))
    took, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 130, err
    assert took < 2.0, took
    assert "interrupted; partial downloads are kept and resume next time" in err
    assert "Traceback" not in err
    assert lib.stored("2101.00001") is None
    kept = partial_size(lib, "2101.00001.pdf")
    assert kept >= 200_000
    lock = json.loads((lib.root / "manifest.lock").read_text())
    assert sorted(lock["entries"]) == ["done", "done2"]  # what was finished is locked

    lib.fake.reset_log()
    result = lib.sync()
    assert result.returncode == 0, result.stderr
    (rest,) = requests_to(lib.fake, path)  # only the rest of the paper
    assert rest.headers["range"] == f"bytes={kept}-"
    assert not requests_to(lib.fake, lib.web["done"][0])
    assert not requests_to(lib.fake, lib.web["done2"][0])
    assert lib.stored("2101.00001") == lib.expected("2101.00001")


def test_sigterm_during_a_stalled_read_stops_at_once(lib: Lib) -> None:
    """The server sent 60 kB and then nothing: the worker is blocked in a socket read that
    would last the whole read timeout (30 s here); SIGTERM must not wait for it."""
    path = lib.add_arxiv("2101.00001", BIG)
    lib.write()
    lib.fake.fault(path, Fault.trickle(30, chunk=60_000))
    proc = lib.popen(env={"FETCHER_READ_TIMEOUT": "30"})
    assert wait_for(lambda: partial_size(lib, "2101.00001.pdf") >= 60_000)
    time.sleep(0.2)  # now blocked in the read
    took, err = stop(proc, signal.SIGTERM)
    assert proc.returncode == 130, err
    assert took < 2.0, took
    assert partial_size(lib, "2101.00001.pdf") == 60_000
    assert lib.stored("2101.00001") is None


def test_sigterm_while_waiting_for_another_sync(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", BIG)
    lib.write()
    lib.fake.fault(path, Fault.trickle(0.05, chunk=20_000))
    first = lib.popen()
    assert wait_for(lambda: bool(requests_to(lib.fake, path)))
    second = lib.popen()
    assert wait_for(lambda: second.stderr is not None and second.poll() is None)
    time.sleep(0.5)  # waiting for the library
    took, err = stop(second, signal.SIGTERM)
    assert second.returncode == 130, err
    assert took < 2.0
    stop(first, signal.SIGKILL)
