"""`fetcher sync`: plan what the library lacks, fetch it politely, commit it, report.

Decide, then act. The plan (`plan.py`) reads only local state (lock, sidecars, stat
cache), so a library that is complete costs no request and no heavy import. The fetch
runs two lanes side by side: arXiv (strictly one request at a time, metadata batched
first) and every other host (a few at once), so direct URLs never wait behind forty
arXiv PDFs. Repairs that need no network (a missing or damaged sidecar) are done first,
without building a client at all.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import __version__
from .errors import (
    INTERRUPTED,
    Blocked,
    Cancelled,
    FetcherError,
    LockedError,
    NotFound,
    UsageError,
)
from .library import (
    Library,
    LockRecord,
    Names,
    atomic_write_json,
    catalog_is_fresh,
    hold_library,
    read_lock,
    write_lock,
)
from .manifest import Entry, Manifest
from .plan import Plan, default_file, make_plan, plan_entry, select

if TYPE_CHECKING:
    import httpx

    from .arxiv_api import Metadata, PaperMeta
    from .download import Downloader, Fetched
    from .http import Clock, Http, Policy
    from .status import Orphan

__all__ = [
    "EntryReport",
    "Event",
    "Options",
    "Plan",
    "ProgressCallback",
    "Report",
    "Syncer",
    "default_file",
    "make_plan",
    "plan_entry",
    "sync",
]

Status = Literal["downloaded", "skipped", "failed", "would-download"]
ARXIV_SAFE_INTERVAL = 3.0


@dataclass
class EntryReport:
    """The outcome of one entry, as `--json` shows it."""

    key: str
    kind: str
    status: Status
    version: int | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "kind": self.kind, "status": self.status}
        if self.version is not None:
            data["version"] = self.version
        for name in ("path", "sha256", "size", "error", "reason"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.warnings:
            data["warnings"] = list(self.warnings)
        return data


@dataclass
class Report:
    entries: list[EntryReport]
    requests: int = 0
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    # not tied to one entry: --locked, a lock file that could not be written, --prune
    errors: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # library files --prune deleted

    @property
    def ok(self) -> bool:
        return not self.errors and all(e.status != "failed" for e in self.entries)

    @property
    def counts(self) -> dict[str, int]:
        counts = {"downloaded": 0, "skipped": 0, "failed": 0}
        for e in self.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ok": self.ok,
            "entries": [e.to_json() for e in self.entries],
            "counts": self.counts,
        }
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if self.errors:
            data["errors"] = list(self.errors)
        if self.pruned:
            data["pruned"] = list(self.pruned)
        if self.dry_run:
            data["dry_run"] = True
        return data


@dataclass
class Event:
    """Progress reaches the caller through these, never through prints."""

    kind: Literal["plan", "start", "bytes", "done", "warning", "retry", "waiting"]
    key: str | None = None
    total: int | None = None
    received: int | None = None
    expected: int | None = None
    report: EntryReport | None = None
    message: str | None = None


ProgressCallback = Callable[[Event], None]


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    locked: bool = False
    upgrade: bool = False
    prune: bool = False
    keys: tuple[str, ...] = ()
    wait: bool = True


def _relpath(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


def _internal(exc: BaseException) -> FetcherError:
    """An exception fetcher did not expect (a bug, or a library raising what it should
    not): it fails the one entry it hit, with a line worth reporting."""
    return FetcherError(f"internal error: {type(exc).__name__}: {exc}; please report it")


def _storage(exc: OSError, where: Path) -> FetcherError:
    from .download import storage_error

    return storage_error(exc, Path(exc.filename) if exc.filename else where)


# --- the lock file of a run ----------------------------------------------------------------


class _LockBook:
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
                f"{_storage(exc, self.path)}; the files were stored, and the next sync "
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


# --- the run -------------------------------------------------------------------------------


class Syncer:
    """One run of `fetcher sync` over one manifest."""

    def __init__(
        self,
        manifest: Manifest,
        options: Options | None = None,
        *,
        progress: ProgressCallback | None = None,
        clock: Clock | None = None,
        policy: Policy | None = None,
        transport: httpx.BaseTransport | None = None,
        cancel: threading.Event | None = None,
    ):
        self.manifest = manifest
        self.settings = manifest.settings
        self.options = options or Options()
        self.progress = progress or (lambda event: None)
        self.library = Library(manifest.library)
        # the library folder as reports show it; computed once (relpath per entry was
        # a fifth of a warm sync at 10,000 entries)
        self._shown_root = _relpath(self.library.root, manifest.path.parent)
        self.cancel = cancel or threading.Event()
        self._clock = clock
        self._policy = policy
        self._transport = transport
        self._report_lock = threading.Lock()
        self.reports: dict[str, EntryReport] = {}
        self.names = Names(self.library)
        self._lane_errors: list[BaseException] = []

    # the public entry point

    def run(self) -> Report:
        if self.options.locked and self.options.upgrade:
            raise UsageError(
                f"--upgrade changes {self.manifest.lock_path.name} and --locked forbids "
                "that; run `fetcher sync --upgrade` on its own and commit the lock"
            )
        if self.options.dry_run:
            return self._dry_run()
        select(self.manifest, self.options.keys)  # an unknown key: exit 2 before any write
        self.library.ensure()

        def on_wait() -> None:
            self.progress(Event("waiting", message="another sync holds the library; waiting"))

        with hold_library(
            self.library, wait=self.options.wait, cancel=self.cancel, on_wait=on_wait
        ):
            return self._run_locked()

    def _make_plan(self, lock: dict[str, LockRecord]) -> list[Plan]:
        plans = make_plan(
            self.manifest, lock, self.library, self.options.keys, upgrade=self.options.upgrade
        )
        return self._assign_names(plans, lock)

    def _dry_run(self) -> Report:
        lock = read_lock(self.manifest.lock_path)
        report = Report([], dry_run=True)
        for plan in self._make_plan(lock):
            status: Status = "skipped" if plan.action == "skip" else "would-download"
            report.entries.append(
                EntryReport(
                    plan.entry.key,
                    plan.entry.kind,
                    status,
                    version=plan.version,
                    path=self._display(plan.file) if plan.file else None,
                    reason=plan.reason,
                )
            )
        if self.options.prune:
            found, refusal = self._orphans(lock)
            if refusal:
                report.errors.append(refusal)
            for orphan in found:
                report.pruned.extend(self._display(name) for name in orphan.files)
        return report

    def _claim(self, entry: Entry, file: str) -> str:
        from .ids import stem_of

        return self.names.claim(entry.key, stem_of(entry.key), file)

    def _assign_names(self, plans: list[Plan], lock: dict[str, LockRecord]) -> list[Plan]:
        """Give every planned file a stem no other entry holds (see `library.Names`).

        Files the lock or a sidecar already gives to an entry keep their names, first in
        manifest order; then new names are claimed in manifest order. Names that need
        arXiv metadata are claimed later, by the (sequential) arXiv lane.
        """
        planned = {p.entry.key: p for p in plans}
        shared: set[str] = set()
        for entry in self.manifest.entries:
            plan = planned.get(entry.key)
            record = plan.record if plan is not None and plan.record else lock.get(entry.key)
            if (
                record is not None
                and record.kind == entry.kind
                and not self.names.hold(entry.key, record.file)
            ):
                shared.add(entry.key)
        out = []
        for plan in plans:
            entry = plan.entry
            if entry.key in shared and plan.record is not None:
                # two lock lines name one file: this entry gets a file of its own
                plan = Plan(
                    entry, "fetch", "file shared with another entry", None, None, plan.version
                )
            if plan.file is None and entry.kind == "url" and plan.action != "skip":
                plan = replace(plan, file=default_file(entry, self.settings.filename))
            if plan.record is None and plan.file is not None:
                file = self._claim(entry, plan.file)
                recovered = None
                if plan.reason != "url changed":  # else the sidecar describes the old URL
                    recovered = self.library.sidecar_record(file, entry.key)
                if recovered is not None and recovered.kind == entry.kind:
                    # the lock was lost; the sidecar knows the file
                    plan = plan_entry(
                        entry,
                        recovered,
                        self.library,
                        self.settings.filename,
                        upgrade=self.options.upgrade,
                    )
                else:
                    plan = replace(plan, file=file)
            out.append(plan)
        return out

    def _display(self, file: str) -> str:
        return file if self._shown_root == "." else os.path.join(self._shown_root, file)

    def _run_locked(self) -> Report:
        warnings: list[str] = []
        try:
            from .owners import register

            register(self.library, self.manifest)
        except OSError as exc:  # only --prune and partial cleaning need it: not fatal
            warnings.append(f"could not record this manifest in {self.library.state}: {exc}")
        self._clean_stale()
        lock = read_lock(self.manifest.lock_path)
        plans = self._make_plan(lock)
        wall = self._clock.time if self._clock else time.time
        book = _LockBook(self.manifest.lock_path, lock, wall, frozen=self.options.locked)
        if self.settings.arxiv_interval < ARXIV_SAFE_INTERVAL and any(
            p.entry.kind == "arxiv" and p.action != "skip" for p in plans
        ):
            warnings.append(
                f"arxiv_interval is {self.settings.arxiv_interval:g}s, below the 3s arXiv "
                "asks for; use it only against mirrors or test servers"
            )
            self.progress(Event("warning", message=warnings[-1]))
        self.progress(Event("plan", total=len(plans)))

        todo = [p for p in plans if p.action != "skip"]
        for plan in plans:
            if plan.action != "skip":
                continue
            assert plan.record is not None
            if lock.get(plan.entry.key) != plan.record:
                # present and intact, but the lock had lost it: the sidecar restores it
                if self.options.locked:
                    self._finish(plan, self._failed(plan, self._not_locked(plan)))
                    continue
                book.records[plan.entry.key] = plan.record
            self._finish(plan, self._skipped(plan))
        errors: list[str] = []
        if self.options.locked:
            todo = self._refuse_unlocked(todo, lock)
            errors = self._lock_only_errors(lock)
        else:  # entries removed from the manifest leave the lock (their files stay)
            book.drop_missing(e.key for e in self.manifest.entries)
        # sidecars rebuilt from what the library holds: no client, no request
        local = [p for p in todo if self._sidecar_only(p)]
        for plan in local:
            self._guard(plan, self._rewrite_sidecar, plan)
        remote = [p for p in todo if not self._sidecar_only(p)]
        requests = 0
        if remote:
            self.library.load_cache()  # before the lanes start: both of them remember
            requests = self._fetch_all(remote, book)
        book.flush()
        errors.extend(book.errors)
        self.library.save_cache()
        pruned: list[str] = []
        if self.options.prune and not errors:
            pruned = self._prune(book, errors)
        changed = bool(todo) or book.changed
        if changed or not catalog_is_fresh(self.library.root, self.manifest.path):
            from .catalog import refresh

            trouble = refresh(self.manifest, book.records, changed=True)
            if trouble:
                warnings.append(trouble)
                self.progress(Event("warning", message=trouble))
        ordered = []
        for plan in plans:
            report = self.reports.get(plan.entry.key)
            if report is None:  # its lane died of a bug: say so, never drop the entry
                cause = self._lane_errors[0] if self._lane_errors else RuntimeError("lost")
                report = self._failed(plan, _internal(cause))
            ordered.append(report)
        return Report(ordered, requests=requests, warnings=warnings, errors=errors, pruned=pruned)

    # the only changes --locked allows: bring back the exact locked bytes or sidecar
    LOCKED_REPAIRS = ("missing", "damaged", "sidecar missing", "sidecar damaged")

    def _refuse_unlocked(self, todo: list[Plan], lock: dict[str, LockRecord]) -> list[Plan]:
        """Under --locked only repairs to the locked state may run; the rest fail."""
        keep = []
        for plan in todo:
            locked = lock.get(plan.entry.key)
            if (
                locked is None
                or plan.record != locked
                or plan.reason not in self.LOCKED_REPAIRS
                or (plan.version is None and plan.entry.kind == "arxiv")
            ):
                self._finish(plan, self._failed(plan, self._not_locked(plan)))
            else:
                keep.append(plan)
        return keep

    def _lock_only_errors(self, lock: dict[str, LockRecord]) -> list[str]:
        """--locked: keys the lock has and the manifest lacks make the run fail."""
        keys = {e.key for e in self.manifest.entries}
        extra = sorted(k for k in lock if k not in keys)
        if not extra:
            return []
        return [
            f"{self.manifest.lock_path.name} has {len(extra)} "
            f"entr{'y' if len(extra) == 1 else 'ies'} not in the manifest "
            f"({', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}); --locked forbids "
            "removing them. Run `fetcher sync` without --locked and commit the lock"
        ]

    def _not_locked(self, plan: Plan) -> LockedError:
        return LockedError(
            f"{plan.entry.key} is not in {self.manifest.lock_path.name} (or its locked "
            "version was changed); --locked forbids adding it. Run `fetcher sync` without "
            "--locked and commit the lock"
        )

    # --prune and stale partial files: never another manifest's

    def _orphans(self, lock: dict[str, LockRecord]) -> tuple[list[Orphan], str | None]:
        """What --prune may delete, or why it must not run (another manifest that uses
        the library cannot be read, so its files cannot be told from leftovers)."""
        from .owners import others
        from .status import orphans

        other = others(self.library, self.manifest)
        if other.unreadable:
            first = other.unreadable[0]
            return [], (
                f"--prune did nothing: {self.library.root} is also used by {first.path}, "
                f"which cannot be read ({first.problem}); fix it, or delete it if it no "
                "longer uses this library, and prune again"
            )
        found = orphans(
            self.library,
            (e.key for e in self.manifest.entries),
            lock,
            other_keys=other.keys,
            other_files=other.files,
        )
        return found, None

    def _prune(self, book: _LockBook, errors: list[str]) -> list[str]:
        """Delete what fetcher stored for entries no longer in the manifest (and old files
        of entries still in it); say which. Only files the lock or a sidecar ties to such
        an entry go; a file the user put in the library, or one another manifest of the
        library still has, is never touched (`status.orphans`, `owners`)."""
        known = dict(book.original)
        known.update(book.records)
        found, refusal = self._orphans(known)
        if refusal:
            errors.append(refusal)
        removed = []
        for orphan in found:
            for name in orphan.files:
                try:
                    (self.library.root / name).unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    errors.append(f"cannot prune {self._display(name)}: {exc.strerror or exc}")
                    continue
                self.library.forget(name)
                removed.append(self._display(name))
        self.library.save_cache()
        return removed

    def _clean_stale(self) -> None:
        """Leftovers of dead runs (we hold the library lock): see `partial.clean_partials`.
        A partial of a key another manifest of the library has is that manifest's."""
        from .partial import clean_partials

        foreign: list[frozenset[str] | None] = []

        def keep_key(key: str) -> bool:
            if not foreign:
                from .owners import others

                other = others(self.library, self.manifest)
                foreign.append(None if other.unreadable else other.keys)
            keys = foreign[0]
            return keys is None or key in keys  # unreadable: keep every partial

        lock_path = self.manifest.lock_path
        clean_partials(
            self.library.partial_dir,
            [e.key for e in self.manifest.entries],
            time.time(),  # file times are wall-clock times, whatever clock the run uses
            temps=[
                (self.library.root, ""),
                (self.library.state, ""),
                (lock_path.parent, lock_path.name),
            ],
            keep_key=keep_key,
        )

    # reports

    def _finish(self, plan: Plan, report: EntryReport) -> None:
        with self._report_lock:
            self.reports[plan.entry.key] = report
        self.progress(Event("done", key=plan.entry.key, report=report))

    def _skipped(self, plan: Plan) -> EntryReport:
        record = plan.record
        assert record is not None
        return EntryReport(
            plan.entry.key,
            plan.entry.kind,
            "skipped",
            version=record.version,
            path=self._display(record.file),
            sha256=record.sha256,
            size=record.size,
        )

    def _failed(self, plan: Plan, exc: BaseException) -> EntryReport:
        return EntryReport(plan.entry.key, plan.entry.kind, "failed", error=str(exc))

    # sidecars rebuilt without a request

    def _sidecar_only(self, plan: Plan) -> bool:
        """A sidecar to rewrite from what the library holds: a url entry's always (its
        sidecar is the lock's record plus the manifest's fields), an arXiv entry's when
        the old sidecar still has the paper's metadata."""
        if plan.action != "meta" or plan.record is None:
            return False
        return plan.entry.kind == "url" or self._sidecar_meta(plan) is not None

    def _sidecar_meta(self, plan: Plan) -> PaperMeta | None:
        """The arXiv metadata the sidecar of this entry still holds for its version."""
        data = self.library.read_sidecar(plan.file) if plan.file else None
        if not data or data.get("key") != plan.entry.key or data.get("version") != plan.version:
            return None
        from .arxiv_api import PaperMeta

        try:
            return PaperMeta.from_json(data)
        except (KeyError, TypeError, ValueError):
            return None

    def _rewrite_sidecar(self, plan: Plan) -> EntryReport:
        entry, record = plan.entry, plan.record
        assert record is not None
        meta: dict[str, Any]
        if entry.kind == "url":
            meta = {"url": entry.url}
            if entry.title:
                meta["title"] = entry.title
            old = self.library.read_sidecar(record.file) or {}
            if old.get("key") == entry.key:  # what the server said last time, if known
                for name in ("final_url", "content_type", "etag", "last_modified"):
                    if old.get(name) is not None:
                        meta[name] = old[name]
            stamp = self.library.path_of(record.file).stat().st_mtime  # when it was stored
        else:
            paper = self._sidecar_meta(plan)
            assert paper is not None
            meta = paper.to_json()
            stamp = None
        self._write_sidecar(entry, record.file, record, meta, None, fetched_at=stamp)
        return self._repaired(plan)

    def _repaired(self, plan: Plan) -> EntryReport:
        report = self._skipped(plan)
        what = "damaged" if plan.reason == "sidecar damaged" else "missing"
        report.warnings.append(f"metadata sidecar was {what}; rewritten")
        return report

    # the two lanes

    def _fetch_all(self, todo: list[Plan], book: _LockBook) -> int:
        from concurrent.futures import ThreadPoolExecutor

        from .download import Downloader
        from .http import Policy, SystemClock
        from .session import open_http

        clock: Clock = self._clock or SystemClock(self.cancel)
        policy = self._policy or Policy()
        http = open_http(
            self.settings,
            self.library.state,
            clock=clock,
            policy=policy,
            transport=self._transport,
        )
        downloader = Downloader(http, self.library.partial_dir, policy, clock)
        arxiv_todo = [p for p in todo if p.entry.kind == "arxiv"]
        url_todo = [p for p in todo if p.entry.kind == "url"]
        try:
            with http, ThreadPoolExecutor(max_workers=policy.other_hosts_parallel + 1) as pool:
                futures = [pool.submit(self._arxiv_lane, arxiv_todo, http, downloader, book)]
                futures += [
                    pool.submit(self._guard, p, self._fetch_url, p, http, downloader, book)
                    for p in url_todo
                ]
                self._wait(futures, http)
        except Cancelled:
            book.flush()  # what was committed before the stop is in the lock too
            raise
        finally:
            self.library.save_cache()
        return http.request_count

    def _wait(self, futures: list[Any], http: Http) -> None:
        """Wait for the lanes; Ctrl-C (or `cancel` set by a caller) stops the workers:
        sleeps end at once and reads blocked on a socket are cut (`Http.abort`)."""
        from concurrent.futures import TimeoutError as FutureTimeout  # not builtin on 3.10

        try:
            for future in futures:
                while True:
                    try:
                        future.result(timeout=0.2)
                        break
                    except FutureTimeout:
                        if self.cancel.is_set():
                            http.abort()
                    except Exception as exc:  # a lane died of a bug: its entries say so
                        self._lane_errors.append(exc)
                        break
        except KeyboardInterrupt:
            self.cancel.set()
            http.abort()
            for future in futures:
                with contextlib.suppress(Exception):
                    future.result()
            raise Cancelled(INTERRUPTED) from None
        if self.cancel.is_set():
            raise Cancelled(INTERRUPTED)

    def _guard(self, plan: Plan, fn: Callable[..., EntryReport], *args: Any) -> None:
        """Run one entry; whatever goes wrong fails that entry, and the run goes on."""
        if self.cancel.is_set():
            return
        self.progress(Event("start", key=plan.entry.key))
        try:
            report = fn(*args)
        except Cancelled:
            return
        except FetcherError as exc:
            report = self._failed(plan, exc)
        except OSError as exc:  # a disk problem outside the download (sidecar, lock file)
            report = self._failed(plan, _storage(exc, self.library.root))
        except Exception as exc:  # the last resort: one entry fails, not the whole run
            report = self._failed(plan, _internal(exc))
        self._finish(plan, report)

    def _arxiv_lane(
        self, plans: list[Plan], http: Http, downloader: Downloader, book: _LockBook
    ) -> None:
        if not plans:
            return
        metas: dict[str, PaperMeta] = {}
        failed: dict[str, FetcherError] = {}
        need = [p for p in plans if self._needs_api(p)]
        if need:
            try:
                result = self._metadata(need, http)
            except Cancelled:
                return
            except Exception as exc:  # FetcherError or a bug: those entries fail
                error = exc if isinstance(exc, FetcherError) else _internal(exc)
                for plan in need:
                    self._finish(plan, self._failed(plan, error))
                asked = {id(p) for p in need}
                plans = [p for p in plans if id(p) not in asked]
            else:
                metas, failed = result.found, result.failed
        for plan in plans:
            if self.cancel.is_set():
                return
            if http.blocked:
                self._finish(plan, self._failed(plan, Blocked(http.blocked)))
                continue
            api_key = self._api_key(plan)
            if api_key in failed:  # its metadata batch gave up: only its entries fail
                self._finish(plan, self._failed(plan, failed[api_key]))
                continue
            self._guard(plan, self._fetch_arxiv, plan, metas.get(api_key), http, downloader, book)

    def _needs_api(self, plan: Plan) -> bool:
        """The API is asked only when the lock and the sidecar cannot say what to fetch."""
        if plan.version is None or plan.action == "meta" or plan.file is None:
            return True
        sidecar = self.library.read_sidecar(plan.file)
        return sidecar is None or sidecar.get("version") != plan.version or "id" not in sidecar

    @staticmethod
    def _api_key(plan: Plan) -> str:
        assert plan.entry.arxiv is not None
        if plan.version is not None:
            return str(plan.entry.arxiv.with_version(plan.version))
        return plan.entry.arxiv.base

    def _metadata(self, plans: list[Plan], http: Http) -> Metadata:
        from .ids import parse
        from .session import ask_metadata

        wanted = [parse(self._api_key(p)) for p in plans]
        return ask_metadata(
            http, self.settings.arxiv_api, wanted, on_retry=self._on_retry("arXiv API")
        )

    def _on_retry(self, key: str) -> Callable[[int, BaseException, float], None]:
        def report(attempt: int, exc: BaseException, wait: float) -> None:
            self.progress(
                Event("retry", key=key, message=f"{exc}; attempt {attempt + 1} in {wait:.1f}s")
            )

        return report

    def _fetch_arxiv(
        self,
        plan: Plan,
        meta: PaperMeta | None,
        http: Http,
        downloader: Downloader,
        book: _LockBook,
    ) -> EntryReport:
        entry = plan.entry
        assert entry.arxiv is not None
        if meta is None and self._needs_api(plan):
            raise NotFound(
                f"{self._api_key(plan)} not found on arXiv (a well-formed id that arXiv does "
                "not know: check it for typos)"
            )
        if meta is None:
            sidecar = self.library.read_sidecar(plan.file or "") or {}
            from .arxiv_api import PaperMeta

            meta = PaperMeta.from_json(sidecar)
        record = plan.record
        if (
            plan.action == "fetch"
            and plan.reason == "upgrade check"
            and record is not None
            and record.version == meta.version
        ):
            return self._skipped(replace(plan, record=record))
        file = plan.file if plan.file and plan.version == meta.version else None
        if file is None:  # claimed here, in manifest order: the arXiv lane is sequential
            file = self._claim(entry, default_file(entry, self.settings.filename, meta))
        if plan.action == "meta" and record is not None:
            self._write_sidecar(entry, file, record, meta.to_json(), None)
            return self._repaired(plan)
        url = self.settings.arxiv_pdf.format(id=meta.versioned_id)
        return self._download(plan, url, file, meta.version, meta.to_json(), http, downloader, book)

    def _fetch_url(
        self, plan: Plan, http: Http, downloader: Downloader, book: _LockBook
    ) -> EntryReport:
        entry = plan.entry
        assert entry.url is not None
        file = plan.file or self._claim(entry, default_file(entry, self.settings.filename))
        extra: dict[str, Any] = {"url": entry.url}
        if entry.title:
            extra["title"] = entry.title
        return self._download(plan, entry.url, file, None, extra, http, downloader, book)

    def _download(
        self,
        plan: Plan,
        url: str,
        file: str,
        version: int | None,
        meta: dict[str, Any],
        http: Http,
        downloader: Downloader,
        book: _LockBook,
    ) -> EntryReport:
        from .download import ResumeMismatch, commit
        from .http import retrying

        entry = plan.entry
        dest = self.library.path_of(file)
        old = plan.record
        same_source = old is not None and old.url == url
        # what the body should hash to: a resumed body that does not is fetched again
        trusted = old.sha256 if old is not None and same_source else None

        def progress(received: int, expected: int | None) -> None:
            self.progress(Event("bytes", key=entry.key, received=received, expected=expected))

        # one deadline for the entry: every attempt, backoff and body read fits in it
        deadline = http.clock.time() + http.policy.entry_deadline

        def fetch() -> Fetched:
            return downloader.fetch(
                url,
                file,
                expect=entry.format,
                max_size=self.settings.max_size,
                pin=entry.sha256,
                progress=progress,
                key=entry.key,
                deadline=deadline,
                trusted=trusted,
            )

        def attempt() -> Fetched:
            try:
                return fetch()
            except ResumeMismatch as exc:
                # the kept bytes were dropped: once more from zero, in the same attempt,
                # before anything is believed about the source
                self.progress(Event("retry", key=entry.key, message=f"{exc}; from the start"))
                return fetch()

        fetched = retrying(
            attempt,
            policy=http.policy,
            clock=http.clock,
            on_retry=self._on_retry(entry.key),
            deadline=deadline,
        )
        warnings: list[str] = []
        if same_source and old is not None and old.sha256 != fetched.sha256 and not entry.sha256:
            if self.options.locked:
                downloader.discard(file)
                raise LockedError(
                    f"{url} now hashes to {fetched.sha256[:12]}…, not {old.sha256[:12]}… as "
                    "locked (the source was rebuilt); --locked forbids the change. Sync "
                    "without --locked to accept it"
                )
            warnings.append(
                f"upstream changed: {url} now hashes to {fetched.sha256[:12]}… "
                f"(locked {old.sha256[:12]}…); accepted and the lock updated"
            )
            self.progress(Event("warning", key=entry.key, message=f"{entry.key}: {warnings[-1]}"))
        if self.options.locked and (
            old is None
            or (old.file, old.sha256, old.size, old.version)
            != (file, fetched.sha256, fetched.size, version)
        ):
            downloader.discard(file)
            raise LockedError(
                f"{entry.key}: the download ({file}, {fetched.size:,} bytes) does not match "
                f"{self.manifest.lock_path.name}; --locked forbids the change. Sync without "
                "--locked to accept it"
            )
        commit(fetched, dest)
        record = LockRecord(
            kind=entry.kind,
            file=file,
            url=url,
            sha256=fetched.sha256,
            size=fetched.size,
            version=version,
        )
        self.library.remember(file, fetched.sha256)
        # the sidecar before the lock line: after a crash in between, the sidecar tells
        # the next sync that the file on disk is the new one (`plan_entry`)
        try:
            self._write_sidecar(entry, file, record, meta, fetched)
        except OSError as exc:
            warnings.append(
                f"{_storage(exc, self.library.sidecar_path(file))}; the file is stored and "
                "the next sync writes its metadata sidecar"
            )
        moved = old is not None and old.file != file
        # an upgrade or a renamed template: the lock names the new file before the old
        # one goes, so no crash can leave a lock naming a deleted file
        if book.set(entry.key, record, now=moved) and old is not None and moved:
            self._remove_old(old, file)
        return EntryReport(
            entry.key,
            entry.kind,
            "downloaded",
            version=version,
            path=self._display(file),
            sha256=fetched.sha256,
            size=fetched.size,
            warnings=warnings,
        )

    def _remove_old(self, old: LockRecord, new_file: str) -> None:
        """The file (and sidecar) an entry had before: each step on its own, so a file the
        user already deleted does not keep its sidecar forever."""
        with contextlib.suppress(OSError):
            self.library.path_of(old.file).unlink()
        self.library.forget(old.file)
        if Path(old.file).stem != Path(new_file).stem:  # else it is the new sidecar
            with contextlib.suppress(OSError):
                self.library.sidecar_path(old.file).unlink()
            self.library.forget(Path(old.file).stem + ".json")

    def _write_sidecar(
        self,
        entry: Entry,
        file: str,
        record: LockRecord,
        meta: dict[str, Any],
        fetched: Fetched | None,
        *,
        fetched_at: float | None = None,
    ) -> None:
        data: dict[str, Any] = {"key": entry.key, "kind": entry.kind, "file": file}
        data.update(meta)
        if entry.tags:
            data["tags"] = list(entry.tags)
        if entry.kind == "url" and fetched is not None:
            data.update(
                final_url=fetched.final_url,
                content_type=fetched.content_type,
                etag=fetched.etag,
                last_modified=fetched.last_modified,
            )
        when = datetime.now(timezone.utc)
        if fetched_at is not None:
            when = datetime.fromtimestamp(fetched_at, timezone.utc)
        data.update(
            sha256=record.sha256,
            size=record.size,
            source_url=record.url,
            fetched_at=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            fetcher=__version__,
        )
        atomic_write_json(self.library.sidecar_path(file), data)
        if file == record.file:
            self.library.remember_sidecar(record)


def sync(
    manifest: Manifest,
    options: Options | None = None,
    *,
    progress: ProgressCallback | None = None,
    clock: Clock | None = None,
    policy: Policy | None = None,
    transport: httpx.BaseTransport | None = None,
    cancel: threading.Event | None = None,
) -> Report:
    """The same work as `fetcher sync`: bring the library in line with the manifest.

    `clock`, `policy` and `transport` replace the real time, the retry limits and the
    network (tests, offline runs); setting `cancel` stops the run as Ctrl-C does.
    """
    syncer = Syncer(
        manifest,
        options,
        progress=progress,
        clock=clock,
        policy=policy,
        transport=transport,
        cancel=cancel,
    )
    return syncer.run()
