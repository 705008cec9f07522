"""Load and validate `manifest.toml`: pure parsing, no network, nothing written.

Every problem becomes a `ManifestError` naming the file, the line and what to do, so a
bad manifest stops the run before any request is made (exit 2).
"""

from __future__ import annotations

import difflib
import re
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from . import ids
from .errors import InvalidArxivId, ManifestError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_NAME = "manifest.toml"
LOCK_NAME = "manifest.lock"

SETTINGS_DEFAULTS: dict[str, Any] = {
    "library": "downloads",
    "arxiv_api": "https://export.arxiv.org/api/query",
    "arxiv_pdf": "https://export.arxiv.org/pdf/{id}",
    "arxiv_interval": 3.0,
    "host_interval": 1.0,
    "contact": "",
    "filename": "{key}",
    "max_size": 200_000_000,
}
PAPER_KEYS = ("arxiv", "url", "name", "format", "sha256", "title", "tags")
TEMPLATE_FIELDS = ("key", "id", "version", "title", "first_author", "year")
FORMATS = ("pdf", "html")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_INTERVAL = 3600.0

Kind = Literal["arxiv", "url"]


@dataclass(frozen=True)
class Settings:
    """The `[settings]` table with defaults filled in; `library` is absolute."""

    library: Path
    arxiv_api: str = SETTINGS_DEFAULTS["arxiv_api"]
    arxiv_pdf: str = SETTINGS_DEFAULTS["arxiv_pdf"]
    arxiv_interval: float = SETTINGS_DEFAULTS["arxiv_interval"]
    host_interval: float = SETTINGS_DEFAULTS["host_interval"]
    contact: str = ""
    filename: str = "{key}"
    max_size: int = SETTINGS_DEFAULTS["max_size"]

    @property
    def arxiv_hosts(self) -> frozenset[str]:
        """Hosts that count as arXiv for politeness: the configured ones and arXiv's own."""
        hosts = {"arxiv.org", "export.arxiv.org", "www.arxiv.org"}
        for url in (self.arxiv_api, self.arxiv_pdf):
            host = urlsplit(url).netloc.lower()
            if host:
                hosts.add(host)
        return frozenset(hosts)


@dataclass(frozen=True)
class Entry:
    """One `[[paper]]`: an arXiv paper or a direct URL."""

    key: str
    kind: Kind
    arxiv: ids.ArxivId | None = None
    url: str | None = None
    format: Literal["pdf", "html"] = "pdf"
    sha256: str | None = None
    title: str | None = None
    tags: tuple[str, ...] = ()
    line: int | None = None

    @property
    def suffix(self) -> str:
        return ".html" if self.format == "html" else ".pdf"


@dataclass(frozen=True)
class Manifest:
    path: Path
    settings: Settings
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    @property
    def lock_path(self) -> Path:
        return self.path.parent / LOCK_NAME

    @property
    def library(self) -> Path:
        return self.settings.library

    def by_key(self) -> dict[str, Entry]:
        return {e.key: e for e in self.entries}


# --- locating lines -------------------------------------------------------------------

_PAPER_HEADER = re.compile(r"^\s*\[\[\s*paper\s*\]\]", re.MULTILINE)
_SETTINGS_HEADER = re.compile(r"^\s*\[\s*settings\s*\]", re.MULTILINE)


class _Lines:
    """Finds the line of a table or key in the raw text, for error messages."""

    def __init__(self, text: str):
        self.text = text
        self.papers = [text.count("\n", 0, m.start()) + 1 for m in _PAPER_HEADER.finditer(text)]
        m = _SETTINGS_HEADER.search(text)
        self.settings = text.count("\n", 0, m.start()) + 1 if m else None

    def paper(self, index: int) -> int | None:
        return self.papers[index] if index < len(self.papers) else None

    def key(self, start: int | None, key: str) -> int | None:
        """First line at or after `start` that assigns `key`."""
        if start is None:
            return None
        lines = self.text.splitlines()
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(start, len(lines) + 1):
            if number > start and lines[number - 1].lstrip().startswith("["):
                break
            if pattern.match(lines[number - 1]):
                return number
        return start


def _suggest(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid keys: {', '.join(options)})"


