"""`fetcher verify`: re-hash every library file against `manifest.lock`.

Unlike sync, verify ignores the stat cache: it catches a flipped bit that left size and
mtime alone. Fresh hashes go back into the cache, so the next sync sees (and repairs)
exactly what verify found. Files are hashed two at a time in 1 MiB reads: hashlib
releases the GIL, so a second thread keeps a second core busy on fast disks.
"""

from __future__ import annotations

import contextlib
import hashlib
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import Cancelled, FetcherError
from .library import HASH_BLOCK, Library, LockRecord, block_buffer, read_lock
from .manifest import Manifest

ProblemKind = Literal["missing", "damaged", "unexpected", "unsynced"]
WORKERS = 2
BYTES_PER_UPDATE = 8 * HASH_BLOCK  # progress callbacks at most every 8 MiB per file
BATCH_BYTES = 8 * HASH_BLOCK  # small files go to the workers in batches of about this much
BATCH_FILES = 256
Progress = Callable[[int, int], None]
Checked = tuple["str | None", "Problem | None"]  # (fresh digest to cache, problem)


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
    with _sync_lock(library, on_wait):
        return _verify(manifest, library, progress, max(1, workers))


@contextlib.contextmanager
def _sync_lock(library: Library, on_wait: Callable[[], None] | None) -> Iterator[None]:
    if not library.state.is_dir():  # never synced: nothing to wait for, nothing to create
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(str(library.state / "sync.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


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
    """sha256 and size in 1 MiB `readinto` blocks: no per-block allocation."""
    digest = hashlib.sha256()
    size = 0
    pending = 0
    with open(path, "rb", buffering=0) as fh:
        buf = block_buffer()
        view = memoryview(buf)
        while n := fh.readinto(buf):
            if counter.stop.is_set():
                raise Cancelled("verify interrupted; nothing was changed")
            digest.update(view[:n])
            size += n
            pending += n
            if pending >= BYTES_PER_UPDATE:
                counter.add(pending)
                pending = 0
    counter.add(pending)
    return digest.hexdigest(), size


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


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

    to_hash: list[tuple[str, LockRecord, Path, tuple[int, int]]] = []
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
        to_hash.append((key, record, path, (st.st_size, st.st_mtime_ns)))
        sidecar = library.sidecar_path(record.file)
        if not sidecar.is_file():
            problems.append(
                Problem(
                    "missing",
                    sidecar.name,
                    key,
                    "metadata sidecar; `fetcher sync` rewrites it without downloading",
                )
            )

    counter = _Counter(sum(st[0] for *_, st in to_hash), progress)

    def check(item: tuple[str, LockRecord, Path, tuple[int, int]]) -> Checked:
        key, record, path, before = item
        try:
            digest, size = hash_with_progress(path, counter)
        except OSError as exc:
            return None, Problem("damaged", record.file, key, f"cannot read: {exc.strerror or exc}")
        fresh = digest if _stat_key(path) == before else None
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

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(check_batch, batch) for batch in _batches(to_hash)]
        found = [checked for f in futures for checked in f.result()]
        for (_, record, _, _), (fresh, _) in zip(to_hash, found, strict=True):
            if fresh is not None:  # the next sync sees what verify saw
                library.remember(record.file, fresh)
    except KeyboardInterrupt:
        counter.stop.set()
        raise Cancelled("verify interrupted; nothing was changed") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        library.save_cache()
    problems.extend(p for _, p in found if p is not None)
    problems.extend(_unexpected(manifest, library, lock))
    return problems


_Item = tuple[str, LockRecord, Path, tuple[int, int]]  # key, record, path, (size, mtime_ns)


def _batches(items: list[_Item]) -> Iterator[list[_Item]]:
    """Consecutive groups of about `BATCH_BYTES` (a large file alone): one future per
    2 KB file cost more than hashing it (10,000 files: 0.5 s of thread hand-offs)."""
    batch: list[_Item] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[3][0]
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _unexpected(manifest: Manifest, library: Library, lock: dict[str, LockRecord]) -> list[Problem]:
    from .status import orphans

    known = {r.file for r in lock.values()} | {Path(r.file).stem + ".json" for r in lock.values()}
    known |= {"index.md", "index.html"}
    left_by: dict[str, str] = {}
    for orphan in orphans(library, (e.key for e in manifest.entries), lock):
        for name in orphan.files:
            left_by[name] = orphan.key
    problems = []
    names = [name for name in library.files() if name not in known]
    owners = _sidecar_owners(library, names)
    for name in names:
        if name in left_by:
            detail = (
                f"left from {left_by[name]}, no longer in the manifest; "
                "`fetcher sync --prune` deletes it"
            )
        elif name in owners:  # the lock lost it; its sidecar still knows the entry
            detail = f"stored for {owners[name]} but not in manifest.lock; `fetcher sync` adds it"
        else:
            detail = "not described by manifest.lock (not stored by fetcher; never deleted)"
        problems.append(Problem("unexpected", name, None, detail))
    return problems


def _sidecar_owners(library: Library, names: list[str]) -> dict[str, str]:
    """Paper and sidecar names whose sidecar names the entry they were stored for."""
    owners: dict[str, str] = {}
    for name in names:
        if not name.endswith(".json"):
            continue
        data = library.read_sidecar(name)
        if data is None:
            continue
        key, file = data.get("key"), data.get("file")
        if isinstance(key, str) and isinstance(file, str) and Path(file).stem + ".json" == name:
            owners[name] = key
            owners[file] = key
    return owners


__all__ = ["Problem", "ProblemKind", "verify"]
