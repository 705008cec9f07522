"""Add entries to `manifest.toml` without disturbing a byte of what the user wrote.

New `[[paper]]` tables are rendered by tomlkit (so every value is quoted and escaped the
TOML way) and appended after the existing text, in its line endings. The result is
validated by the manifest parser itself before it is written, atomically: `fetcher add`
and `fetcher import` can never leave a manifest that `fetcher sync` would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import ids, manifest
from .errors import InvalidArxivId, ManifestError, UsageError
from .finder import Candidate, classify_url, suggest_name
from .library import atomic_write_bytes

HEADER = """\
# fetcher manifest: one [[paper]] table per paper; `fetcher sync` downloads them into the
# library folder (downloads/ beside this file). Settings and their defaults: see README.md.

# [settings]
# contact = "you@example.org"   # arXiv asks scripts to name a contact in the User-Agent
"""


@dataclass(frozen=True)
class NewEntry:
    """One `[[paper]]` table to append."""

    kind: Literal["arxiv", "url"]
    value: str  # the arXiv id as it will be written, or the URL
    name: str | None = None
    format: Literal["pdf", "html"] = "pdf"
    sha256: str | None = None
    title: str | None = None
    tags: tuple[str, ...] = ()
    comment: str | None = None  # a line above the table, for humans
    lines: tuple[int, ...] = ()  # where an import found it

    @property
    def key(self) -> str:
        return ids.parse(self.value).key if self.kind == "arxiv" else str(self.name)

    def table(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.kind == "arxiv":
            data["arxiv"] = self.value
        else:
            data["url"] = self.value
            data["name"] = self.name
            if self.format != "pdf":
                data["format"] = self.format
        if self.title:
            data["title"] = self.title
        if self.sha256:
            data["sha256"] = self.sha256
        if self.tags:
            data["tags"] = list(self.tags)
        return data

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "kind": self.kind, **self.table()}
        if self.kind == "url":
            data["format"] = self.format
        if self.lines:
            data["lines"] = list(self.lines)
        return data


@dataclass(frozen=True)
class Skipped:
    value: str
    reason: str
    lines: tuple[int, ...] = ()
    duplicate: bool = False  # already in the manifest (or given twice)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "reason": self.reason}
        if self.lines:
            data["lines"] = list(self.lines)
        return data


@dataclass
class Plan:
    """What an `add` or `import` will append, what it leaves out and why."""

    path: Path
    created: bool
    added: list[NewEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def unchecked(self) -> list[NewEntry]:
        """Direct links: nothing was fetched, so whether they answer is unknown until sync."""
        return [e for e in self.added if e.kind == "url"]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "manifest": str(self.path),
            "created": self.created,
            "added": [e.to_json() for e in self.added],
            "skipped": [s.to_json() for s in self.skipped],
            "unchecked": [e.value for e in self.unchecked],
            "notes": list(self.notes),
        }


# --- the manifest as it is now ---------------------------------------------------------------


def current(path: Path) -> manifest.Manifest | None:
    """The manifest at `path`, validated; None if there is none yet (it will be created)."""
    if not path.exists():
        return None
    return manifest.load(path)


class _Taken:
    """Keys, URLs and names already used, by the manifest or earlier in this plan.

    URLs are keyed by `manifest.url_identity`, the sameness the manifest's validation
    uses: a URL differing only in the case of its host or in a fragment is a duplicate to
    skip, never a second entry that would make the manifest invalid.
    """

    def __init__(self, existing: manifest.Manifest | None):
        self.keys: dict[str, str] = {}
        self.urls: dict[str, str] = {}  # url_identity -> why it is taken
        if existing is None:
            return
        for entry in existing.entries:
            where = f"already in {existing.path.name}"
            if entry.line:
                where += f" (line {entry.line})"
            self.keys[entry.key] = where
            if entry.url:
                self.urls[manifest.url_identity(entry.url)] = f"{where} as {entry.key!r}"

    def add(self, entry: NewEntry) -> None:
        self.keys[entry.key] = "given twice"
        if entry.kind == "url":
            self.urls[manifest.url_identity(entry.value)] = f"given twice (as {entry.key!r})"

    def clash(self, key: str, url: str | None) -> str | None:
        """Why an entry with this key (and URL, for a url entry) is already taken, or None."""
        if key in self.keys:
            return self.keys[key]
        return self.urls.get(manifest.url_identity(url)) if url is not None else None

    def unique_name(self, base: str) -> str:
        taken = {k.lower() for k in self.keys}
        name, n = base, 2
        while name.lower() in taken:
            name = f"{base}-{n}"
            n += 1
        return name


# --- planning ----------------------------------------------------------------------------------


def _clean_title(label: str | None) -> str | None:
    if not label:
        return None
    title = " ".join(label.split())
    return title if len(title.split()) >= 2 and len(title) <= 300 else None


def plan_import(path: Path, found: Iterable[Candidate], *, tags: Sequence[str] = ()) -> Plan:
    """New entries for every candidate of a reading list that the manifest lacks."""
    existing = current(path)
    plan = Plan(path, created=existing is None)
    taken = _Taken(existing)
    for cand in found:
        lines = tuple(cand.lines)
        for line, cut in cand.trimmed:
            plan.notes.append(f"trimmed {cut!r} that followed {cand.value} (line {line})")
        if cand.skip:
            plan.skipped.append(Skipped(cand.value, cand.skip, lines))
            continue
        reason = taken.clash(cand.key, None if cand.kind == "arxiv" else cand.value)
        if reason is not None:
            plan.skipped.append(Skipped(cand.value, reason, lines, duplicate=True))
            continue
        title = _clean_title(cand.label)
        if cand.kind == "arxiv":
            entry = NewEntry("arxiv", cand.value, comment=title, tags=tuple(tags), lines=lines)
        else:
            fmt: Literal["pdf", "html"] = "html" if cand.kind == "page" else "pdf"
            name = taken.unique_name(suggest_name(cand.value))
            entry = NewEntry(
                "url", cand.value, name, fmt, title=title, tags=tuple(tags), lines=lines
            )
        taken.add(entry)
        plan.added.append(entry)
    return plan


def plan_add(
    path: Path,
    items: Sequence[str],
    *,
    name: str | None = None,
    format: Literal["pdf", "html"] | None = None,
    sha256: str | None = None,
    title: str | None = None,
    tags: Sequence[str] = (),
) -> Plan:
    """New entries for ids and URLs given on the command line; bad input is a UsageError."""
    existing = current(path)
    plan = Plan(path, created=existing is None)
    taken = _Taken(existing)
    urls = [i for i in items if "://" in i and not _is_arxiv(i)]
    if name is not None and len(urls) != 1:
        raise UsageError(f"--name names one URL entry; {len(urls)} URLs were given")
    if format is not None and not urls:
        raise UsageError("--format is for URL entries; an arXiv paper is always a PDF")
    if (sha256 is not None or title is not None) and len(items) != 1:
        raise UsageError("--sha256 and --title describe one entry; give exactly one ID or URL")
    for item in items:
        text = item.strip()
        if _is_arxiv(text):
            parsed = ids.parse(text)
            entry = NewEntry("arxiv", str(parsed), sha256=sha256, title=title, tags=tuple(tags))
        elif "://" in text:
            kind, _, reason = classify_url(text)
            fmt = format or ("html" if kind == "page" else "pdf")
            entry_name = name or taken.unique_name(suggest_name(text))
            entry = NewEntry(
                "url", text, entry_name, fmt, sha256=sha256, title=title, tags=tuple(tags)
            )
            if kind == "other" and format is None:
                plan.notes.append(f"{text}: {reason}; added as a PDF, set --format if it is a page")
        else:
            raise UsageError(
                f"{item!r} is neither an arXiv id nor an http(s) URL; accepted forms: "
                f"{ids.ACCEPTED_FORMS}, or https://… for a direct link"
            )
        reason = taken.clash(entry.key, entry.value if entry.kind == "url" else None)
        if reason is not None:
            plan.skipped.append(Skipped(item, reason, duplicate=True))
            continue
        taken.add(entry)
        plan.added.append(entry)
    return plan


def _is_arxiv(text: str) -> bool:
    try:
        ids.parse(text)
    except InvalidArxivId:
        return False
    return True


# --- writing -------------------------------------------------------------------------------


def render(entries: Sequence[NewEntry], newline: str = "\n") -> str:
    """The TOML of new `[[paper]]` tables, each after a blank line and its comment."""
    import tomlkit

    chunks = []
    for entry in entries:
        doc = tomlkit.document()
        aot = tomlkit.aot()
        table = tomlkit.table()
        for key, value in entry.table().items():
            table.add(key, value)
        aot.append(table)
        doc.append("paper", aot)
        comment = ""
        if entry.comment:
            comment = "# " + re.sub(r"\s+", " ", entry.comment).strip() + "\n"
        chunks.append("\n" + comment + tomlkit.dumps(doc))
    return "".join(chunks).replace("\n", newline)


def _check_appendable(text: str, path: Path) -> None:
    """`[[paper]]` can extend the file only if `paper` is not an inline array already."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:  # pragma: no cover - manifest.load rejected it first
        raise ManifestError(f"TOML syntax error: {exc}", path) from None
    papers = doc.get("paper")
    if papers is not None and not isinstance(papers, tomlkit.items.AoT):
        raise ManifestError(
            "`paper` is written as an inline array; fetcher appends [[paper]] tables. "
            "Rewrite the entries as [[paper]] tables, then add again",
            path,
        )