# --- loading --------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """Read the manifest as UTF-8 text, refusing binaries with a clear message."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"no {path.name} here: create one with `fetcher add` or `fetcher import`, "
            "or pass -m PATH",
            path,
        ) from None
    except IsADirectoryError:
        raise ManifestError("is a directory, expected a manifest.toml file", path) from None
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror}", path) from None
    if b"\x00" in raw:
        raise ManifestError("is a binary file, expected TOML text", path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError("is not UTF-8 text; save it as UTF-8", path, line) from None


def load(path: str | Path = DEFAULT_NAME) -> Manifest:
    """Read, parse and validate a manifest file."""
    path = Path(path).absolute()
    return loads(read_text(path), path)


def loads(text: str, path: str | Path = DEFAULT_NAME) -> Manifest:
    """Parse and validate manifest text; `path` locates the library and names errors."""
    path = Path(path).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m.group(1)) if m else None
        where = f"column {m.group(2)}: " if m else ""
        detail = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        raise ManifestError(f"{where}TOML syntax error: {detail}", path, line) from None
    lines = _Lines(text)
    for top in data:
        if top not in ("settings", "paper"):
            raise ManifestError(
                f"unknown table or key {top!r}{_suggest(top, ['settings', 'paper'])}",
                path,
                lines.key(1, top),
            )
    settings = _settings(data.get("settings", {}), path, lines)
    papers = data.get("paper", [])
    if not isinstance(papers, list):
        raise ManifestError("`paper` must be an array of tables: write [[paper]]", path)
    entries: list[Entry] = []
    seen_keys: dict[str, int | None] = {}
    seen_urls: dict[str, int | None] = {}
    for index, raw in enumerate(papers):
        entry = _entry(raw, index, path, lines)
        if entry.key in seen_keys:
            raise ManifestError(
                f"duplicate entry {entry.key!r} (first at line {seen_keys[entry.key]}); "
                "remove one of them",
                path,
                entry.line,
            )
        seen_keys[entry.key] = entry.line
        if entry.url is not None:
            if entry.url in seen_urls:
                raise ManifestError(
                    f"the same URL twice (first at line {seen_urls[entry.url]}): {entry.url}",
                    path,
                    entry.line,
                )
            seen_urls[entry.url] = entry.line
        entries.append(entry)
    return Manifest(path=path, settings=settings, entries=tuple(entries))


