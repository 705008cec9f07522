"""`fetcher status`: what the library holds, entry by entry, from local state alone.

The state of an entry is read from the manifest's lock, the files, the sidecars and the
stat cache (so a status of a large library costs no hashing unless a file changed), with
the same rules as a sync's plan (`plan.known_record`). Nothing is written. Only
`--check-updates` goes to the network: one batched arXiv API request (per 100 papers)
that says which papers have a newer version than the one in the library.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from .errors import Cancelled, FetcherError
from .library import SIDECAR_MISSING, Library, LockRecord, read_lock, sidecar_name
from .manifest import Entry, Manifest
from .plan import known_record

if TYPE_CHECKING:
    import httpx

    from .http import Clock, Policy

State = Literal["present", "missing", "damaged", "never synced", "not in manifest"]
STATES: tuple[State, ...] = ("present", "missing", "damaged", "never synced", "not in manifest")


@dataclass(frozen=True)
class EntryStatus:
    """One line of `fetcher status`."""

    key: str
    kind: str
    state: State
    file: str | None = None
    version: int | None = None
    pinned: bool = False
    size: int | None = None
    newer: int | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "state": self.state,
            "file": self.file,
            "version": self.version,
            "pinned": self.pinned,
            "size": self.size,
            "newer": self.newer,
            "notes": list(self.notes),
        }


@dataclass
class StatusReport:
    """Every entry's state, the lock's disagreements with the manifest, and updates."""

    entries: list[EntryStatus]
    not_in_lock: list[str] = field(default_factory=list)  # manifest keys the lock lacks
    lock_only: list[str] = field(default_factory=list)  # lock keys the manifest lacks
    lock_exists: bool = True
    checked_updates: bool = False
    update_error: str | None = None
    requests: int = 0

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for e in self.entries:
            counts[e.state] += 1
        return counts

    @property
    def newer(self) -> list[EntryStatus]:
        return [e for e in self.entries if e.newer is not None]

    @property
    def lock_agrees(self) -> bool:
        return not self.not_in_lock and not self.lock_only

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "entries": [e.to_json() for e in self.entries],
            "counts": self.counts,
            "lock": {
                "exists": self.lock_exists,
                "agrees": self.lock_agrees,
                "not_in_lock": list(self.not_in_lock),
                "not_in_manifest": list(self.lock_only),
            },
        }
        if self.checked_updates:
            data["updates"] = {
                "checked": self.update_error is None,
                "requests": self.requests,
                "newer": {e.key: e.newer for e in self.newer},
                "error": self.update_error,
            }
        return data


# --- files no entry of the manifest owns ---------------------------------------------------


@dataclass(frozen=True)
class Orphan:
    """Files fetcher stored for an entry that is no longer in the manifest, or older files
    of an entry that still is (`leftover`: an earlier version or file name)."""

    key: str
    kind: str
    files: tuple[str, ...]  # the paper and/or its sidecar, as present on disk
    version: int | None = None
    size: int | None = None
    leftover: bool = False


def _present(library: Library, name: str) -> bool:
    try:
        return library.is_safe_file(name)
    except FetcherError:  # an unsafe name in a sidecar or lock: never ours to touch
        return False


def _with_sidecar(file: str) -> tuple[str, str]:
    return file, sidecar_name(file)


def orphans(
    library: Library,
    manifest_keys: Iterable[str],
    lock: dict[str, LockRecord],
    *,
    other_keys: Iterable[str] = (),
    other_files: Iterable[str] = (),
) -> list[Orphan]:
    """Files of entries that left the manifest, found through the lock or their sidecars,
    and files of entries still in it that the lock no longer names (an older version).

    Only what fetcher itself stored counts: a lock record's file, or a paper named by a
    sidecar (`key` and `file` fields) beside it. A file the user put in the library is
    never an orphan, so `sync --prune` cannot delete it; neither is a key or a file of
    another manifest that uses the same library (`other_keys`, `other_files`).
    """
    keys = set(manifest_keys)
    foreign = set(other_keys)
    owned: set[str] = set(other_files)
    for key, record in lock.items():
        if key in keys:
            owned.update(_with_sidecar(record.file))
    found: dict[str, dict[str, Any]] = {}

    def add(
        key: str, kind: str, names: Iterable[str], version: Any, size: Any, leftover: bool
    ) -> None:
        item = found.setdefault(
            key,
            {"kind": kind, "files": set(), "version": None, "size": None, "leftover": leftover},
        )
        item["files"].update(n for n in names if n not in owned and _present(library, n))
        if item["version"] is None and isinstance(version, int):
            item["version"] = version
        if item["size"] is None and isinstance(size, int):
            item["size"] = size

    for key, record in lock.items():
        if key not in keys and key not in foreign:
            add(
                key,
                record.kind,
                _with_sidecar(record.file),
                record.version,
                record.size,
                False,
            )
    candidates = (n for n in library.files() if n.endswith(".json") and n not in owned)
    for name, owner, file, data in library.sidecars(candidates):
        if owner in foreign:
            continue
        if owner in keys and owner not in lock:
            continue  # the lock lost it: a sync takes it back, it is no leftover
        kind = str(data.get("kind", "?"))
        add(owner, kind, (file, name), data.get("version"), data.get("size"), owner in keys)
    result = []
    for key in sorted(found):
        item = found[key]
        if item["files"]:
            result.append(
                Orphan(
                    key,
                    item["kind"],
                    tuple(sorted(item["files"])),
                    item["version"],
                    item["size"],
                    item["leftover"],
                )
            )
    return result


# --- the computation -------------------------------------------------------------------------


def _entry_status(
    entry: Entry, record: LockRecord | None, library: Library, template: str, lock_name: str
) -> EntryStatus:
    pinned_version = entry.arxiv.version if entry.arxiv else None
    pinned = pinned_version is not None
    notes: list[str] = []
    record, from_sidecar = known_record(entry, record, library, template)
    if from_sidecar:
        notes.append(f"not in {lock_name}; `fetcher sync` adds it from the sidecar")
    if record is None:
        return EntryStatus(
            entry.key, entry.kind, "never synced", version=pinned_version, pinned=pinned
        )
    if pinned_version is not None and record.version != pinned_version:
        notes.append(f"the manifest pins v{pinned_version}; `fetcher sync` fetches it")
    if entry.kind == "url" and record.url != entry.url:
        notes.append("the manifest's url changed; `fetcher sync` fetches it again")
    if entry.sha256 and entry.sha256 != record.sha256:
        notes.append(
            f"the manifest's sha256 pin differs from {lock_name}; `fetcher sync` refetches"
        )
    state: State
    try:
        current = library.current_hash(record.file)
    except (FetcherError, OSError) as exc:
        current = None
        notes.append(str(exc))
    if current is not None and current != (record.sha256, record.size):
        newer = library.sidecar_record(record.file, entry.key)
        if newer is not None and newer.kind == entry.kind and (newer.sha256, newer.size) == current:
            record = newer  # stored, and its sidecar written, but not its lock line
            notes.append(
                f"newer than {lock_name} (a sync stopped before writing it); "
                "`fetcher sync` records it"
            )
    if current is None:
        state = "missing"
    elif current != (record.sha256, record.size):
        state = "damaged"
        notes.append(f"{current[1]:,} bytes on disk, sha256 {current[0][:12]}…")
    else:
        state = "present"
        problem = library.sidecar_problem(record.file, entry.key, record)
        if problem == SIDECAR_MISSING:
            notes.append("metadata sidecar missing; `fetcher sync` rewrites it")
        elif problem is not None:
            notes.append(f"metadata sidecar damaged ({problem}); `fetcher sync` rewrites it")
    return EntryStatus(
        entry.key,
        entry.kind,
        state,
        record.file,
        record.version,
        pinned,
        record.size,
        notes=tuple(notes),
    )


def compute(manifest: Manifest, lock: dict[str, LockRecord] | None = None) -> StatusReport:
    """The status of every entry, from local state only (no network, nothing written)."""
    from .owners import others

    library = Library(manifest.library)
    if lock is None:
        lock = read_lock(manifest.lock_path)
    template = manifest.settings.filename
    lock_name = manifest.lock_path.name
    keys = [e.key for e in manifest.entries]
    entries = [
        _entry_status(e, lock.get(e.key), library, template, lock_name) for e in manifest.entries
    ]
    other = others(library, manifest)
    found = orphans(library, keys, lock, other_keys=other.keys, other_files=other.files)
    for orphan in found:
        paper = next((f for f in orphan.files if not f.endswith(".json")), orphan.files[0])
        note = "kept; `fetcher sync --prune` deletes it"
        if orphan.leftover:
            note = (
                f"an older file of {orphan.key}, which the manifest still lists; "
                "`fetcher sync --prune` deletes it"
            )
        entries.append(
            EntryStatus(
                orphan.key,
                orphan.kind,
                "not in manifest",
                paper,
                orphan.version,
                size=orphan.size,
                notes=(note,),
            )
        )
    return StatusReport(
        entries,
        not_in_lock=[k for k in keys if k not in lock],
        lock_only=sorted(set(lock) - set(keys)),  # set(keys) once: O(n), not O(n^2)
        lock_exists=manifest.lock_path.exists(),
    )


@dataclass
class UpdateCheck:
    """What `--check-updates` learnt: the latest version of each id that came back, the
    requests it took, and the error of each id whose batch gave up."""

    versions: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    failed: dict[str, FetcherError] = field(default_factory=dict)


def latest_versions(
    manifest: Manifest,
    bases: Iterable[str],
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Clock | None = None,
    policy: Policy | None = None,
) -> UpdateCheck:
    """The latest arXiv version of each id, in one API request per 100 ids.

    Each batch is retried on its own (`session.ask_metadata`): one that fails after its
    retries costs only its own ids. The requests pass the same politeness gate as a
    sync, shared with any sync running on the library.
    """
    from .ids import parse
    from .session import ask_metadata, open_http

    wanted = [parse(b) for b in sorted(set(bases))]
    if not wanted:
        return UpdateCheck()
    state = Library(manifest.library).state
    http = open_http(
        manifest.settings,
        state if state.is_dir() else None,
        clock=clock,
        policy=policy,
        transport=transport,
    )
    with http:
        result = ask_metadata(http, manifest.settings.arxiv_api, wanted)
        versions = {key: meta.version for key, meta in result.found.items()}
        return UpdateCheck(versions, http.request_count, result.failed)


def status(
    manifest: Manifest,
    *,
    check_updates: bool = False,
    transport: httpx.BaseTransport | None = None,
    clock: Clock | None = None,
    policy: Policy | None = None,
) -> StatusReport:
    """The same as `fetcher status`; with `check_updates`, ask arXiv for newer versions.

    A failed update check does not raise: the local status is still worth having, so
    the error is kept in `update_error`.
    """
    report = compute(manifest)
    if not check_updates:
        return report
    report.checked_updates = True
    by_key = manifest.by_key()
    bases = [e.arxiv.base for e in manifest.entries if e.arxiv is not None]
    try:
        check = latest_versions(manifest, bases, transport=transport, clock=clock, policy=policy)
    except Cancelled:
        raise
    except FetcherError as exc:
        report.update_error = str(exc)
        return report
    report.requests = check.requests
    if check.failed:
        errors = list(dict.fromkeys(str(e) for e in check.failed.values()))
        asked = len(set(bases))
        report.update_error = (
            f"{len(check.failed)} of {asked} papers could not be checked: {'; '.join(errors)}"
        )
    latest = check.versions
    updated = []
    for item in report.entries:
        entry = by_key.get(item.key)
        newest = latest.get(item.key)
        if (
            entry is not None
            and newest is not None
            and item.version is not None
            and newest > item.version
        ):
            notes = item.notes
            if entry.arxiv is not None and entry.arxiv.version is not None:
                notes += (f"pinned to v{entry.arxiv.version}; `sync --upgrade` keeps the pin",)
            elif entry.sha256:
                notes += (
                    "its sha256 pin holds this version; `sync --upgrade` keeps it (change "
                    "or remove the pin to upgrade)",
                )
            item = replace(item, newer=newest, notes=notes)
        updated.append(item)
    report.entries = updated
    return report
