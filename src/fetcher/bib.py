"""BibTeX for the library, built from the sidecars (no network).

arXiv papers become `@misc` with `eprint`, `archivePrefix` and `primaryClass` (biblatex
and natbib styles both read them), or `@article` when arXiv knows the journal reference;
direct links become `@misc` with `url`. Citation keys are readable and stable: the first
author's family name, the year and the first word of the title (`vaswani2017attention`),
or the entry's manifest name for a direct link. When two papers would share a key, the
one earlier in the manifest keeps it and the later one gets `b`, `c`, … appended, so
appending papers to the manifest never changes the keys you already cite.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import __version__
from .catalog import Item, collect
from .manifest import Manifest

_STOPWORDS = {
    "a", "an", "the", "on", "of", "in", "for", "to", "and", "with", "is", "are", "via",
    "from", "towards", "toward", "at", "by", "do", "does", "can", "how", "what", "why",
    "when", "your", "you", "we", "our", "as", "be", "not", "no",
}  # fmt: skip
_SPECIAL = re.compile(r"[\\{}&%$#_~^]")
_REPLACEMENTS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape(text: str) -> str:
    """LaTeX's special characters made literal; everything else (unicode too) kept as is."""
    text = " ".join(text.split())
    return _SPECIAL.sub(lambda m: _REPLACEMENTS[m.group()], text)


def _url(url: str) -> str:
    """URLs go in verbatim, but a brace would unbalance the field: percent-encode those."""
    return url.replace("{", "%7B").replace("}", "%7D").replace(" ", "%20")


def _ascii_word(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]", "", folded.lower())


def base_key(item: Item) -> str:
    """The readable key before de-duplication."""
    if item.entry.kind == "url":
        return re.sub(r"[^A-Za-z0-9._:-]", "", item.key) or "link"
    if not item.authors and not item.meta:
        return "arxiv-" + item.key.replace("/", "-")
    family = _ascii_word(item.authors[0].split()[-1]) if item.authors else ""
    word = ""
    for token in re.split(r"[\s:;,.!?()\[\]{}\"']+", item.title):
        candidate = _ascii_word(token)
        if candidate and candidate not in _STOPWORDS:
            word = candidate
            break
    key = f"{family or 'anon'}{item.year}{word}"
    return key


def _suffix(n: int) -> str:
    """1 -> b, 2 -> c, …, 25 -> z, 26 -> ba: letters like Google Scholar's 2017a/2017b."""
    letters = ""
    while True:
        n, r = divmod(n, 26)
        letters = chr(ord("a") + r) + letters
        if n == 0:
            return letters


@dataclass(frozen=True)
class BibEntry:
    """One BibTeX entry; `fields` hold values ready to print (escaped)."""

    citekey: str
    key: str  # the manifest key
    type: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = True  # False when the entry was never synced (no sidecar)

    def render(self) -> str:
        width = max((len(name) for name, _ in self.fields), default=0)
        body = ",\n".join(f"  {name:<{width}} = {{{value}}}" for name, value in self.fields)
        return f"@{self.type}{{{self.citekey},\n{body}\n}}\n"


def _arxiv_entry(item: Item, citekey: str) -> BibEntry:
    meta = item.meta
    fields: list[tuple[str, str]] = []
    if item.authors:
        fields.append(("author", " and ".join(escape(a) for a in item.authors)))
    if item.title != item.key:
        fields.append(("title", escape(item.title)))
    journal = meta.get("journal_ref")
    if journal:
        fields.append(("journal", escape(str(journal))))
    if item.year:
        fields.append(("year", item.year))
    fields += [("eprint", item.key), ("archivePrefix", "arXiv")]
    if meta.get("primary_category"):
        fields.append(("primaryClass", escape(str(meta["primary_category"]))))
    if meta.get("doi"):
        fields.append(("doi", _url(str(meta["doi"]))))
    fields.append(("url", _url(item.link)))
    return BibEntry(citekey, item.key, "article" if journal else "misc", fields, bool(meta))


def _url_entry(item: Item, citekey: str) -> BibEntry:
    fields: list[tuple[str, str]] = []
    if item.authors:
        fields.append(("author", " and ".join(escape(a) for a in item.authors)))
    if item.title and item.title != item.key:
        fields.append(("title", escape(item.title)))
    if item.year:
        fields.append(("year", item.year))
    fields.append(("url", _url(item.link)))
    fetched = str(item.meta.get("fetched_at") or "")[:10]
    if fetched:
        fields.append(("urldate", fetched))
    note = "Web page" if item.entry.format == "html" else "PDF"
    fields.append(("note", note))
    return BibEntry(citekey, item.key, "misc", fields, bool(item.meta))


def entries(items: Sequence[Item]) -> list[BibEntry]:
    """One BibTeX entry per item, in manifest order, with unique keys."""
    used: set[str] = set()
    out = []
    for item in items:
        base = base_key(item)
        citekey, n = base, 0
        while citekey.lower() in used:
            n += 1
            citekey = base + _suffix(n)
        used.add(citekey.lower())
        build = _arxiv_entry if item.entry.kind == "arxiv" else _url_entry
        out.append(build(item, citekey))
    return out


def render(bib: Sequence[BibEntry], source: str = "manifest.toml") -> str:
    head = f"% BibTeX of {len(bib)} papers from {source}, written by fetcher {__version__}\n"
    return head + "".join("\n" + e.render() for e in bib)


def bibliography(manifest: Manifest) -> tuple[str, list[BibEntry]]:
    """The BibTeX text for the whole manifest and its entries (see `BibEntry.complete`)."""
    bib = entries(collect(manifest))
    return render(bib, manifest.path.name), bib