def _settings(raw: Any, path: Path, lines: _Lines) -> Settings:
    if not isinstance(raw, Mapping):
        raise ManifestError("[settings] must be a table", path, lines.settings)
    values = dict(SETTINGS_DEFAULTS)

    def fail(key: str, message: str) -> ManifestError:
        return ManifestError(f"[settings] {key}: {message}", path, lines.key(lines.settings, key))

    for key, value in raw.items():
        if key not in SETTINGS_DEFAULTS:
            raise fail(key, "unknown setting" + _suggest(key, list(SETTINGS_DEFAULTS)))
        default = SETTINGS_DEFAULTS[key]
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail(key, f"expected a number of seconds, found {value!r}")
            if not 0 <= value <= MAX_INTERVAL:
                raise fail(key, f"expected 0 to {MAX_INTERVAL:g} seconds, found {value!r}")
            value = float(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise fail(key, f"expected a positive whole number of bytes, found {value!r}")
        elif not isinstance(value, str):
            raise fail(key, f"expected a string, found {value!r}")
        values[key] = value
    for key in ("arxiv_api", "arxiv_pdf"):
        _check_url(values[key], lambda msg, k=key: fail(k, msg))
    if "{id}" not in values["arxiv_pdf"]:
        raise fail("arxiv_pdf", "must contain {id}, e.g. https://export.arxiv.org/pdf/{id}")
    _check_template(values["filename"], lambda msg: fail("filename", msg))
    if not values["library"].strip():
        raise fail("library", "must not be empty")
    library = (path.parent / values["library"]).absolute()
    if library.exists() and not library.is_dir():
        raise fail("library", f"{library} exists and is not a folder")
    return Settings(
        library=library,
        arxiv_api=values["arxiv_api"],
        arxiv_pdf=values["arxiv_pdf"],
        arxiv_interval=values["arxiv_interval"],
        host_interval=values["host_interval"],
        contact=values["contact"],
        filename=values["filename"],
        max_size=values["max_size"],
    )


def _check_url(url: str, fail: Any) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise fail(f"expected an http or https URL, found {url!r}")
    if not parts.netloc:
        raise fail(f"expected a URL with a host, found {url!r}")


def _check_template(template: str, fail: Any) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise fail(f"bad template {template!r}: {exc}") from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise fail(
                f"unknown field {{{name}}}{_suggest(name, TEMPLATE_FIELDS)}; "
                f"fields: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
            )
    if not names and not template.strip():
        raise fail("must not be empty")
    if "/" in template or "\\" in template:
        raise fail("must not contain a path separator")


def _entry(raw: Any, index: int, path: Path, lines: _Lines) -> Entry:
    start = lines.paper(index)
    label = f"[[paper]] #{index + 1}"

    def fail(message: str, key: str | None = None) -> ManifestError:
        line = lines.key(start, key) if key else start
        return ManifestError(f"{label}: {message}", path, line)

    if not isinstance(raw, Mapping):
        raise fail("must be a table")
    for key in raw:
        if key not in PAPER_KEYS:
            raise fail(f"unknown key {key!r}{_suggest(key, PAPER_KEYS)}", key)
    for key in ("arxiv", "url", "name", "format", "sha256", "title"):
        if key in raw and not isinstance(raw[key], str):
            raise fail(f"{key} must be a string, found {raw[key]!r}", key)
        if key in raw and not raw[key].strip():
            raise fail(f"{key} must not be empty", key)
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise fail('tags must be a list of strings, e.g. tags = ["nlp"]', "tags")

    sha = raw.get("sha256")
    if sha is not None:
        sha = sha.strip().lower()
        if not _SHA_RE.match(sha):
            raise fail(f"sha256 must be 64 hex digits, found {raw['sha256']!r}", "sha256")
    fmt = raw.get("format", "pdf")
    if fmt not in FORMATS:
        raise fail(f"format must be 'pdf' or 'html', found {fmt!r}", "format")
    title = raw.get("title")

    if "arxiv" in raw and "url" in raw:
        raise fail("has both `arxiv` and `url`; an entry has exactly one source")
    if "arxiv" in raw:
        for key in ("name", "format"):
            if key in raw:
                raise fail(f"`{key}` is for url entries; an arXiv entry is named by its id", key)
        try:
            arxiv_id = ids.parse(raw["arxiv"])
        except InvalidArxivId as exc:
            raise fail(str(exc), "arxiv") from None
        return Entry(
            key=arxiv_id.key,
            kind="arxiv",
            arxiv=arxiv_id,
            sha256=sha,
            title=title,
            tags=tuple(tags),
            line=start,
        )
    if "url" in raw:
        url = raw["url"].strip()
        _check_url(url, lambda msg: fail(msg, "url"))
        if ids.is_valid(url):
            raise fail(f"{url} is an arXiv paper: write arxiv = {str(ids.parse(url))!r}", "url")
        name = raw.get("name")
        if name is None:
            raise fail('a url entry needs a `name` (its key and file stem), e.g. name = "gpt1"')
        check_name(name, lambda msg: fail(msg, "name"))
        return Entry(
            key=name,
            kind="url",
            url=url,
            format=fmt,
            sha256=sha,
            title=title,
            tags=tuple(tags),
            line=start,
        )
    raise fail('has no source: give `arxiv = "ID"` or `url = "https://..."` with a `name`')


_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}


def check_name(name: str, fail: Any) -> None:
    """A name becomes a file stem, so it must be one plain path component."""
    if "/" in name or "\\" in name:
        raise fail(f"name {name!r} must not contain a path separator")
    if name.startswith("."):
        raise fail(f"name {name!r} must not start with a dot")
    if not _NAME_RE.match(name):
        raise fail(f"name {name!r} may only use letters, digits, '.', '_' and '-'")
    if name.split(".")[0].lower() in _RESERVED:
        raise fail(f"name {name!r} is reserved on Windows; pick another")
    if len(name) > 120:
        raise fail(f"name is {len(name)} characters long; keep it under 120")
