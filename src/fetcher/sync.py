"""`fetcher sync`: plan what the library lacks, fetch it politely, commit it, report.

Decide, then act. The plan reads only local state (lock, sidecars, stat cache), so a
library that is complete costs no request and no heavy import. The fetch runs two lanes
side by side: arXiv (strictly one request at a time, metadata batched first) and every
other host (a few at once), so direct URLs never wait behind forty arXiv PDFs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import __version__
from .errors import (
    Blocked,
    Cancelled,
    EntryError,
    FetcherError,
    LibraryBusy,
    LockedError,
    NotFound,
    UsageError,
)
from .library import (
    Library,
    LockRecord,
    Names,
    atomic_write_json,
    read_lock,
    render_stem,
    write_lock,
)
from .manifest import Entry, Manifest

if TYPE_CHECKING:
    import httpx

    from .arxiv_api import PaperMeta
    from .download import Downloader, Fetched
    from .http import Clock, Http, Policy

Status = Literal["downloaded", "skipped", "failed", "would-download"]
ARXIV_SAFE_INTERVAL = 3.0
INTERRUPTED = "interrupted; partial downloads are kept and resume next time"


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
    errors: list[str] = field(default_factory=list)  # not tied to one entry (--locked)
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


# --- the plan (local state only) -------------------------------------------------------


@dataclass
class Plan:
    """What to do for one entry, decided from local state alone."""

    entry: Entry
    action: Literal["skip", "fetch", "meta"]
    reason: str
    record: LockRecord | None = None
    file: str | None = None
    version: int | None = None  # the arXiv version to fetch when already known


def _relpath(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


def _record_from_sidecar(library: Library, entry: Entry, file: str) -> LockRecord | None:
    data = library.read_sidecar(file)
    if not data or data.get("key") != entry.key:
        return None
    try:
        return LockRecord(
            kind=entry.kind,
            file=file,
            url=str(data["source_url"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            version=int(data["version"]) if data.get("version") is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


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


def _template_needs_meta(template: str) -> bool:
    return any(f"{{{f}}}" in template for f in ("id", "version", "title", "first_author", "year"))


def plan_entry(
    entry: Entry,
    record: LockRecord | None,
    library: Library,
    template: str,
    *,
    upgrade: bool = False,
) -> Plan:
    """Decide skip or fetch for one entry. Reads the disk, never the network."""
    if record is not None and record.kind != entry.kind:
        record = None
    if record is not None:
        if (
            entry.kind == "arxiv"
            and entry.arxiv
            and entry.arxiv.version is not None
            and (record.version != entry.arxiv.version)
        ):
            return Plan(entry, "fetch", "pinned version changed", None, None, entry.arxiv.version)
        if entry.kind == "url" and record.url != entry.url:
            return Plan(entry, "fetch", "url changed", None)
        if entry.sha256 and record.sha256 != entry.sha256:
            return Plan(entry, "fetch", "sha256 pin changed", record, record.file, record.version)
    else:
        # No lock line (first sync, or the lock was lost): the sidecar may know the file.
        guess = None if _template_needs_meta(template) else default_file(entry, template)
        if guess is not None:
            record = _record_from_sidecar(library, entry, guess)
        if record is None:
            version = entry.arxiv.version if entry.arxiv else None
            return Plan(entry, "fetch", "new", None, guess, version)

    version = record.version
    if entry.kind == "arxiv" and upgrade and entry.arxiv and entry.arxiv.version is None:
        version = None  # ask the API for the latest
    current = library.current_hash(record.file)
    if current is None:
        return Plan(entry, "fetch", "missing", record, record.file, version)
    if current != (record.sha256, record.size):
        return Plan(entry, "fetch", "damaged", record, record.file, version)
    if upgrade and version is None and entry.kind == "arxiv":
        return Plan(entry, "fetch", "upgrade check", record, record.file, None)
    if not library.sidecar_path(record.file).exists():
        return Plan(entry, "meta", "sidecar missing", record, record.file, record.version)
    return Plan(entry, "skip", "present and intact", record, record.file, record.version)


def make_plan(
    manifest: Manifest,
    lock: dict[str, LockRecord],
    library: Library,
    options: Options,
) -> list[Plan]:
    entries = _select(manifest, options.keys)
    return [
        plan_entry(e, lock.get(e.key), library, manifest.settings.filename, upgrade=options.upgrade)
        for e in entries
    ]


def _select(manifest: Manifest, keys: Sequence[str]) -> list[Entry]:
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


# --- acting --------------------------------------------------------------------------------


class _LockBook:
    """The lock records of a run, written atomically and not too often."""

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
        self._lock = threading.Lock()
        self._clock = clock
        self._last_write = 0.0

    def set(self, key: str, record: LockRecord) -> None:
        with self._lock:
            self.records[key] = record
            now = self._clock()
            if not self.frozen and now - self._last_write >= 1.0:
                write_lock(self.path, self.records)
                self._last_write = now

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
                write_lock(self.path, self.records)


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

    # the public entry point

    def run(self) -> Report:
        if self.options.locked and self.options.upgrade:
            raise UsageError(
                "--upgrade changes manifest.lock and --locked forbids that; run "
                "`fetcher sync --upgrade` on its own and commit the lock"
            )
        if self.options.dry_run:
            return self._dry_run()
        _select(self.manifest, self.options.keys)  # an unknown key: exit 2 before any write
        self.library.ensure()
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.library.state / "sync.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not self.options.wait:
                raise LibraryBusy(
                    f"another fetcher sync is running on {self.library.root}; "
                    "retry later or drop --no-wait to wait for it"
                ) from None
            self.progress(Event("waiting", message="another sync holds the library; waiting"))
            while True:
                try:
                    lock.acquire(timeout=0.5)
                    break
                except Timeout:
                    if self.cancel.is_set():
                        raise Cancelled("cancelled while waiting for another sync") from None
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _dry_run(self) -> Report:
        lock = read_lock(self.manifest.lock_path)
        plans = self._assign_names(make_plan(self.manifest, lock, self.library, self.options), lock)
        report = Report([], dry_run=True)
        for plan in plans:
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
            from .status import orphans

            for orphan in orphans(self.library, (e.key for e in self.manifest.entries), lock):
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
                    recovered = _record_from_sidecar(self.library, entry, file)
                if recovered is not None:  # the lock was lost; the sidecar knows the file
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
        self._clean_stale()
        lock = read_lock(self.manifest.lock_path)
        plans = self._assign_names(make_plan(self.manifest, lock, self.library, self.options), lock)
        wall = self._clock.time if self._clock else time.time
        book = _LockBook(self.manifest.lock_path, lock, wall, frozen=self.options.locked)
        warnings: list[str] = []
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
        requests = 0
        if todo:
            requests = self._fetch_all(todo, book)
        book.flush()
        self.library.save_cache()
        pruned: list[str] = []
        if self.options.prune and not errors:
            pruned = self._prune(book, errors)
        from .catalog import refresh

        trouble = refresh(self.manifest, book.records, changed=bool(todo) or book.changed)
        if trouble:
            warnings.append(trouble)
            self.progress(Event("warning", message=trouble))
        ordered = [self.reports[p.entry.key] for p in plans]
        return Report(
            ordered, requests=requests, warnings=warnings, errors=errors, pruned=pruned
        )

    # the only changes --locked allows: bring back the exact locked bytes or sidecar
    LOCKED_REPAIRS = ("missing", "damaged", "sidecar missing")

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

    def _prune(self, book: _LockBook, errors: list[str]) -> list[str]:
        """Delete what fetcher stored for entries no longer in the manifest; say which.

        Only files the lock or a sidecar ties to a removed entry go; a file the user put
        in the library is never touched (`status.orphans`).
        """
        from .status import orphans

        known = dict(book.original)
        known.update(book.records)
        removed = []
        for orphan in orphans(self.library, (e.key for e in self.manifest.entries), known):
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

    # the two lanes

    def _fetch_all(self, todo: list[Plan], book: _LockBook) -> int:
        from .download import Downloader
        from .http import Http, Policy, SystemClock

        clock: Clock = self._clock or SystemClock(self.cancel)
        policy = self._policy or Policy()
        http = Http(
            arxiv_hosts=self.settings.arxiv_hosts,
            arxiv_interval=self.settings.arxiv_interval,
            host_interval=self.settings.host_interval,
            contact=self.settings.contact,
            state_dir=self.library.state,
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

    def _clean_stale(self) -> None:
        """Leftovers of dead runs (we hold the sync lock): see `download.clean_partials`."""
        from .download import clean_partials

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
        )

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
        except KeyboardInterrupt:
            self.cancel.set()
            http.abort()
            for future in futures:
                with contextlib.suppress(Exception):
                    future.result()
            raise Cancelled(
                "interrupted; partial downloads are kept and resume next time"
            ) from None
        if self.cancel.is_set():
            raise Cancelled("interrupted; partial downloads are kept and resume next time")

    def _guard(self, plan: Plan, fn: Callable[..., EntryReport], *args: Any) -> None:
        """Run one entry; any fetcher error becomes a failed entry, the run goes on."""
        if self.cancel.is_set():
            return
        self.progress(Event("start", key=plan.entry.key))
        try:
            report = fn(*args)
        except Cancelled:
            return
        except EntryError as exc:
            report = self._failed(plan, exc)
        except FetcherError as exc:
            report = self._failed(plan, exc)
        except OSError as exc:  # a disk problem outside the download (sidecar, lock file)
            from .download import storage_error

            where = Path(exc.filename) if exc.filename else self.library.root
            report = self._failed(plan, storage_error(exc, where))
        self._finish(plan, report)

    def _arxiv_lane(
        self, plans: list[Plan], http: Http, downloader: Downloader, book: _LockBook
    ) -> None:
        if not plans:
            return

        metas: dict[str, PaperMeta] = {}
        need = [p for p in plans if self._needs_api(p)]
        if need:
            try:
                metas = self._metadata(need, http)
            except Cancelled:
                return
            except (EntryError, FetcherError) as exc:
                for plan in need:
                    self._finish(plan, self._failed(plan, exc))
                plans = [p for p in plans if p not in need]
        for plan in plans:
            if self.cancel.is_set():
                return
            if http.blocked:
                self._finish(plan, self._failed(plan, Blocked(http.blocked)))
                continue
            meta = metas.get(self._api_key(plan))
            self._guard(plan, self._fetch_arxiv, plan, meta, http, downloader, book)

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

    def _metadata(self, plans: list[Plan], http: Http) -> dict[str, PaperMeta]:
        from .arxiv_api import fetch_metadata
        from .http import retrying
        from .ids import parse

        wanted = [parse(self._api_key(p)) for p in plans]
        return retrying(
            lambda: fetch_metadata(http, self.settings.arxiv_api, wanted),
            policy=http.policy,
            clock=http.clock,
            on_retry=self._on_retry("arXiv API"),
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
            report = self._skipped(plan)
            report.warnings.append("metadata sidecar was missing; rewritten")
            return report
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
        from .download import commit
        from .http import retrying

        entry = plan.entry
        dest = self.library.path_of(file)
        partial_name = file

        def progress(received: int, expected: int | None) -> None:
            self.progress(Event("bytes", key=entry.key, received=received, expected=expected))

        # one deadline for the entry: every attempt, backoff and body read fits in it
        deadline = http.clock.time() + http.policy.entry_deadline

        def attempt() -> Fetched:
            return downloader.fetch(
                url,
                partial_name,
                expect=entry.format,
                max_size=self.settings.max_size,
                pin=entry.sha256,
                progress=progress,
                key=entry.key,
                deadline=deadline,
            )

        fetched = retrying(
            attempt,
            policy=http.policy,
            clock=http.clock,
            on_retry=self._on_retry(entry.key),
            deadline=deadline,
        )
        warnings: list[str] = []
        old = plan.record
        same_source = old is not None and old.url == url
        if same_source and old is not None and old.sha256 != fetched.sha256 and not entry.sha256:
            if self.options.locked:
                downloader.discard(partial_name)
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
            downloader.discard(partial_name)
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
        self._write_sidecar(entry, file, record, meta, fetched)
        if old is not None and old.file != file:
            # an upgrade or a renamed template: the old file goes once the new one is in
            with contextlib.suppress(OSError):
                self.library.path_of(old.file).unlink()
                if Path(old.file).stem != Path(file).stem:  # else it is the new sidecar
                    self.library.sidecar_path(old.file).unlink()
                self.library.forget(old.file)
        book.set(entry.key, record)
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

    def _write_sidecar(
        self,
        entry: Entry,
        file: str,
        record: LockRecord,
        meta: dict[str, Any],
        fetched: Fetched | None,
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
        data.update(
            sha256=record.sha256,
            size=record.size,
            source_url=record.url,
            fetched_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            fetcher=__version__,
        )
        atomic_write_json(self.library.sidecar_path(file), data)


def sync(
    manifest: Manifest,
    options: Options | None = None,
    *,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> Report:
    """The same work as `fetcher sync`: bring the library in line with the manifest."""
    return Syncer(manifest, options, progress=progress, **kwargs).run()
