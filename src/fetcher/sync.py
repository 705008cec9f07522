"""`fetcher sync`: plan what the library lacks, fetch it politely, commit it, report.

Decide, then act. The plan (`plan.py`) reads only local state (lock, sidecars, stat
cache), so a library that is complete costs no request and no heavy import. The fetch
runs two lanes side by side: arXiv (strictly one request at a time, metadata batched
first) and every other host (a few at once), so direct URLs never wait behind forty
arXiv PDFs. Repairs that need no network (a missing or damaged sidecar) are done first,
without building a client at all.

This module decides and reports; `lanes` does the fetching (the only code that talks to
the network), `lockbook` keeps the lock file, `report` holds the run's inputs and outputs.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LockedError, UsageError
from .lanes import Lanes, failed, internal, repaired, skipped, write_sidecar
from .library import (
    Library,
    LockRecord,
    Names,
    catalog_is_fresh,
    hold_library,
    read_lock,
)
from .lockbook import LockBook, allowed_when_locked, lock_only_errors, not_locked
from .manifest import Entry, Manifest
from .plan import Plan, default_file, make_plan, plan_entry, select
from .report import EntryReport, Event, Options, ProgressCallback, Report, Status

if TYPE_CHECKING:
    import httpx

    from .arxiv_api import PaperMeta
    from .http import Clock, Policy
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

ARXIV_SAFE_INTERVAL = 3.0


def _relpath(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


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
        book = LockBook(self.manifest.lock_path, lock, wall, frozen=self.options.locked)
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
                    self._finish(plan, failed(plan, self._not_locked(plan)))
                    continue
                book.records[plan.entry.key] = plan.record
            self._finish(plan, skipped(plan, self._display))
        errors: list[str] = []
        if self.options.locked:
            todo = self._refuse_unlocked(todo, lock)
            errors = self._lock_only_errors(lock)
        else:  # entries removed from the manifest leave the lock (their files stay)
            book.drop_missing(e.key for e in self.manifest.entries)
        lanes = self._lanes()
        # sidecars rebuilt from what the library holds: no client, no request
        local = [p for p in todo if self._sidecar_only(p)]
        for plan in local:
            lanes.guard(plan, self._rewrite_sidecar, plan)
        remote = [p for p in todo if not self._sidecar_only(p)]
        requests = 0
        if remote:
            self.library.load_cache()  # before the lanes start: both of them remember
            requests = lanes.run(remote, book)
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
                cause = lanes.lane_errors[0] if lanes.lane_errors else RuntimeError("lost")
                report = failed(plan, internal(cause))
            ordered.append(report)
        return Report(ordered, requests=requests, warnings=warnings, errors=errors, pruned=pruned)

    def _lanes(self) -> Lanes:
        """The fetching half of this run, with what it needs from the run passed in."""
        return Lanes(
            self.settings,
            self.library,
            locked=self.options.locked,
            lock_name=self.manifest.lock_path.name,
            progress=self.progress,
            cancel=self.cancel,
            finish=self._finish,
            display=self._display,
            claim=self._claim,
            clock=self._clock,
            policy=self._policy,
            transport=self._transport,
        )

    def _refuse_unlocked(self, todo: list[Plan], lock: dict[str, LockRecord]) -> list[Plan]:
        """Under --locked only repairs to the locked state may run; the rest fail."""
        keep = []
        for plan in todo:
            if allowed_when_locked(plan, lock):
                keep.append(plan)
            else:
                self._finish(plan, failed(plan, self._not_locked(plan)))
        return keep

    def _lock_only_errors(self, lock: dict[str, LockRecord]) -> list[str]:
        keys = (e.key for e in self.manifest.entries)
        return lock_only_errors(lock, keys, self.manifest.lock_path.name)

    def _not_locked(self, plan: Plan) -> LockedError:
        return not_locked(plan, self.manifest.lock_path.name)

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

    def _prune(self, book: LockBook, errors: list[str]) -> list[str]:
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
        write_sidecar(self.library, entry, record.file, record, meta, None, fetched_at=stamp)
        return repaired(plan, self._display)


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
