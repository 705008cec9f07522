"""pytest plugin: prove a project's manifest and fetcher's pipeline offline, in its own tests.

Installed with fetcher and loaded by pytest automatically (entry point `pytest11`). It
provides one fixture, `fetcher_smoke`, that runs `fetcher smoke` on a manifest into the
test's temporary folder and fails the test, stage by stage, if anything is wrong:

    def test_manifest(fetcher_smoke):
        fetcher_smoke("manifest.toml")

No network and no real time: it takes about a second for fifty entries.

pytest loads this module in every run of every project where fetcher is installed, so it
imports nothing of fetcher (nor respx) at load time: only the fixture, when a test asks
for it, does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .smoke import SmokeReport

SmokeRunner = Callable[..., "SmokeReport"]


@pytest.fixture
def fetcher_smoke(tmp_path: Path) -> SmokeRunner:
    """Run the offline smoke kit on a manifest; fails the test unless every stage passes.

    Call it with the manifest's path (default `manifest.toml`, relative to the current
    folder). `check=False` returns the report without failing, to assert on it yourself.
    """
    count = 0

    def run(manifest: str | Path = "manifest.toml", *, check: bool = True) -> SmokeReport:
        from .errors import ManifestError
        from .manifest import load
        from .smoke import run as smoke_run

        nonlocal count
        count += 1
        try:
            loaded = load(manifest)
        except ManifestError as exc:
            pytest.fail(f"fetcher smoke: the manifest does not load: {exc}", pytrace=False)
        report = smoke_run(loaded, library=tmp_path / f"fetcher-smoke-{count}")
        if check and not report.ok:
            pytest.fail(report.describe(), pytrace=False)
        return report

    return run
