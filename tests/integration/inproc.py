"""In-process syncs against the loopback fake server: real HTTP, real files, no subprocess
(a CLI run costs a third of a second; these cost milliseconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fetcher
from fetcher.http import Policy
from fetcher.library import read_lock
from fetcher.manifest import load
from fetcher.sync import Options, Report
from tests.conftest import point_at
from tests.fakeserver import FakeServer

# one attempt: what must happen without a retry (a from-zero refetch) is seen to
ONE_SHOT = Policy(attempts=1, backoff_initial=0.01, backoff_max=0.01)


class World:
    """A manifest in `folder` served by the fake server; syncs run in-process."""

    def __init__(self, folder: Path, fake: FakeServer, name: str = "manifest.toml"):
        self.dir = folder
        self.fake = fake
        self.path = folder / name
        self.lib = folder / "downloads"

    def write(self, body: str) -> None:
        self.path.write_text(point_at(body, self.fake))

    def sync(self, policy: Policy = ONE_SHOT, **options: Any) -> Report:
        return fetcher.sync(load(self.path), Options(**options), policy=policy)

    def verify(self) -> list[fetcher.Problem]:
        return fetcher.verify(load(self.path))

    def lock(self) -> dict[str, Any]:
        records = read_lock(load(self.path).lock_path)
        return {k: r.to_json() for k, r in records.items()}

    def paths(self, prefix: str = "/") -> list[str]:
        return [r.path for r in self.fake.requests if r.path.startswith(prefix)]

    def files(self) -> list[str]:
        return sorted(p.name for p in self.lib.iterdir() if not p.name.startswith("."))

    def partial(self, name: str) -> Path:
        return self.lib / ".fetcher" / "partial" / (name + ".part")
