"""A sync with nothing to do loads only what it uses: no HTTP stack, no thread pool, no
download or catalog code, no file-lock package, no hashlib (review finding F24)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.fakeserver import FakeServer, make_pdf
from tests.integration.inproc import World

NOT_ON_THE_WARM_PATH = (
    "concurrent.futures",
    "fetcher.download",
    "fetcher.catalog",
    "fetcher.http",
    "fetcher.arxiv_api",
    "filelock",
    "hashlib",
    "tempfile",
    "httpx",
)


def imported(stderr: str) -> set[str]:
    """Module names in `python -X importtime` output."""
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", stderr, re.M)}


def test_a_warm_sync_imports_nothing_it_does_not_use(tmp_path: Path, fake: FakeServer) -> None:
    world = World(tmp_path, fake)
    fake.add_arxiv("1706.03762", {1: make_pdf("a", 5_000)})
    fake.add_file("https://example.org/b.pdf", make_pdf("b", 5_000))
    world.write(
        '[[paper]]\narxiv = "1706.03762"\n\n'
        '[[paper]]\nurl = "https://example.org/b.pdf"\nname = "b"\n'
    )
    assert world.sync().ok
    fake.reset_log()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FETCHER_")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fetcher", "sync", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = imported(proc.stderr)
    assert "fetcher.sync" in modules  # the trace was read at all
    assert sorted(m for m in NOT_ON_THE_WARM_PATH if m in modules) == []
    assert fake.requests == []
