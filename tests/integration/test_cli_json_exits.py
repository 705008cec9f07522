"""--json keeps its promise on the real exits of a running sync: busy (75) and a SIGTERM
(130) still print one JSON document on stdout, beside their one line on stderr."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.fakeserver import FakeServer, Fault
from tests.integration.faultkit import Lib, new_lib, requests_to, wait_for


@pytest.fixture
def lib(tmp_path: Path, fake: FakeServer) -> Lib:
    return new_lib(tmp_path, fake)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("warning:")]


def test_busy_with_json_prints_the_error_document_and_exits_75(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", 200_000)
    lib.write()
    lib.fake.fault(path, Fault.trickle(0.05, chunk=10_000))
    first = lib.popen(env={"FETCHER_MIN_RATE": "0"})
    try:
        assert wait_for(lambda: bool(requests_to(lib.fake, path)))
        busy = lib.sync("--json", "--no-wait")
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert busy.returncode == 75, busy.stderr
    data = json.loads(busy.stdout)
    assert data["ok"] is False and data["exit"] == 75
    assert "another fetcher sync is running" in data["error"]
    (line,) = error_lines(busy.stderr)
    assert line == f"fetcher: error: {data['error']}"


def test_sigterm_with_json_prints_the_error_document_and_exits_130(lib: Lib) -> None:
    path = lib.add_arxiv("2101.00001", 1_000_000)
    lib.write()
    lib.fake.fault(path, Fault.trickle(0.02, chunk=20_000))
    proc = lib.popen("--json")
    part = lib.partial_dir / "2101.00001.pdf.part"
    assert wait_for(lambda: part.exists() and part.stat().st_size >= 100_000)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert json.loads(out) == {
        "ok": False,
        "error": "interrupted; partial downloads are kept and resume next time",
        "exit": 130,
    }
    assert error_lines(err) == [
        "fetcher: interrupted; partial downloads are kept and resume next time"
    ]
