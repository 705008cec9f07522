"""Helpers for the fault and politeness tests: small libraries on the fake server.

arXiv is served at `http://127.0.0.1:PORT` and every direct URL at `http://localhost:PORT`:
one server, but two hosts as fetcher sees them, so the arXiv gate and the other-hosts gate
are exercised separately (a 403 from arXiv must not stop the web entries).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Result, fetcher_command, run_fetcher
from tests.fakeserver import FakeServer, RequestRecord, make_pdf

INTERVAL = 0.02
ARXIV_PATHS = "/api/|/pdf/"

# Tiny patience for the CLI under test: the production backoff starts at 2 s.
FAST_ENV = {
    "FETCHER_BACKOFF": "0.05",
    "FETCHER_BACKOFF_MAX": "0.2",
    "FETCHER_RETRY_ATTEMPTS": "4",
    "FETCHER_READ_TIMEOUT": "5",
    "FETCHER_CONNECT_TIMEOUT": "5",
}


@dataclass
class Lib:
    """One manifest + library served by `fake`; entries are (key, path, bytes)."""

    root: Path
    fake: FakeServer
    arxiv: dict[str, bytes] = field(default_factory=dict)  # key -> bytes of v1
    web: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (path, bytes)
    settings: str = ""

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.toml"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def partial_dir(self) -> Path:
        return self.downloads / ".fetcher" / "partial"

    def add_arxiv(self, key: str, size: int = 20_000) -> str:
        """A paper with one version; returns the path of its PDF on the server."""
        body = make_pdf(f"{key}v1", size)
        self.fake.add_arxiv(key, {1: body})
        self.arxiv[key] = body
        return pdf_path(key)

    def add_web(
        self, name: str, size: int = 20_000, body: bytes | None = None, fmt: str = "pdf"
    ) -> str:
        """A direct URL on the `localhost` host; returns its path on the server."""
        path = f"/web/example.org/{name}.{'html' if fmt == 'html' else 'pdf'}"
        data = body if body is not None else make_pdf(name, size)
        ctype = "text/html; charset=utf-8" if fmt == "html" else "application/pdf"
        self.fake.add_file(path, data, ctype)
        self.web[name] = (path, data)
        return path

    def write(self, extra_settings: str = "", order: Sequence[str] | None = None) -> Path:
        lines = [
            "[settings]",
            f'arxiv_api = "{self.fake.url}/api/query"',
            f'arxiv_pdf = "{self.fake.url}/pdf/{{id}}"',
            f"arxiv_interval = {INTERVAL}",
            "host_interval = 0.0",
            'contact = "tests@example.org"',
            self.settings,
            extra_settings,
            "",
        ]
        keys = list(order) if order is not None else [*self.arxiv, *self.web]
        for key in keys:
            if key in self.arxiv:
                lines += ["[[paper]]", f'arxiv = "{key}"', ""]
            else:
                path, _ = self.web[key]
                fmt = "html" if path.endswith(".html") else "pdf"
                lines += [
                    "[[paper]]",
                    f'url = "http://localhost:{self.fake.port}{path}"',
                    f'name = "{key}"',
                    f'format = "{fmt}"',
                    "",
                ]
        self.manifest.write_text("\n".join(lines))
        return self.manifest

    def sync(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
        return run_fetcher(
            "sync",
            "-m",
            str(self.manifest),
            *args,
            env={**FAST_ENV, **(env or {})},
            timeout=timeout,
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """The CLI in the background (for kills and overlaps)."""
        full = dict(os.environ)
        full.update(FAST_ENV)
        full.update(env or {})
        return subprocess.Popen(
            [*fetcher_command(), "sync", "-m", str(self.manifest), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full,
        )

    def stored(self, key: str) -> bytes | None:
        suffix = ".html" if key in self.web and self.web[key][0].endswith(".html") else ".pdf"
        path = self.downloads / (key.replace("/", "_") + suffix)
        return path.read_bytes() if path.exists() else None

    def expected(self, key: str) -> bytes:
        return self.arxiv[key] if key in self.arxiv else self.web[key][1]

    def final_files(self) -> list[str]:
        """Names under the library root: papers and sidecars (state and indexes excluded)."""
        if not self.downloads.exists():
            return []
        return sorted(
            p.name
            for p in self.downloads.iterdir()
            if not p.name.startswith(".") and not p.name.startswith("index.")
        )

    def partials(self) -> list[str]:
        if not self.partial_dir.exists():
            return []
        return sorted(p.name for p in self.partial_dir.iterdir())


def pdf_path(key: str) -> str:
    return f"/pdf/{key}v1"


def new_lib(tmp_path: Path, fake: FakeServer) -> Lib:
    return Lib(tmp_path, fake)


def report(result: Result) -> dict[str, dict[str, object]]:
    """The --json report's entries by key."""
    data = json.loads(result.stdout)
    return {e["key"]: e for e in data["entries"]}


def requests_to(fake: FakeServer, path: str) -> list[RequestRecord]:
    return [r for r in fake.requests if r.path == path]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def assert_polite(fake: FakeServer, interval: float = INTERVAL) -> None:
    """arXiv saw one request at a time, starts at least `interval` apart (server clock)."""
    assert fake.max_concurrency(ARXIV_PATHS) <= 1, "two arXiv requests overlapped"
    gap = fake.min_gap(ARXIV_PATHS)
    assert gap is None or gap >= interval, f"arXiv requests {gap:.4f}s apart (< {interval})"
