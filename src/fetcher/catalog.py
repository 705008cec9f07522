"""The library's catalog: `index.md` and `index.html`, rebuilt from the sidecars.

Every manifest entry appears, in manifest order, with what the sidecar knows (title,
authors, year, abstract), its tags, a link to the local file and one to arXiv or the
source. The HTML page is one self-contained file (inline CSS and script, no external
asset) that works from file:// and filters as you type. Output is deterministic (no
timestamps), so an unchanged library yields byte-identical files.
"""

from __future__ import annotations

import html
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import __version__
from .library import (
    INDEX_HTML,
    INDEX_MD,
    Library,
    LockRecord,
    atomic_write_bytes,
    catalog_is_fresh,
    read_lock,
)
from .manifest import Entry, Manifest
from .plan import entry_file

__all__ = ["INDEX_HTML", "INDEX_MD", "Item", "collect", "is_fresh", "refresh", "write"]

SHOWN_AUTHORS = 10
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Item:
    """One entry as the catalog and the bibliography see it."""

    entry: Entry
    file: str | None  # library file name; None before the first sync
    present: bool
    meta: Mapping[str, Any]  # the sidecar, empty before the first sync
    title: str
    authors: tuple[str, ...]
    year: str

    @property
    def key(self) -> str:
        return self.entry.key

    @property
    def tags(self) -> tuple[str, ...]:
        return self.entry.tags or tuple(self.meta.get("tags") or ())

    @property
    def abstract(self) -> str:
        return str(self.meta.get("abstract") or "")

    @property
    def versioned_id(self) -> str | None:
        if self.entry.kind != "arxiv":
            return None
        version = self.meta.get("version")
        return f"{self.entry.key}v{version}" if version else str(self.entry.arxiv)

    @property
    def link(self) -> str:
        """The paper's public page: its arXiv abstract page, or the URL it came from."""
        if self.entry.kind == "arxiv":
            return f"https://arxiv.org/abs/{self.versioned_id}"
        return str(self.entry.url)


