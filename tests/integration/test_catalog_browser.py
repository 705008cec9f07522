"""The catalog in a real headless browser (Chromium): it opens from file://, lists every
paper, and its search box filters (driven through the `#q=` fragment the page reads).

Skipped where no Chromium is installed (CI does not install one).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_fetcher
from tests.fakeserver import FakeServer

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium browser installed")
ARTICLE = re.compile(r'<article class="paper"[^>]*data-key="([^"]*)"[^>]*>')


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def visible(dom: str) -> list[str]:
    return [m.group(1) for m in ARTICLE.finditer(dom) if " hidden" not in m.group(0)]


def test_the_catalog_in_a_real_browser(
    seed_library: Path, fake: FakeServer, tmp_path: Path
) -> None:
    synced = run_fetcher("sync", "-m", str(seed_library))
    assert synced.returncode == 0, synced.stderr
    index = seed_library.parent / "downloads" / "index.html"

    dom = chromium(tmp_path, "--dump-dom", index.as_uri())
    assert len(ARTICLE.findall(dom)) == 43
    assert len(visible(dom)) == 43
    assert '<p id="count" aria-live="polite">43 of 43 papers</p>' in dom
    assert 'href="1706.03762.pdf"' in dom and 'href="moe-blog.html"' in dom

    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + "#q=MO%C3%89")  # "MOÉ"
    # case and accents are folded; "moe" is a tag of one paper and in the blog's URL
    assert sorted(visible(dom)) == ["1701.06538", "moe-blog"]
    assert "2 of 43 papers" in dom
    dom = chromium(tmp_path, "--dump-dom", index.as_uri() + "#q=zzz-nothing")
    assert visible(dom) == []
    assert '<p id="none">No paper matches the search.</p>' in dom
