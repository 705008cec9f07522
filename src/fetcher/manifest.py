"""Load and validate `manifest.toml`: pure parsing, no network, nothing written.

Every problem becomes a `ManifestError` naming the file, the line and what to do, so a
bad manifest stops the run before any request is made (exit 2).
"""

from __future__ import annotations

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
from .library import RESERVED_NAMES

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
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # fullmatch: `$` would allow a "\n"
_SHA_RE = re.compile(r"[0-9a-f]{64}")
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
        """Host names that count as arXiv for politeness: arXiv's own and the configured
        ones (as `ids.hostname` gives them; the client also treats any *.arxiv.org so)."""
        configured = {ids.hostname(url) for url in (self.arxiv_api, self.arxiv_pdf)}
        return ids.ARXIV_HOSTS | (configured - {""})


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
        """The lock beside the manifest, named after it: `manifest.toml` -> `manifest.lock`,
        `ml.toml` -> `ml.lock`, so two manifests in one folder keep two locks."""
        name = self.path.stem + ".lock"
        if name == self.path.name:  # a manifest itself named `x.lock`
            name = self.path.name + ".lock"
        return self.path.parent / (name if self.path.stem else LOCK_NAME)

    @property
    def library(self) -> Path:
        return self.settings.library

    def by_key(self) -> dict[str, Entry]:
        return {e.key: e for e in self.entries}


# --- locating lines -------------------------------------------------------------------

# [ \t]*, not \s*: \s would match the newlines of blank lines above and miscount the line
_PAPER_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*[\"']?paper[\"']?[ \t]*\]\]", re.MULTILINE)
_SETTINGS_HEADER = re.compile(r"^[ \t]*\[[ \t]*[\"']?settings[\"']?[ \t]*\]", re.MULTILINE)


class _Lines:
    """Finds the line of a table or key in the raw text, for error messages."""

    def __init__(self, text: str):
        self.text = text
        # Count newlines incrementally: counting from 0 for each table was O(n^2) and
        # took 0.6 s of a warm sync at 10,000 entries.
        self.papers: list[int] = []
        line, pos = 1, 0
        for m in _PAPER_HEADER.finditer(text):
            line += text.count("\n", pos, m.start())
            pos = m.start()
            self.papers.append(line)
        found = _SETTINGS_HEADER.search(text)
        self.settings = text.count("\n", 0, found.start()) + 1 if found else None

    def paper(self, index: int) -> int | None:
        return self.papers[index] if index < len(self.papers) else None

    def top(self, name: str) -> int | None:
        """The line of a top-level `[name]`, `[[name]]`, `[name.x]` or `name = ...`."""
        header = re.compile(
            rf"^[ \t]*\[\[?[ \t]*[\"']?{re.escape(name)}[\"']?[ \t]*[\].]", re.MULTILINE
        )
        m = header.search(self.text)
        if m is not None:
            return self.text.count("\n", 0, m.start()) + 1
        return self.key(1, name)

    def key(self, start: int | None, key: str) -> int | None:
        """First line at or after `start` that assigns `key`."""
        if start is None:
            return None
        lines = self.text.split("\n")  # as TOML counts lines (splitlines also splits on \f...)
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(start, len(lines) + 1):
            if number > start and lines[number - 1].lstrip().startswith("["):
                break
            if pattern.match(lines[number - 1]):
                return number
        return start


def _suggest(word: str, options: tuple[str, ...] | list[str]) -> str:
    import difflib  # only when an error hint is built: a valid manifest never needs it

    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid keys: {', '.join(options)})"


_TOML_HINTS = {
    "Cannot overwrite a value": "a key is set twice in one table",
    "Cannot declare": "a table is declared twice",
}


def _syntax_error(message: str, text: str, path: Path) -> ManifestError:
    """A TOML parse error as `file:line:column: TOML syntax error: ...`."""
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    if m is not None:
        line, column = int(m.group(1)), int(m.group(2))
    else:  # "(at end of document)": point just past the last character
        rows = text.split("\n")
        if len(rows) > 1 and rows[-1] == "":
            rows.pop()
        line, column = len(rows), len(rows[-1]) + 1
    detail = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
    # tomllib names tables as Python tuples: ('paper',) reads better as [paper]
    detail = re.sub(
        r"\(((?:'[^']*',? ?)+)\)",
        lambda m: "[" + ".".join(re.findall(r"'([^']*)'", m.group(1))) + "]",
        detail,
    )
    for needle, hint in _TOML_HINTS.items():
        if detail.startswith(needle):
            detail += f" ({hint})"
    return ManifestError(f"TOML syntax error: {detail}", path, line, column)


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