def _html_title(path: Path) -> str | None:
    """The `<title>` of a stored web page (first 64 kB only)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    m = _TITLE_RE.search(head)
    if not m:
        return None
    title = " ".join(html.unescape(m.group(1).decode("utf-8", "replace")).split())
    return title or None


def collect(manifest: Manifest, records: Mapping[str, LockRecord] | None = None) -> list[Item]:
    """Every manifest entry with its library file and sidecar, in manifest order."""
    library = Library(manifest.library)
    if records is None:
        records = read_lock(manifest.lock_path)
    items = []
    for entry in manifest.entries:
        file = entry_file(entry, records.get(entry.key), manifest.settings.filename)
        meta: Mapping[str, Any] = {}
        present = False
        if file is not None:
            meta = library.read_sidecar(file) or {}
            if meta.get("key") not in (None, entry.key):
                meta = {}
            present = library.is_safe_file(file)
        title = str(meta.get("title") or entry.title or "")
        if not title and present and file is not None and entry.format == "html":
            title = _html_title(library.path_of(file)) or ""
        year = str(meta.get("published") or "")[:4]
        authors = tuple(str(a) for a in meta.get("authors") or ())
        items.append(Item(entry, file, present, meta, title or entry.key, authors, year))
    return items


# --- search text -----------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower case without accents: what the search box compares (the page does the same)."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _haystack(item: Item) -> str:
    parts = [item.title, " ".join(item.authors), item.year, " ".join(item.tags), item.key]
    parts += [item.versioned_id or "", item.abstract, item.entry.url or ""]
    return fold(" ".join(p for p in parts if p))


def _authors_short(authors: Sequence[str]) -> str:
    if len(authors) <= SHOWN_AUTHORS:
        return ", ".join(authors)
    return ", ".join(authors[:SHOWN_AUTHORS]) + f", et al. ({len(authors)} authors)"


def _tag_counts(items: Sequence[Item]) -> list[tuple[str, int]]:
    counts = Counter(t for item in items for t in item.tags)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


# --- Markdown --------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#|!])")


def _md(text: str) -> str:
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _md_href(file: str) -> str:
    return quote(file)


def render_markdown(items: Sequence[Item], manifest_name: str = "manifest.toml") -> str:
    present = sum(1 for i in items if i.present)
    lines = [
        "# Library",
        "",
        f"{len(items)} papers ({present} in the library) from `{manifest_name}`, "
        f"catalogued by fetcher. Open [index.html]({INDEX_HTML}) to search them.",
        "",
    ]
    tags = _tag_counts(items)
    if tags:
        lines += ["Tags: " + " · ".join(f"`{_md(t)}` ({n})" for t, n in tags), ""]
    for item in items:
        lines.append(f"## {_md(item.title)}")
        lines.append("")
        facts = []
        if item.authors:
            facts.append(_md(_authors_short(item.authors)))
        if item.year:
            facts.append(item.year)
        if item.tags:
            facts.append("tags: " + ", ".join(f"`{_md(t)}`" for t in item.tags))
        if facts:
            lines.append(" · ".join(facts) + "  ")
        links = []
        if item.present and item.file:
            kind = "page" if item.entry.format == "html" else "PDF"
            links.append(f"[{kind}]({_md_href(item.file)})")
        else:
            links.append("not in the library yet (run `fetcher sync`)")
        if item.entry.kind == "arxiv":
            links.append(f"[arXiv:{item.versioned_id}]({item.link})")
        else:
            links.append(f"[source](<{item.link}>)")
        lines += [" · ".join(links), ""]
        if item.abstract:
            lines += [
                "<details><summary>Abstract</summary>",
                "",
                _md(item.abstract),
                "",
                "</details>",
                "",
            ]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light dark; --fg: #1d1d1f; --muted: #5f6368; --bg: #fff;
  --card: #f6f7f9; --accent: #b31b1b; --line: #e2e4e8; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8ea; --muted: #a0a4ab;
  --bg: #121316; --card: #1c1e22; --accent: #ff7b72; --line: #2c2f35; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
header { position: sticky; top: 0; background: var(--bg); border-bottom: 1px solid var(--line);
  padding: 1rem max(1rem, calc(50% - 26rem)) .6rem; z-index: 1; }
h1 { margin: 0 0 .2rem; font-size: 1.5rem; }
.sub, #count, .meta { color: var(--muted); font-size: .9rem; margin: 0; }
#q { width: 100%; font: inherit; padding: .55rem .8rem; margin: .6rem 0 .3rem;
  border: 1px solid var(--line); border-radius: .5rem; background: var(--card); color: inherit; }
.tags { display: flex; flex-wrap: wrap; gap: .3rem; margin-top: .4rem; }
button.tag { font: inherit; font-size: .78rem; border: 1px solid var(--line);
  border-radius: 1rem; padding: .05rem .6rem; background: var(--card); color: inherit;
  cursor: pointer; }
button.tag:hover, button.tag:focus { border-color: var(--accent); }
main { padding: .5rem max(1rem, calc(50% - 26rem)) 3rem; }
article { border-bottom: 1px solid var(--line); padding: .9rem 0; }
article h2 { font-size: 1.08rem; margin: 0 0 .2rem; }
article h2 a { color: inherit; text-decoration: none; }
article h2 a:hover { text-decoration: underline; }
.links { margin: .3rem 0 0; display: flex; flex-wrap: wrap; gap: .35rem .8rem;
  align-items: center; font-size: .9rem; }
.links a { color: var(--accent); }
.missing { color: var(--muted); font-style: italic; }
details { margin-top: .35rem; font-size: .93rem; }
summary { cursor: pointer; color: var(--muted); }
details p { margin: .4rem 0 0; }
#none { padding: 2rem 0; color: var(--muted); }
"""

