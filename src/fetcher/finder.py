"""Find papers in a reading list: arXiv ids and links in text, Markdown or HTML.

Pure functions: text in, findings out; no network, no files. `scan` lists every
occurrence in document order; `candidates` merges repeats and decides which links are
papers of the list and which are the article's own framing (its source, navigation,
references), so `fetcher import` can add the first and say why it skipped the rest.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

from . import ids
from .errors import InvalidArxivId
from .manifest import url_identity

Kind = Literal["arxiv", "pdf", "page", "other"]

# Punctuation that sticks to a link in running text but is never its last character.
_TRAILING = ".,;:!?'\"*_~»”’…。，、；：！？」』】》"
_CLOSERS = {")": "(", "]": "[", "}": "{", ">": "<", "）": "（"}

_URL_RE = re.compile(r"https?://[^\s<>\"'`|\\^{}]+", re.IGNORECASE)
_MD_LINK_RE = re.compile(
    r"\[(?P<label>[^\]\n]{0,300})\]\(\s*<?(?P<url>https?://[^\s()<>]+(?:\([^\s()<>]*\)[^\s()<>]*)*)>?"
    r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\)",
    re.IGNORECASE,
)
_MD_REF_RE = re.compile(
    r"^[ ]{0,3}\[(?P<label>[^\]\n]+)\]:[ \t]*<?(?P<url>https?://[^\s>]+)>?", re.MULTILINE
)
_NEW_ID = r"\d{4}\.\d{4,5}(?:v\d{1,4})?"
_OLD_ID = r"[a-z]+(?:-[a-z]+)?(?:\.[A-Z]{2})?/\d{7}(?:v\d{1,4})?"
_BARE_ARXIV_URL_RE = re.compile(
    r"(?<![\w/.])(?:www\.|export\.|browse\.)?arxiv\.org/(?:abs|pdf|html)/"
    rf"(?P<id>{_OLD_ID}|{_NEW_ID})(?:\.pdf)?",
    re.IGNORECASE,
)
_PREFIXED_RE = re.compile(rf"\barXiv\s?:\s?(?P<id>{_OLD_ID}|{_NEW_ID})", re.IGNORECASE)
_DOI_RE = re.compile(rf"\b10\.48550/arXiv\.(?P<id>{_NEW_ID})", re.IGNORECASE)
_BARE_NEW_RE = re.compile(rf"(?<![\w./-])(?P<id>{_NEW_ID})(?![\w/]|\.\d)")
# Old-style ids without a prefix are only trusted with a real arXiv archive name.
_ARCHIVES = (
    "acc-phys|adap-org|alg-geom|ao-sci|astro-ph|atom-ph|bayes-an|chao-dyn|chem-ph|cmp-lg|"
    "comp-gas|cond-mat|cs|dg-ga|funct-an|gr-qc|hep-ex|hep-lat|hep-ph|hep-th|math|math-ph|"
    "mtrl-th|nlin|nucl-ex|nucl-th|patt-sol|physics|plasm-ph|q-alg|q-bio|quant-ph|solv-int|"
    "supr-con"
)
_BARE_OLD_RE = re.compile(
    rf"(?<![\w./-])(?P<id>(?:{_ARCHIVES})(?:\.[A-Z]{{2}})?/\d{{7}}(?:v\d{{1,4}})?)(?![\w/])"
)

_PAGE_EXTENSIONS = {"", "html", "htm", "xhtml", "shtml", "php", "asp", "aspx", "jsp", "cgi"}
# Hosts whose pages are code, talk or video about a paper, never the paper itself.
NOT_ARTICLE_HOSTS = (
    "github.com",
    "gitlab.com",
    "twitter.com",
    "x.com",
    "youtube.com",
    "youtu.be",
    "linkedin.com",
    "facebook.com",
    "instagram.com",
    "t.me",
    "discord.gg",
    "discord.com",
)
OUTSIDE_LIST = (
    "a page outside the list of papers (before the first or after the last one, and not "
    "written the way they are): taken as the article's own source, navigation or references"
)


@dataclass(frozen=True)
class Found:
    """One occurrence of a paper id or a link in the input."""

    kind: Kind
    value: str  # arXiv id as written (versioned or not), or the link as found, trimmed
    pos: int  # character offset in the input: document order
    line: int
    label: str | None = None  # link text from Markdown or HTML
    trimmed: str = ""  # punctuation cut from the end of the link as written
    reason: str | None = None  # why an "other" link is neither a paper nor a page
    shape: str | None = None  # how its line starts, e.g. "*original:" or "- [](" (text only)

    @property
    def key(self) -> str:
        """What makes two occurrences the same paper: the arXiv id without version, or the
        URL up to the case of its host and a fragment (the manifest's `url_identity`)."""
        if self.kind == "arxiv":
            return ids.parse(self.value).key
        return url_identity(self.value)


@dataclass
class Candidate:
    """Every occurrence of one paper or link, merged; `skip` says why it is not added."""

    kind: Kind
    value: str
    key: str
    lines: list[int] = field(default_factory=list)
    label: str | None = None
    trimmed: list[tuple[int, str]] = field(default_factory=list)
    skip: str | None = None


# --- classifying one link ----------------------------------------------------------------


def _host(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


def classify_url(url: str) -> tuple[Kind, str, str | None]:
    """(kind, value, reason): an arXiv paper, a direct PDF, a web page, or something else."""
    parts = urlsplit(url)
    host = _host(url)
    if parts.scheme.lower() not in ("http", "https") or not host:
        return "other", url, "not an http(s) link"
    if host.endswith("arxiv.org"):
        try:
            return "arxiv", str(ids.parse(url)), None
        except InvalidArxivId:
            return "other", url, "an arxiv.org link that is not a paper"
    if host == "doi.org" or host == "dx.doi.org":
        m = _DOI_RE.search(unquote(parts.path))
        if m and ids.is_valid(m.group("id")):
            return "arxiv", str(ids.parse(m.group("id"))), None
    path = unquote(parts.path)
    last = path.rstrip("/").rsplit("/", 1)[-1]
    ext = last.rsplit(".", 1)[-1].lower() if "." in last else ""
    if ext == "pdf" or "pdf" in path.lower().strip("/").split("/"):
        return "pdf", url, None
    if any(host == h or host.endswith("." + h) for h in NOT_ARTICLE_HOSTS):
        return "other", url, f"a link to {host} (code, talk or video), not a paper or article"
    if ext in _PAGE_EXTENSIONS or not ext.isalnum() or ext.isdigit():
        return "page", url, None
    return "other", url, f"a .{ext} file, not a paper or a web page"


def trim_url(raw: str) -> tuple[str, str]:
    """Cut punctuation that followed a link in the text: `…/list/.` -> `…/list/`.

    A closing bracket stays when the link opened it, as in `…/Foo_(bar)`.
    """
    url = raw
    while url:
        last = url[-1]
        unbalanced = last in _CLOSERS and url.count(_CLOSERS[last]) < url.count(last)
        if last not in _TRAILING and not unbalanced:
            break
        url = url[:-1]
    return url, raw[len(url) :]


# --- scanning ------------------------------------------------------------------------------


class _Lines:
    def __init__(self, text: str):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self.starts, pos)

    def pos(self, line: int, col: int) -> int:
        return self.starts[min(line, len(self.starts)) - 1] + col


def _mask(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _link(url: str, pos: int, lines: _Lines, label: str | None, trimmed: str = "") -> Found:
    kind, value, reason = classify_url(url)
    label = " ".join(label.split()) if label else None
    if label and (label == url or _URL_RE.fullmatch(label)):
        label = None
    return Found(kind, value, pos, lines.line(pos), label, trimmed, reason)


def _arxiv(raw_id: str, pos: int, lines: _Lines) -> Found | None:
    try:
        parsed = ids.parse(raw_id)
    except InvalidArxivId:
        return None
    return Found("arxiv", str(parsed), pos, lines.line(pos))


def _scan_text(text: str, lines: _Lines, offset: int = 0) -> list[Found]:
    """Markdown links, bare links and every written form of an arXiv id, in order."""
    found: list[Found] = []
    work = text
    for m in _MD_LINK_RE.finditer(work):
        found.append(_link(m.group("url"), offset + m.start(), lines, m.group("label")))
        work = _mask(work, m.start(), m.end())
    for m in _MD_REF_RE.finditer(work):
        url, trimmed = trim_url(m.group("url"))
        found.append(_link(url, offset + m.start("url"), lines, None, trimmed))
        work = _mask(work, m.start(), m.end())
    for m in _URL_RE.finditer(work):
        url, trimmed = trim_url(m.group())
        if urlsplit(url).hostname:
            found.append(_link(url, offset + m.start(), lines, None, trimmed))
        work = _mask(work, m.start(), m.start() + len(url))
    for pattern in (_BARE_ARXIV_URL_RE, _PREFIXED_RE, _DOI_RE, _BARE_OLD_RE, _BARE_NEW_RE):
        for m in pattern.finditer(work):
            hit = _arxiv(m.group("id"), offset + m.start(), lines)
            if hit is not None:
                found.append(hit)
                work = _mask(work, m.start(), m.end())
    return found


class _HTMLLinks(HTMLParser):
    """Anchors (href and text) and the visible text of an HTML page."""

    _SKIP = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[str, tuple[int, int], list[str]]] = []
        self.texts: list[tuple[str, tuple[int, int]]] = []
        self._open: list[tuple[str, tuple[int, int], list[str]]] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
            return
        values = dict(attrs)
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        if tag == "a" and values.get("href"):
            self._open.append((values["href"] or "", self.getpos(), []))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "a" and self._open:
            self.anchors.append(self._open.pop())

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        self.texts.append((data, self.getpos()))
        for _, _, parts in self._open:
            parts.append(data)

    def close(self) -> None:
        super().close()
        self.anchors.extend(self._open)
        self._open = []


def looks_like_html(text: str) -> bool:
    head = text[:4096].lower()
    return bool(re.search(r"<!doctype html|<html[\s>]|<body[\s>]|<a\s+[^>]*href=", head))


def _scan_html(text: str, lines: _Lines) -> list[Found]:
    parser = _HTMLLinks()
    parser.feed(text)
    parser.close()
    found: list[Found] = []
    for href, (line, col), parts in parser.anchors:
        href = href.strip()
        pos = lines.pos(line, col)
        label = "".join(parts)
        if href.startswith(("#", "mailto:", "javascript:", "tel:")):
            continue
        if "://" not in href:
            if parser.base is None:
                if href.lower().split("?")[0].endswith(".pdf"):
                    found.append(
                        Found(
                            "other",
                            href,
                            pos,
                            line,
                            label or None,
                            "",
                            "a relative link and the page has no <base href> to resolve it",
                        )
                    )
                continue
            href = urljoin(parser.base, href)
        found.append(_link(href, pos, lines, label))
    for data, (line, col) in parser.texts:
        # positions inside a chunk are approximate once entities are decoded; lines hold
        found.extend(_scan_text(data, lines, lines.pos(line, col)))
    return found


def line_shape(prefix: str) -> str:
    """What a line holds before a link, with links, labels and numbers made generic.

    `*original:` stays `*original:`, `12. [Title](` becomes `#. [](`: lines of one list
    share a shape even though their titles and numbers differ.
    """
    shape = _URL_RE.sub("<url>", prefix)
    shape = re.sub(r"\[[^\]]*\]\(?", "[](", shape)
    shape = re.sub(r"\d+", "#", shape)
    return " ".join(shape.split()).lower()


def scan(text: str, *, html: bool | None = None) -> list[Found]:
    """Every arXiv id and link in `text`, in document order (HTML when it looks like it)."""
    lines = _Lines(text)
    if html is None:
        html = looks_like_html(text)
    if html:
        found = _scan_html(text, lines)
    else:
        found = [
            replace(f, shape=line_shape(text[lines.starts[f.line - 1] : f.pos]))
            for f in _scan_text(text, lines)
        ]
    return sorted(found, key=lambda f: f.pos)


# --- deciding ------------------------------------------------------------------------------


def candidates(found: Iterable[Found]) -> list[Candidate]:
    """Merge repeats of one paper or link, and mark what should not be added, with why.

    The list proper runs from the line of the first paper (arXiv id or PDF link) to the
    line of the last one. A page linked only outside those lines, on a line not shaped
    like the papers' lines (`*original:…`, `- [title](…)`), is the article's framing: its
    source, navigation or references (a reading list cites itself at the top and bottom),
    not one of its items. Without any paper in the text, every page counts as an item.
    """
    items = sorted(found, key=lambda f: f.pos)
    papers = [f for f in items if f.kind in ("arxiv", "pdf")]
    lines = [f.line for f in papers]
    first, last = (min(lines), max(lines)) if lines else (None, None)
    shapes = {f.shape for f in papers if f.shape is not None}
    merged: dict[str, Candidate] = {}
    inside: dict[str, bool] = {}
    for f in items:
        key = f.key
        cand = merged.get(key)
        if cand is None:
            cand = merged[key] = Candidate(f.kind, f.value, key, label=f.label, skip=f.reason)
        elif f.kind == "arxiv" and ids.parse(f.value).version is None:
            cand.value = f.value  # one unversioned mention asks for the latest version
        if f.line not in cand.lines:
            cand.lines.append(f.line)
        if cand.label is None and f.label:
            cand.label = f.label
        if f.trimmed:
            cand.trimmed.append((f.line, f.trimmed))
        within = first is None or last is None or first <= f.line <= last
        within = within or (f.shape is not None and f.shape in shapes)
        inside[key] = inside.get(key, False) or within
    for key, cand in merged.items():
        if cand.kind == "page" and cand.skip is None and not inside[key]:
            cand.skip = OUTSIDE_LIST
    return list(merged.values())


# --- names for url entries -----------------------------------------------------------------

_GENERIC = {
    "index",
    "default",
    "main",
    "paper",
    "papers",
    "download",
    "downloads",
    "pdf",
    "view",
    "full",
    "fulltext",
    "abstract",
    "abs",
    "home",
    "article",
    "content",
    "file",
    "files",
    "document",
    "page",
    "post",
    "blog",
    "html",
    "en",
    "latest",
    "viewcontent",
    "item",
}
_HOST_NOISE = {"www", "cdn", "static", "assets", "files", "media", "blog", "docs", "research"}
_SLD = {"co", "com", "ac", "org", "gov", "edu", "net"}
MAX_NAME = 60


def slug(text: str) -> str:
    """ASCII letters, digits, '.', '_' and '-': accents dropped, other runs become '-'."""
    ascii_text = (
        unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    )
    out = re.sub(r"[^a-z0-9._-]+", "-", ascii_text)
    out = re.sub(r"([._-])[._-]+", r"\1", out)
    return out.strip("._-")


def _shorten(name: str, limit: int = MAX_NAME) -> str:
    if len(name) <= limit:
        return name
    cut = name[:limit]
    at = max(cut.rfind("_"), cut.rfind("-"), cut.rfind("."))
    return (cut[:at] if at > limit // 2 else cut).strip("._-")


def site_label(url: str) -> str:
    """`cdn.openai.com` -> `openai`, `huggingface.co` -> `huggingface`."""
    labels = [p for p in _host(url).split(".") if p]
    if len(labels) > 1:
        labels = labels[:-1]
    if len(labels) > 1 and labels[-1] in _SLD:
        labels = labels[:-1]
    meaningful = [p for p in labels if p not in _HOST_NOISE] or labels
    return slug(meaningful[-1]) if meaningful else "link"


def suggest_name(url: str) -> str:
    """A readable entry name from a link: its file or page name, with the site when short.

    `…/language_models_are_unsupervised_multitask_learners.pdf` keeps its file stem,
    `huggingface.co/blog/moe` becomes `huggingface-moe` (three letters say too little).
    """
    segments = [s for s in unquote(urlsplit(url).path).split("/") if s]
    stem = ""
    for segment in reversed(segments):
        candidate = slug(re.sub(r"\.[A-Za-z0-9]{1,5}$", "", segment))
        if candidate and candidate not in _GENERIC:
            stem = candidate
            break
    site = site_label(url)
    if not stem:
        name = site
    elif len(stem) < 4 or re.fullmatch(r"[0-9._-]+", stem):
        name = f"{site}-{stem}"
    else:
        name = stem
    return _shorten(name) or "link"