def new_bytes(plan: Plan) -> bytes:
    """The manifest file with the plan's entries appended, validated as `sync` would.

    Raises `UsageError` naming the problem when the result would not load (a bad name,
    a malformed sha256, …): nothing is written in that case.
    """
    raw = HEADER.encode("utf-8") if plan.created else plan.path.read_bytes()
    if not plan.added:
        return raw
    text = raw.decode("utf-8-sig")
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith("\n"):
        raw += newline.encode()
        text += newline
    _check_appendable(text, plan.path)
    addition = render(plan.added, newline)
    try:
        manifest.loads(text + addition, plan.path)
    except ManifestError as exc:
        raise UsageError(f"cannot add: {_without_table(exc.detail)}") from None
    return raw + addition.encode("utf-8")


def apply(plan: Plan, *, dry_run: bool = False) -> None:
    """Append the plan's entries to the manifest (creating it if need be), atomically.

    The result is validated first, on a dry run too, so a dry run fails where a real one
    would. A manifest that is a symbolic link is written through to its target (the link
    stays), with the target's permissions.
    """
    data = new_bytes(plan)
    if plan.added and not dry_run:
        atomic_write_bytes(plan.path, data, follow_symlinks=True)


def _without_table(detail: str) -> str:
    """`[[paper]] #44: name 'a/b' must …` -> `name 'a/b' must …` (the table is not on disk)."""
    return re.sub(r"^\[\[paper\]\] #\d+: ", "", detail)