_SCRIPT = """
(function () {
  var q = document.getElementById('q');
  var papers = Array.prototype.slice.call(document.querySelectorAll('article.paper'));
  var count = document.getElementById('count');
  var none = document.getElementById('none');
  function fold(s) {
    return s.toLowerCase().normalize('NFD').replace(/[\\u0300-\\u036f]/g, '');
  }
  function apply() {
    var terms = fold(q.value).split(/\\s+/).filter(Boolean);
    var shown = 0;
    papers.forEach(function (p) {
      var hay = p.getAttribute('data-search');
      var hit = terms.every(function (t) { return hay.indexOf(t) !== -1; });
      p.hidden = !hit;
      if (hit) { shown += 1; }
    });
    count.textContent = shown + ' of ' + papers.length + ' papers';
    none.hidden = shown !== 0;
    try {
      history.replaceState(null, '', q.value ? '#q=' + encodeURIComponent(q.value) : '#');
    } catch (e) { /* some browsers refuse history on file:// pages */ }
  }
  function fromHash() {
    var m = /^#q=(.*)$/.exec(location.hash);
    if (m) { try { q.value = decodeURIComponent(m[1]); } catch (e) { q.value = m[1]; } }
  }
  q.addEventListener('input', apply);
  document.querySelectorAll('button.tag').forEach(function (b) {
    b.addEventListener('click', function () {
      q.value = b.getAttribute('data-tag'); apply(); q.focus();
    });
  });
  window.addEventListener('hashchange', function () { fromHash(); apply(); });
  fromHash();
  apply();
})();
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _tag_button(tag: str, count: int | None = None) -> str:
    label = _e(tag) + (f" <small>{count}</small>" if count is not None else "")
    return f'<button type="button" class="tag" data-tag="{_e(tag)}">{label}</button>'


def _article(item: Item) -> str:
    local = quote(item.file) if item.present and item.file else None
    title = _e(item.title)
    heading = f'<a href="{local}">{title}</a>' if local else title
    facts = []
    if item.authors:
        facts.append(f'<span class="authors">{_e(_authors_short(item.authors))}</span>')
    if item.year:
        facts.append(f'<span class="year">{_e(item.year)}</span>')
    links = []
    if local:
        kind = "page" if item.entry.format == "html" else "PDF"
        links.append(f'<a class="local" href="{local}">{kind}</a>')
    else:
        links.append('<span class="missing">not in the library yet</span>')
    if item.entry.kind == "arxiv":
        links.append(
            f'<a class="arxiv" href="{_e(item.link)}">arXiv:{_e(str(item.versioned_id))}</a>'
        )
    else:
        links.append(f'<a class="source" href="{_e(item.link)}">source</a>')
    links += [_tag_button(t) for t in item.tags]
    parts = [
        f'<article class="paper" id="{_e("p-" + item.key)}" data-key="{_e(item.key)}" '
        f'data-search="{_e(_haystack(item))}">',
        f"<h2>{heading}</h2>",
    ]
    if facts:
        parts.append(f'<p class="meta">{" · ".join(facts)}</p>')
    parts.append(f'<p class="links">{" ".join(links)}</p>')
    if item.abstract:
        parts.append(f"<details><summary>Abstract</summary><p>{_e(item.abstract)}</p></details>")
    parts.append("</article>")
    return "\n".join(parts)


def render_html(items: Sequence[Item], manifest_name: str = "manifest.toml") -> str:
    present = sum(1 for i in items if i.present)
    tags = " ".join(_tag_button(t, n) for t, n in _tag_counts(items))
    body = "\n".join(_article(item) for item in items)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="fetcher {_e(__version__)}">
<title>Library: {len(items)} papers</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>Library</h1>
<p class="sub">{len(items)} papers ({present} in the library) from {_e(manifest_name)}</p>
<input id="q" type="search" placeholder="Search titles, authors, tags, years, abstracts…"
 aria-label="Search the library" autocomplete="off" autofocus>
<p id="count" aria-live="polite">{len(items)} of {len(items)} papers</p>
<nav class="tags" aria-label="Tags">{tags}</nav>
</header>
<main id="papers">
{body}
<p id="none" hidden>No paper matches the search.</p>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


# --- keeping it up to date -------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Write atomically when the content changed; else just mark the file as fresh."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            os.utime(path)
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)


def write(manifest: Manifest, records: Mapping[str, LockRecord] | None = None) -> list[Item]:
    """Rebuild both index files from the sidecars now."""
    items = collect(manifest, records)
    root = manifest.library
    _write(root / INDEX_MD, render_markdown(items, manifest.path.name))
    _write(root / INDEX_HTML, render_html(items, manifest.path.name))
    return items


def is_fresh(manifest: Manifest) -> bool:
    """Both files exist and are newer than the manifest (tags, order and titles live there)."""
    return catalog_is_fresh(manifest.library, manifest.path)


def refresh(
    manifest: Manifest, records: Mapping[str, LockRecord] | None = None, *, changed: bool
) -> str | None:
    """After a sync: rebuild the catalog if the library changed or the files are stale.

    Costs three `stat` calls when nothing changed. Returns a warning instead of raising:
    a catalog that cannot be written must not fail the sync that filled the library.
    """
    if not changed and is_fresh(manifest):
        return None
    if records is None:
        records = read_lock(manifest.lock_path)
    owners = [k for k, r in records.items() if r.file in (INDEX_MD, INDEX_HTML)]
    if owners:
        return (
            f"entry {owners[0]!r} is stored as {records[owners[0]].file}, the catalog's own "
            "name; the catalog was not written (give that entry another name)"
        )
    try:
        write(manifest, records)
    except OSError as exc:
        return f"could not write the catalog in {manifest.library}: {exc.strerror or exc}"
    return None
