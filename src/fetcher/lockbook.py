"""The lock file of one sync run, and what `--locked` allows.

Both lanes record what they commit here from their own threads; writing the lock
atomically and at most once a second keeps a crash from losing more than a second of
work without rewriting the file after every entry. `--locked` decisions are pure
functions of the plans and the lock, so they are easy to test apart from a run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import FetcherError, LockedError
from .library import LockRecord, write_lock
from .plan import Plan

__all__ = [
    "LOCKED_REPAIRS",
    "LockBook",
    "allowed_when_locked",
    "lock_only_errors",
    "not_locked",
    "storage_problem",
]

# the only changes --locked allows: bring back the exact locked bytes or sidecar
LOCKED_REPAIRS = ("missing", "damaged", "sidecar missing", "sidecar damaged")


def storage_problem(exc: OSError, where: Path) -> FetcherError:
    """An OSError as the message a user can act on (`download.storage_error`)."""
    from .download import storage_error

    return storage_error(exc, Path(exc.filename) if exc.filename else where)


class LockBook:
    """The lock records of a run, written atomically and not too often.

    A write that fails (disk full, permissions) does not fail the entry whose file is
    already stored: it becomes a run-level error (`errors`), and the sidecars let the next
    sync rebuild the lines that did not reach the disk.
    """

    def __init__(
        self,
        path: Path,
        records: dict[str, LockRecord],
        clock: Callable[[], float],
        *,
        frozen: bool = False,
    ):
        self.path = path
        self.records = dict(records)
        self.original = dict(records)
        self.frozen = frozen  # --locked: the lock file is never written
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._clock = clock
        self._last_write = 0.0

    def _write(self) -> bool:
        try:
            write_lock(self.path, self.records)
        except OSError as exc:
            error = (
                f"{storage_problem(exc, self.path)}; the files were stored, and the next sync "
                f"records them in {self.path.name}"
            )
            if error not in self.errors:
                self.errors.append(error)
            return False
        return True

    def set(self, key: str, record: LockRecord, *, now: bool = False) -> bool:
        """Record `key`; the file is written at most once a second, or at once with `now`.
        False if that write failed."""
        with self._lock:
            self.records[key] = record
            if self.frozen:
                return True
            t = self._clock()
            if now or t - self._last_write >= 1.0:
                if not self._write():
                    return False
                self._last_write = t
            return True

    def drop_missing(self, keys: Iterable[str]) -> None:
        keep = set(keys)
        with self._lock:
            for key in list(self.records):
                if key not in keep:
                    del self.records[key]

    @property
    def changed(self) -> bool:
        return self.records != self.original

    def flush(self) -> None:
        with self._lock:
            if self.frozen:
                return
            if self.changed or not self.path.exists():
                self._write()


# --- --locked ------------------------------------------------------------------------------


def allowed_when_locked(plan: Plan, lock: dict[str, LockRecord]) -> bool:
    """Under --locked only repairs to the locked state may run."""
    locked = lock.get(plan.entry.key)
    return not (
        locked is None
        or plan.record != locked
        or plan.reason not in LOCKED_REPAIRS
        or (plan.version is None and plan.entry.kind == "arxiv")
    )


def lock_only_errors(
    lock: dict[str, LockRecord], manifest_keys: Iterable[str], lock_name: str
) -> list[str]:
    """--locked: keys the lock has and the manifest lacks make the run fail."""
    keys = set(manifest_keys)
    extra = sorted(k for k in lock if k not in keys)
    if not extra:
        return []
    return [
        f"{lock_name} has {len(extra)} "
        f"entr{'y' if len(extra) == 1 else 'ies'} not in the manifest "
        f"({', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}); --locked forbids "
        "removing them. Run `fetcher sync` without --locked and commit the lock"
    ]


def not_locked(plan: Plan, lock_name: str) -> LockedError:
    """Why --locked fails an entry that would add to or change the lock."""
    return LockedError(
        f"{plan.entry.key} is not in {lock_name} (or its locked "
        "version was changed); --locked forbids adding it. Run `fetcher sync` without "
        "--locked and commit the lock"
    )
