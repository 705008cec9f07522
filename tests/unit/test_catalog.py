"""The catalog: written by sync from the sidecars, complete, escaped, cheap when warm."""

from __future__ import annotations

import re
from pathlib import Path

from fetcher.catalog import INDEX_HTML, INDEX_MD, collect, render_html, render_markdown
from fetcher.http import Policy
from fetcher.manifest import Manifest, load
from fetcher.smoke import FakeClock, Mock
from fetcher.sync import Options, Report, Syncer

MANIFEST = """\
[[paper]]
arxiv = "1706.03762"
tags = ["transformers"]

[[paper]]
arxiv = "hep-th/9901001v2"
title = "Strings <script>alert(1)</script> & \\"quotes\\""
tags = ["physics", "transformers"]

[[paper]]
url = "https://cdn.openai.com/gpt1.pdf"
name = "gpt1"
title = "Improving Language Understanding by Generative Pre-Training"

[[paper]]
url = "https://huggingface.co/blog/moe"
name = "moe-blog"
format = "html"
title = "Mixture of Experts Explained"
"""


def sync(manifest: Manifest, **options: object) -> tuple[Report, int]:
    mock = Mock(manifest)
    report = Syncer(
        manifest,
        Options(**options),  # type: ignore[arg-type]
        clock=FakeClock(),
        policy=Policy(attempts=1, min_rate=0.0),
        transport=mock.transport,
    ).run()
    return report, mock.requests


def setup(tmp_path: Path, text: str = MANIFEST) -> Manifest:
    path = tmp_path / "manifest.toml"
    path.write_text(text, encoding="utf-8")
    return load(path)


def test_sync_writes_both_files_listing_every_paper(tmp_path: Path) -> None:
    manifest = setup(tmp_path)
    report, _ = sync(manifest)
    assert report.ok
    page = (manifest.library / INDEX_HTML).read_text(encoding="utf-8")
    articles = re.findall(r'<article class="paper" id="[^"]*" data-key="([^"]*)"', page)
    assert articles == ["1706.03762", "hep-th/9901001", "gpt1", "moe-blog"]
    assert '<a class="local" href="1706.03762.pdf">PDF</a>' in page
    assert '<a class="local" href="hep-th_9901001.pdf">PDF</a>' in page
    assert '<a class="local" href="moe-blog.html">page</a>' in page
    assert 'href="https://arxiv.org/abs/1706.03762v1">arXiv:1706.03762v1</a>' in page
    assert 'href="https://arxiv.org/abs/hep-th/9901001v2"' in page
    assert "<details><summary>Abstract</summary><p>Synthetic abstract of 1706.03762v1" in page
    assert "Ada Lovelace, Émilie du Châtelet, Alan Turing" in page
    assert '<span class="year">2017</span>' in page
    assert '<button type="button" class="tag" data-tag="transformers">transformers <small>2' in page
    md = (manifest.library / INDEX_MD).read_text(encoding="utf-8")
    assert md.count("\n## ") == 4
    assert "[PDF](hep-th_9901001.pdf) · [arXiv:hep-th/9901001v2]" in md
    assert "[page](moe-blog.html) · [source](<https://huggingface.co/blog/moe>)" in md


def test_the_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    manifest = setup(tmp_path)
    sync(manifest)
    page = (manifest.library / INDEX_HTML).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page
    assert "Strings &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert not re.search(r"<(script|img|iframe)[^>]+src=|<link[^>]+href=|@import|url\(", page)
    assert page.count("<script>") == 1
    md = (manifest.library / INDEX_MD).read_text(encoding="utf-8")
    assert '## Strings &lt;script&gt;alert(1)&lt;/script&gt; & "quotes"' in md


def test_a_warm_sync_leaves_the_catalog_alone(tmp_path: Path) -> None:
    manifest = setup(tmp_path)
    sync(manifest)
    index = manifest.library / INDEX_HTML
    stamp = index.stat().st_mtime_ns
    report, requests = sync(manifest)
    assert requests == 0
    assert report.counts["skipped"] == 4
    assert index.stat().st_mtime_ns == stamp


def test_an_edited_manifest_or_a_lost_file_rebuilds_it(tmp_path: Path) -> None:
    manifest = setup(tmp_path)
    sync(manifest)
    index = manifest.library / INDEX_HTML
    manifest.path.write_text(MANIFEST.replace('"physics"', '"strings"'), encoding="utf-8")
    manifest = load(manifest.path)
    sync(manifest)
    assert 'data-tag="strings"' in index.read_text(encoding="utf-8")
    (manifest.library / INDEX_MD).unlink()
    sync(manifest)
    assert (manifest.library / INDEX_MD).exists()


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    manifest = setup(tmp_path)
    sync(manifest, dry_run=True)
    assert not (manifest.library / INDEX_HTML).exists()


def test_entries_not_yet_downloaded_are_listed_as_such(tmp_path: Path) -> None:
    manifest = setup(tmp_path)
    items = collect(manifest)
    assert [i.present for i in items] == [False] * 4
    page = render_html(items)
    assert page.count("not in the library yet") == 4
    assert "not in the library yet (run `fetcher sync`)" in render_markdown(items)
    assert render_html(items) == page  # deterministic: no timestamps


def test_an_entry_named_index_does_not_lose_its_file(tmp_path: Path) -> None:
    text = '[[paper]]\nurl = "https://example.org/p"\nname = "index"\nformat = "html"\n'
    manifest = setup(tmp_path, text)
    report, _ = sync(manifest)
    snapshot = (manifest.library / "index.html").read_text(encoding="utf-8")
    assert "synthetic page served by fetcher smoke" in snapshot
    assert any("the catalog was not written" in w for w in report.warnings)
