"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakeserver import FakeServer

REPO = Path(__file__).resolve().parent.parent
SEED_MANIFEST = REPO / "manifest.toml"
# Vendored from ../shared (tests/fixtures/README.md): the suite needs nothing outside the repo.
FIXTURES = REPO / "tests" / "fixtures" / "arxiv-api"
SEED_TEXT = REPO / "tests" / "fixtures" / "seed" / "000_128f63d8a68d8d29.txt"


class FakeClock:
    """Time that moves only when slept on: retries and spacing tested without waiting."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.sleeps.append(seconds)
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


def point_at(
    text: str,
    srv: FakeServer,
    *,
    arxiv_interval: float = 0.02,
    host_interval: float = 0.0,
    extra: str = "",
) -> str:
    """A manifest text with its endpoints and direct URLs moved to the fake server.

    arXiv is served as `srv.url` (127.0.0.1:PORT) and every direct URL as `srv.web_url`
    (localhost:PORT): one server, two hosts as fetcher sees them, so url entries run in the
    other-hosts lane and an arXiv request escaping the arXiv gate shows in the log.
    """
    settings = (
        f'arxiv_api = "{srv.url}/api/query"\n'
        f'arxiv_pdf = "{srv.url}/pdf/{{id}}"\n'
        f"arxiv_interval = {arxiv_interval}\n"
        f"host_interval = {host_interval}\n" + extra
    )
    if re.search(r"^\[settings\]", text, re.MULTILINE):
        text = re.sub(
            r"^\[settings\]\n", "[settings]\n" + settings, text, count=1, flags=re.MULTILINE
        )
    else:
        text = "[settings]\n" + settings + "\n" + text
    return re.sub(
        r'url = "(https?://[^"]+)"',
        lambda m: f'url = "{srv.rewrite_url(m.group(1), srv.web_url)}"',
        text,
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def fetcher_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m fetcher`."""
    script = Path(sys.executable).parent / "fetcher"
    if script.exists():
        return [str(script)]
    found = shutil.which("fetcher")
    return [found] if found else [sys.executable, "-m", "fetcher"]


def run_fetcher(
    *args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> Result:
    """Run the real CLI in a subprocess."""
    full_env = dict(os.environ)
    full_env.pop("FORCE_COLOR", None)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [*fetcher_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_fetcher


@pytest.fixture
def seed_library(tmp_path: Path, fake: FakeServer) -> Path:
    """The seed manifest, every entry served by the fake server; returns the manifest path."""
    fake.load_manifest(SEED_MANIFEST, pdf_size=20_000)
    path = tmp_path / "manifest.toml"
    path.write_text(point_at(SEED_MANIFEST.read_text(), fake))
    return path
