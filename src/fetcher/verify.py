"""`fetcher verify`: re-hash every library file against `manifest.lock`.

Unlike sync, verify ignores the stat cache: it catches a flipped bit that left size and
mtime alone. Fresh hashes go back into the cache, so the next sync sees (and repairs)
exactly what verify found. Files are hashed two at a time in 1 MiB reads: hashlib
releases the GIL, so a second thread keeps a second core busy on fast disks.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import Cancelled, FetcherError
from .library import (
    HASH_BLOCK,
    INDEX_HTML,
    INDEX_MD,
    SIDECAR_MISSING,
    Library,
    LockRecord,
    hash_file,
    hold_library,
    read_lock,
    sidecar_name,
)
from .manifest import Manifest

ProblemKind = Literal["missing", "damaged", "unexpected", "unsynced"]
WORKERS = 2
BYTES_PER_UPDATE = 8 * HASH_BLOCK  # progress callbacks at most every 8 MiB per file
BATCH_BYTES = 8 * HASH_BLOCK  # small files go to the workers in batches of about this much
BATCH_FILES = 256
Progress = Callable[[int, int], None]
Checked = tuple["str | None", "Problem | None"]  # (fresh digest to cache, problem)
_Item = tuple[str, LockRecord, Path, os.stat_result]  # key, record, path, stat before hashing


@dataclass(frozen=True)
class Problem:
    """One thing verify found: `file` is a library file name ("" for an unsynced entry)."""

    kind: ProblemKind
    file: str
    key: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "key": self.key, "detail": self.detail}


def verify(
    manifest: Manifest,
    *,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
    workers: int = WORKERS,
) -> list[Problem]:
    """Every missing, damaged, unexpected or never-synced file of the library.

    `progress(done_bytes, total_bytes)` is called as bytes are hashed. A running sync
    is waited for (`on_wait` is called once if so), and a sync started meanwhile waits
    for verify, so neither sees the other's half-finished work.
    """
    library = Library(manifest.library)
    with _held(library, on_wait):
        return _verify(manifest, library, progress, max(1, workers))


@contextlib.contextmanager
def _held(library: Library, on_wait: Callable[[], None] | None) -> Iterator[None]:
    if not library.state.is_dir():  # never synced: nothing to wait for, nothing to create
        yield
        return
    with hold_library(library, wait=True, on_wait=on_wait):
        yield


class _Counter:
    """Bytes hashed so far across worker threads; reports through one lock.

    `stop` is set on Ctrl-C so the workers give up at their next block.
    """

    def __init__(self, total: int, progress: Progress | None):
        self.total = total
        self.done = 0
        self.progress = progress
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.progress is None:
            return
        with self._lock:
            self.done += n
            self.progress(self.done, self.total)


def hash_with_progress(path: Path, counter: _Counter) -> tuple[str, int]:
    """sha256 and size (`library.hash_file`), counted into `counter` every 8 MiB and
    stopped at the next block once `counter.stop` is set."""
    pending = 0

    def block(n: int) -> None:
        nonlocal pending
        if counter.stop.is_set():
            raise Cancelled("verify interrupted; nothing was changed")
        pending += n
        if pending >= BYTES_PER_UPDATE:
            counter.add(pending)
            pending = 0

    digest, size = hash_file(path, block)
    counter.add(pending)
    return digest, size


def _verify(
    manifest: Manifest, library: Library, progress: Progress | None, workers: int
) -> list[Problem]:
    lock = read_lock(manifest.lock_path)
    problems: list[Problem] = []
    for entry in manifest.entries:
        if entry.key not in lock:
            problems.append(
                Problem(
                    "unsynced",
                    "",
                    entry.key,
                    "in the manifest but not in manifest.lock; `fetcher sync` fetches it",
                )
            )

    to_hash: list[_Item] = []
    for key, record in sorted(lock.items()):
        try:
            path = library.path_of(record.file)
        except FetcherError:
            problems.append(Problem("damaged", record.file, key, "unsafe file name in the lock"))
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            problems.append(Problem("missing", record.file, key, "not in the library"))
            continue
        except OSError as exc:
            problems.append(Problem("damaged", record.file, key, f"cannot read: {exc.strerror}"))
            continue
        if not stat.S_ISREG(st.st_mode):  # lstat: a link or a folder (one stat, not three)
            problems.append(
                Problem("damaged", record.file, key, "not a plain file (a link or a folder)")
            )
            continue
        to_hash.append((key, record, path, st))
        sidecar = library.sidecar_path(record.file).name
        trouble = library.sidecar_problem(record.file, key, record, trust_cache=False)
        if trouble == SIDECAR_MISSING:
            problems.append(
                Problem(
                    "missing",
                    sidecar,
                    key,
                    "metadata sidecar; `fetcher sync` rewrites it",
                )
            )
        elif trouble is not None:
            problems.append(
                Problem(
                    "damaged",
                    sidecar,
                    key,
                    f"metadata sidecar: {trouble}; `fetcher sync` rewrites it",
                )
            )

    counter = _Counter(sum(item[3].st_size for item in to_hash), progress)

    def check(item: _Item) -> Checked:
        key, record, path, _ = item
        try:
            digest, size = hash_with_progress(path, counter)
        except OSError as exc:
            return None, Problem("damaged", record.file, key, f"cannot read: {exc.strerror or exc}")
        fresh = digest
        if (digest, size) == (record.sha256, record.size):
            return fresh, None
        return fresh, Problem(
            "damaged",
            record.file,
            key,
            f"sha256 {digest[:12]}… size {size:,}; locked {record.sha256[:12]}… "
            f"size {record.size:,}",
        )

    def check_batch(batch: list[_Item]) -> list[Checked]:
        return [check(item) for item in batch]

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(check_batch, batch) for batch in _batches(to_hash)]
        found = [checked for f in futures for checked in f.result()]
        for (_, record, _, before), (fresh, _) in zip(to_hash, found, strict=True):
            if fresh is not None:  # the next sync sees what verify saw (if still so)
                library.remember(record.file, fresh, before)
    except KeyboardInterrupt:
        counter.stop.set()
        raise Cancelled("verify interrupted; nothing was changed") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        library.save_cache()
    problems.extend(p for _, p in found if p is not None)
    problems.extend(_unexpected(manifest, library, lock))
    return problems


def _batches(items: list[_Item]) -> Iterator[list[_Item]]:
    """Consecutive groups of about `BATCH_BYTES` (a large file alone): one future per
    2 KB file cost more than hashing it (10,000 files: 0.5 s of thread hand-offs)."""
    batch: list[_Item] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[3].st_size
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _unexpected(manifest: Manifest, library: Library, lock: dict[str, LockRecord]) -> list[Problem]:
    from .owners import others
    from .status import orphans

    other = others(library, manifest)
    known = {r.file for r in lock.values()} | {sidecar_name(r.file) for r in lock.values()}
    known |= {INDEX_MD, INDEX_HTML} | other.files
    left_by: dict[str, str] = {}
    keys = (e.key for e in manifest.entries)
    for orphan in orphans(library, keys, lock, other_keys=other.keys, other_files=other.files):
        for name in orphan.files:
            left_by[name] = (
                f"an older file of {orphan.key}, which the manifest still lists"
                if orphan.leftover
                else f"left from {orphan.key}, no longer in the manifest"
            )
    problems = []
    names = [name for name in library.files() if name not in known]
    owners = _sidecar_owners(library, names)
    for name in names:
        if owners.get(name) in other.keys:
            continue  # stored for another manifest of this library, not yet in its lock
        if name in left_by:
            detail = f"{left_by[name]}; `fetcher sync --prune` deletes it"
        elif name in owners:  # the lock lost it; its sidecar still knows the entry
            detail = f"stored for {owners[name]} but not in manifest.lock; `fetcher sync` adds it"
        else:
            detail = "not described by manifest.lock (not stored by fetcher; never deleted)"
        problems.append(Problem("unexpected", name, None, detail))
    return problems


def _sidecar_owners(library: Library, names: list[str]) -> dict[str, str]:
    """Paper and sidecar names whose sidecar names the entry they were stored for."""
    owners: dict[str, str] = {}
    for name, key, file, _ in library.sidecars(names):
        owners[name] = key
        owners[file] = key
    return owners


__all__ = ["Problem", "ProblemKind", "verify"]
