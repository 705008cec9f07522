"""The fetching half of a sync: the only place that talks to the network.

A run's plan is made from local state alone (`sync`, `plan`); what it cannot satisfy
comes here. Two lanes run side by side: arXiv, strictly one request at a time with its
metadata asked in batches first, and every other host, a few at once, so direct URLs
never wait behind forty arXiv PDFs. Each entry is fetched, checked, committed, given its
sidecar and recorded in the `LockBook`; whatever goes wrong fails that entry only.
`Syncer` builds one `Lanes` per run with everything it needs passed in explicitly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import INTERRUPTED, Blocked, Cancelled, FetcherError, LockedError, NotFound
from .library import Library, LockRecord, atomic_write_json
from .lockbook import LockBook
from .lockbook import storage_problem as _storage
from .manifest import Entry, Settings
from .plan import Plan, default_file
from .report import EntryReport, Event, ProgressCallback

if TYPE_CHECKING:
    import httpx

    from .arxiv_api import Metadata, PaperMeta
    from .download import Downloader, Fetched
    from .http import Clock, Http, Policy

__all__ = ["Lanes", "failed", "internal", "repaired", "skipped", "write_sidecar"]


def internal(exc: BaseException) -> FetcherError:
    """An exception fetcher did not expect (a bug, or a library raising what it should
    not): it fails the one entry it hit, with a line worth reporting."""
    return FetcherError(f"internal error: {type(exc).__name__}: {exc}; please report it")


def failed(plan: Plan, exc: BaseException) -> EntryReport:
    return EntryReport(plan.entry.key, plan.entry.kind, "failed", error=str(exc))


def skipped(plan: Plan, display: Callable[[str], str]) -> EntryReport:
    record = plan.record
    assert record is not None
    return EntryReport(
        plan.entry.key,
        plan.entry.kind,
        "skipped",
        version=record.version,
        path=display(record.file),
        sha256=record.sha256,
        size=record.size,
    )


def repaired(plan: Plan, display: Callable[[str], str]) -> EntryReport:
    report = skipped(plan, display)
    what = "damaged" if plan.reason == "sidecar damaged" else "missing"
    report.warnings.append(f"metadata sidecar was {what}; rewritten")
    return report


def write_sidecar(
    library: Library,
    entry: Entry,
    file: str,
    record: LockRecord,
    meta: dict[str, Any],
    fetched: Fetched | None,
    *,
    fetched_at: float | None = None,
) -> None:
    """The metadata sidecar of `file`: the manifest's fields, what the source said, and
    the lock's record, so a lost lock can be rebuilt from the library alone."""
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
    atomic_write_json(library.sidecar_path(file), data)
    if file == record.file:
        library.remember_sidecar(record)


class Lanes:
    """The two lanes of one run. `finish` records an entry's report (and tells the
    caller), `display` turns a library file into the path reports show, `claim` gives an
    entry a file name no other entry holds (`library.Names`)."""

    def __init__(
        self,
        settings: Settings,
        library: Library,
        *,
        locked: bool,
        lock_name: str,
        progress: ProgressCallback,
        cancel: threading.Event,
        finish: Callable[[Plan, EntryReport], None],
        display: Callable[[str], str],
        claim: Callable[[Entry, str], str],
        clock: Clock | None = None,
        policy: Policy | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.settings = settings
        self.library = library
        self.locked = locked  # --locked: a download that changes the lock fails
        self.lock_name = lock_name
        self.progress = progress
        self.cancel = cancel
        self.finish = finish
        self.display = display
        self.claim = claim
        self._clock = clock
        self._policy = policy
        self._transport = transport
        self.lane_errors: list[BaseException] = []  # a lane that died of a bug

    def run(self, todo: list[Plan], book: LockBook) -> int:
        """Fetch `todo` in the two lanes; the number of requests made."""
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
                    pool.submit(self.guard, p, self._fetch_url, p, http, downloader, book)
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
                        self.lane_errors.append(exc)
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

    def guard(self, plan: Plan, fn: Callable[..., EntryReport], *args: Any) -> None:
        """Run one entry; whatever goes wrong fails that entry, and the run goes on."""
        if self.cancel.is_set():
            return
        self.progress(Event("start", key=plan.entry.key))
        try:
            report = fn(*args)
        except Cancelled:
            return
        except FetcherError as exc:
            report = failed(plan, exc)
        except OSError as exc:  # a disk problem outside the download (sidecar, lock file)
            report = failed(plan, _storage(exc, self.library.root))
        except Exception as exc:  # the last resort: one entry fails, not the whole run
            report = failed(plan, internal(exc))
        self.finish(plan, report)

    def _arxiv_lane(
        self, plans: list[Plan], http: Http, downloader: Downloader, book: LockBook
    ) -> None:
        if not plans:
            return
        metas: dict[str, PaperMeta] = {}
        gave_up: dict[str, FetcherError] = {}
        need = [p for p in plans if self._needs_api(p)]
        if need:
            try:
                result = self._metadata(need, http)
            except Cancelled:
                return
            except Exception as exc:  # FetcherError or a bug: those entries fail
                error = exc if isinstance(exc, FetcherError) else internal(exc)
                for plan in need:
                    self.finish(plan, failed(plan, error))
                asked = {id(p) for p in need}
                plans = [p for p in plans if id(p) not in asked]
            else:
                metas, gave_up = result.found, result.failed
        for plan in plans:
            if self.cancel.is_set():
                return
            if http.blocked:
                self.finish(plan, failed(plan, Blocked(http.blocked)))
                continue
            api_key = self._api_key(plan)
            if api_key in gave_up:  # its metadata batch gave up: only its entries fail
                self.finish(plan, failed(plan, gave_up[api_key]))
                continue
            self.guard(plan, self._fetch_arxiv, plan, metas.get(api_key), http, downloader, book)

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
        book: LockBook,
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
            return skipped(replace(plan, record=record), self.display)
        file = plan.file if plan.file and plan.version == meta.version else None
        if file is None:  # claimed here, in manifest order: the arXiv lane is sequential
            file = self.claim(entry, default_file(entry, self.settings.filename, meta))
        if plan.action == "meta" and record is not None:
            write_sidecar(self.library, entry, file, record, meta.to_json(), None)
            return repaired(plan, self.display)
        url = self.settings.arxiv_pdf.format(id=meta.versioned_id)
        return self._download(plan, url, file, meta.version, meta.to_json(), http, downloader, book)

    def _fetch_url(
        self, plan: Plan, http: Http, downloader: Downloader, book: LockBook
    ) -> EntryReport:
        entry = plan.entry
        assert entry.url is not None
        file = plan.file or self.claim(entry, default_file(entry, self.settings.filename))
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
        book: LockBook,
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
            if self.locked:
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
        if self.locked and (
            old is None
            or (old.file, old.sha256, old.size, old.version)
            != (file, fetched.sha256, fetched.size, version)
        ):
            downloader.discard(file)
            raise LockedError(
                f"{entry.key}: the download ({file}, {fetched.size:,} bytes) does not match "
                f"{self.lock_name}; --locked forbids the change. Sync without "
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
            write_sidecar(self.library, entry, file, record, meta, fetched)
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
            path=self.display(file),
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