# --- loading --------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """Read the manifest as UTF-8 text, refusing binaries with a clear message."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if path.name == DEFAULT_NAME and path.parent == Path.cwd():
            where = f"no {DEFAULT_NAME} here"
        elif path.name == DEFAULT_NAME:
            where = f"no {DEFAULT_NAME} in {path.parent}"
        else:
            where = f"no manifest at {path}"
        raise ManifestError(
            f"{where}: create one with `fetcher add` or `fetcher import`, or pass -m PATH"
        ) from None
    except IsADirectoryError:
        raise ManifestError(
            f"is a folder, expected a manifest file; pass -m {path / DEFAULT_NAME}", path
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror or exc}", path) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError("is UTF-16 text; save it as UTF-8", path)
    if b"\x00" in raw:
        raise ManifestError("is a binary file, expected TOML text (UTF-8)", path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError("is not UTF-8 text; save it as UTF-8", path, line) from None


def load(path: str | Path = DEFAULT_NAME) -> Manifest:
    """Read, parse and validate a manifest file, and check that its library can be a folder.

    The library check looks at the file system, so it lives here and not in `loads`.
    """
    path = Path(path).absolute()
    text = read_text(path)
    manifest = loads(text, path)
    problem = _library_problem(manifest.library)
    if problem:
        lines = _Lines(text)
        line = lines.key(lines.settings, "library")
        raise ManifestError(f"[settings] library: {problem}", path, line)
    return manifest


def loads(text: str, path: str | Path = DEFAULT_NAME) -> Manifest:
    """Parse and validate manifest text; `path` locates the library and names errors.

    Pure: nothing on disk is looked at (`load` also checks the library folder).
    """
    path = Path(path).absolute()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(str(exc), text, path) from None
    except RecursionError:
        raise ManifestError("TOML syntax error: arrays or tables nested too deeply", path) from None
    lines = _Lines(text)
    for top in data:
        if top not in ("settings", "paper"):
            raise ManifestError(
                f"unknown table or key {top!r}{_suggest(top, ['settings', 'paper'])}",
                path,
                lines.top(top),
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
            same = url_identity(entry.url)
            if same in seen_urls:
                raise ManifestError(
                    f"the same URL twice (first at line {seen_urls[same]}): {entry.url}; "
                    "remove one of them",
                    path,
                    entry.line,
                )
            seen_urls[same] = entry.line
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
    _check_url(values["arxiv_api"], lambda msg: fail("arxiv_api", msg))
    _check_pdf_template(values["arxiv_pdf"], lambda msg: fail("arxiv_pdf", msg))
    _check_template(values["filename"], lambda msg: fail("filename", msg))
    contact = values["contact"]
    if any(not 32 <= ord(c) < 127 for c in contact):
        raise fail("contact", f"expected a plain ASCII e-mail address, found {contact!r}")
    if not values["library"].strip():
        raise fail("library", "must not be empty")
    if _has_control(values["library"]):
        raise fail("library", f"must not contain control characters, found {values['library']!r}")
    library = (path.parent / values["library"]).absolute()
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


def url_identity(url: str) -> str:
    """What makes two URLs the same download: case of scheme and host, fragment ignored.

    Public so that `fetcher add` finds duplicates exactly as validation does.
    """
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path or '/'}?{parts.query}"


def _library_problem(library: Path) -> str | None:
    """Why `library` cannot be (or become) the library folder, from what exists now."""
    try:
        for folder in (library, *library.parents):
            if folder.is_symlink() and not folder.exists():
                return f"{folder} is a broken symbolic link"
            if folder.exists():
                if folder.is_dir():
                    return None
                if folder == library:
                    return f"{library} exists and is not a folder"
                return f"{folder} is a file, so the folder {library} cannot be created"
    except OSError as exc:  # e.g. a name too long for the file system
        return f"cannot use this path as a folder: {exc.strerror or exc}"
    return None


def _check_url(url: str, fail: Any) -> None:
    """An http(s) URL with a host, as httpx will accept it; no network is touched."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise fail(f"expected a URL without spaces or control characters, found {url!r}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise fail(f"expected a valid URL, found {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise fail(f"expected an http or https URL, found {url!r}")
    if not host:
        raise fail(f"expected a URL with a host, found {url!r}")
    problem = _host_problem(url, parts.netloc)
    if problem:
        raise fail(f"expected a URL with a valid host name, found {url!r}: {problem}")


# what the idna codec accepts from an ASCII name: labels of 1-63, the last may be empty
_ASCII_HOST = re.compile(r"(?:[^.]{1,63}\.)*[^.]{0,63}")


def _host_problem(url: str, netloc: str) -> str | None:
    """Why the client could not send a request to this URL's host name, or None.

    The resolver encodes the name with Python's idna codec (every label 1 to 63 characters,
    only the last one may be empty); an international or `xn--` name also goes through the
    `idna` package inside httpx, which is loaded for those rare names only.
    """
    if "[" in netloc:  # an IPv6 literal; urlsplit has checked its brackets
        return None
    host = netloc.rpartition("@")[2]
    host = host.rpartition(":")[0] if ":" in host else host
    plain = host.isascii() and "xn--" not in host.lower()
    if plain and _ASCII_HOST.fullmatch(host):  # the common case, at 10,000 entries too
        return None
    if not plain:
        import httpx  # rare names only: exactly what the client will do with them

        try:
            host = httpx.URL(url).raw_host.decode("ascii")
            httpx.URL(url).host  # noqa: B018 - decodes `xn--` labels; raises if they are bad
        except (httpx.InvalidURL, ValueError) as exc:  # idna.IDNAError is a ValueError
            return f"not a valid international host name ({exc})"
    labels = host.split(".")
    for label in labels[:-1]:
        if not label:
            return "the host name has an empty label (a leading dot or '..')"
    for label in labels:
        if len(label) > 63:
            return f"the host name part {label[:20]!r}... is {len(label)} characters; at most 63"
    return None


def _check_pdf_template(template: str, fail: Any) -> None:
    """`arxiv_pdf` is a URL with `{id}` and no other field (other braces are doubled)."""
    example = "e.g. https://export.arxiv.org/pdf/{id}"
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise fail(f"bad template {template!r}: {exc}; {example}") from None
    if any(f != ("id", "", None) for f in fields):
        raise fail(f"the only field allowed is {{id}}, found {template!r}; {example}")
    if not fields:
        raise fail(f"must contain {{id}}, {example}")
    _check_url(template.format(id="1706.03762v7"), fail)


def _check_template(template: str, fail: Any) -> None:
    fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise fail(f"bad template {template!r}: {exc}; fields: {fields}") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise fail(
                f"unknown field {{{name}}}{_suggest(name, TEMPLATE_FIELDS)}; fields: {fields}"
            )
        if spec or conversion:
            raise fail(f"write {{{name}}} without a format spec or conversion, found {template!r}")
        names.append(name)
    if not template.strip():
        raise fail("must not be empty")
    if "/" in template or "\\" in template:
        raise fail("must not contain a path separator")
    if _has_control(template):
        raise fail(f"must not contain control characters, found {template!r}")
    if not names:
        raise fail(
            f"{template!r} has no field, so every file would get the same name; use one of {fields}"
        )


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
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise fail(
            f'tags must be a list of non-empty strings, e.g. tags = ["nlp"]; found {tags!r}', "tags"
        )

    sha = raw.get("sha256")
    if sha is not None:
        sha = sha.strip().lower()
        if not _SHA_RE.fullmatch(sha):
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


def check_name(name: str, fail: Any) -> None:
    """A name becomes a file stem, so it must be one plain path component."""
    if name in (".", ".."):
        raise fail(f"name {name!r} is not a file name; use letters, digits, '.', '_' and '-'")
    if "/" in name or "\\" in name:
        raise fail(
            f"name {name!r} must not contain a path separator (it is a file stem, not a path)"
        )
    if name.startswith("."):
        raise fail(f"name {name!r} must not start with a dot")
    if not _NAME_RE.fullmatch(name):
        raise fail(f"name {name!r} may only use letters, digits, '.', '_' and '-'")
    if name.split(".")[0].lower() in RESERVED_NAMES:
        raise fail(f"name {name!r} is reserved on Windows; pick another")
    if len(name) > 120:
        raise fail(f"name is {len(name)} characters long; keep it under 120")
