"""What a sync has to do for each entry, decided from local state alone.

The plan reads the lock, the files (through the stat cache) and the sidecars, never the
network, so a library that is complete costs no request. `status` and `catalog` ask the
same questions ("which file does this entry have?") through `known_record` and
`entry_file`, so the three never disagree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from .errors import UsageError
from .library import SIDECAR_MISSING, Library, LockRecord, render_stem
from .manifest import Entry, Manifest

if TYPE_CHECKING:
    from .arxiv_api import PaperMeta

Action = Literal["skip", "fetch", "meta"]
META_FIELDS = ("id", "version", "title", "first_author", "year")


@dataclass
class Plan:
    """What to do for one entry, decided from local state alone.

    `record` is what the library holds for the entry now (the lock's line, or the
    sidecar's when that is newer); `file` the name to fetch into (None: decided once the
    arXiv metadata is known); `version` the arXiv version to fetch when already known.
    """

    entry: Entry
    action: Action
    reason: str
    record: LockRecord | None = None
    file: str | None = None
    version: int | None = None


def default_file(entry: Entry, template: str, meta: PaperMeta | None = None) -> str:
    """The library file name of an entry: the `filename` template plus the suffix."""
    from .ids import stem_of

    fields = {
        "key": stem_of(entry.key),
        "id": stem_of(meta.versioned_id if meta else entry.key),
        "version": str(meta.version) if meta else "",
        "title": (meta.title if meta else entry.title) or entry.key,
        "first_author": (meta.authors[0].split()[-1] if meta and meta.authors else ""),
        "year": meta.year if meta else "",
    }
    return render_stem(template, fields) + entry.suffix


def template_needs_meta(template: str) -> bool:
    """True if file names come from arXiv metadata, so no name is known before the API."""
    return any(f"{{{f}}}" in template for f in META_FIELDS)


def entry_file(entry: Entry, record: LockRecord | None, template: str) -> str | None:
    """The file an entry has or would have: the lock's, else the template's (None when
    the template needs arXiv metadata)."""
    if record is not None and record.kind == entry.kind:
        return record.file
    if template_needs_meta(template):
        return None
    return default_file(entry, template)


def known_record(
    entry: Entry, record: LockRecord | None, library: Library, template: str
) -> tuple[LockRecord | None, bool]:
    """What the library holds for an entry: the lock's record (if of the entry's kind),
    else the record its sidecar keeps (the lock was lost). The flag says "from a sidecar"."""
    if record is not None and record.kind == entry.kind:
        return record, False
    file = entry_file(entry, None, template)
    if file is None:
        return None, False
    found = library.sidecar_record(file, entry.key)
    if found is None or found.kind != entry.kind:
        return None, False
    return found, True


def plan_entry(
    entry: Entry,
    record: LockRecord | None,
    library: Library,
    template: str,
    *,
    upgrade: bool = False,
) -> Plan:
    """Decide skip, fetch or meta (rewrite the sidecar) for one entry. Reads the disk,
    never the network."""
    record, _ = known_record(entry, record, library, template)
    if record is None:
        version = entry.arxiv.version if entry.arxiv else None
        return Plan(entry, "fetch", "new", None, entry_file(entry, None, template), version)
    pinned = entry.arxiv.version if entry.arxiv else None
    if pinned is not None and record.version != pinned:
        # the old record stays: its file goes once the pinned version is in
        return Plan(entry, "fetch", "pinned version changed", record, None, pinned)
    if entry.kind == "url" and record.url != entry.url:
        return Plan(entry, "fetch", "url changed", None)
    if entry.sha256 and record.sha256 != entry.sha256:
        return Plan(entry, "fetch", "sha256 pin changed", record, record.file, record.version)

    version = record.version
    # a sha256 pin fixes the bytes, so it fixes the version: --upgrade leaves it alone
    upgrading = upgrade and entry.kind == "arxiv" and pinned is None and not entry.sha256
    if upgrading:
        version = None  # ask the API for the latest
    current = library.current_hash(record.file)
    if current is None:
        return Plan(entry, "fetch", "missing", record, record.file, version)
    if current != (record.sha256, record.size):
        newer = library.sidecar_record(record.file, entry.key)
        if (
            newer is not None
            and newer.kind == entry.kind
            and newer != record
            and (newer.sha256, newer.size) == current
        ):
            # Committed and described by its sidecar, but the run ended before the lock
            # line was written: the file on disk is the newer truth, not damage.
            adopted = plan_entry(entry, newer, library, template, upgrade=upgrade)
            if adopted.action == "skip":
                adopted = replace(adopted, reason="present; the lock line comes from its sidecar")
            return adopted
        return Plan(entry, "fetch", "damaged", record, record.file, version)
    if upgrading:
        return Plan(entry, "fetch", "upgrade check", record, record.file, None)
    problem = library.sidecar_problem(record.file, entry.key, record)
    if problem == SIDECAR_MISSING:
        return Plan(entry, "meta", "sidecar missing", record, record.file, record.version)
    if problem is not None:
        return Plan(entry, "meta", "sidecar damaged", record, record.file, record.version)
    return Plan(entry, "skip", "present and intact", record, record.file, record.version)


def make_plan(
    manifest: Manifest,
    lock: dict[str, LockRecord],
    library: Library,
    keys: Sequence[str] = (),
    *,
    upgrade: bool = False,
) -> list[Plan]:
    """The plan of every selected entry (all when `keys` is empty), in manifest order."""
    template = manifest.settings.filename
    return [
        plan_entry(e, lock.get(e.key), library, template, upgrade=upgrade)
        for e in select(manifest, keys)
    ]


def select(manifest: Manifest, keys: Sequence[str]) -> list[Entry]:
    """The entries named by `keys` (an id with a version names its entry too); all when
    empty. An unknown key is a usage error."""
    if not keys:
        return list(manifest.entries)
    by_key = manifest.by_key()
    chosen = []
    for key in keys:
        entry = by_key.get(key)
        if entry is None:
            from .errors import InvalidArxivId
            from .ids import parse

            with contextlib.suppress(InvalidArxivId):
                entry = by_key.get(parse(key).key)
        if entry is None:
            raise UsageError(f"no entry {key!r} in {manifest.path.name}")
        chosen.append(entry)
    return chosen
