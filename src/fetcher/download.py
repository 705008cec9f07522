"""Stream one file to a partial file, hash it on the way, check it, then commit it.

The partial file lives in `<library>/.fetcher/partial/` (same filesystem as the library,
so the final `os.replace` is atomic). Beside it a small JSON note (`partial.Note`) keeps
the URL, the validators (ETag, Last-Modified) and the length known to be on disk, so a
later attempt, or a later run after `kill -9` or a power cut, resumes with `Range` +
`If-Range` from bytes that were fsynced, and never splices bytes of two versions of a
file. A resumed body that does not hash to what the caller trusts (the pin, or the
locked hash) is suspect: `ResumeMismatch`, and the caller fetches it once from zero.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from .errors import ContentError, HTTPStatusError, IntegrityError, StorageError, TransientError
from .partial import Note, boot_id, read_note, write_note

if TYPE_CHECKING:  # the HTTP stack is imported by `fetch`: a sync with nothing to do, which
    # only calls `clean_partials`, must not pay 0.1 s for httpx, ssl and tenacity
    from .http import Clock, Http, Policy

Format = Literal["pdf", "html"]
Progress = Callable[[int, "int | None"], None]
HTML_TYPES = ("text/html", "application/xhtml+xml")
TAIL = 2048
SNIFF = 1024
# fsync the partial (and note the durable length) every 64 MiB: often enough that a
# power cut loses little, rare enough that a large file is not slowed by hundreds of fsyncs
DURABLE_EVERY = 64 << 20


class ResumeMismatch(TransientError):
    """A resumed body hashed to something else than the caller trusts: the bytes kept
    from before may be damaged (lost writes after a power cut), so they were dropped."""


@dataclass(frozen=True)
class Fetched:
    """A complete, checked body waiting in its partial file to be committed."""

    partial: Path
    sha256: str
    size: int
    url: str
    final_url: str
    content_type: str | None
    etag: str | None
    last_modified: str | None
    resumed_from: int = 0


def _content_range_start(value: str | None) -> tuple[int, int | None] | None:
    """`bytes 100-199/500` -> (100, 500); None if unparsable."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        span, _, total = value[6:].partition("/")
        start = int(span.split("-")[0])
        return start, (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None


class Downloader:
    """Downloads into partial files under `partial_dir`; one instance per sync."""

    def __init__(self, http: Http, partial_dir: Path, policy: Policy, clock: Clock):
        self.http = http
        self.partial_dir = partial_dir
        self.policy = policy
        self.clock = clock

    def paths(self, name: str) -> tuple[Path, Path]:
        part = self.partial_dir / (name + ".part")
        return part, self.partial_dir / (name + ".part.json")

    def discard(self, name: str) -> None:
        for path in self.paths(name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def fetch(
        self,
        url: str,
        name: str,
        *,
        expect: Format,
        max_size: int,
        pin: str | None = None,
        progress: Progress | None = None,
        key: str | None = None,
        deadline: float | None = None,
        trusted: str | None = None,
    ) -> Fetched:
        """One attempt: resume or start the partial file `name`, stream, hash, check.

        `deadline` (clock time) bounds the whole entry across attempts: past it the body
        stops with a `TransientError` and the partial file is kept for the next run.
        `trusted` is the sha256 the body had last time (the lock's); with `pin`, a body
        resumed from kept bytes must hash to one of them, else `ResumeMismatch`.
        """
        import httpx

        from .http import describe_transport_error

        part, note_path = self.paths(name)
        try:
            self.partial_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, self.partial_dir) from None
        note = read_note(note_path)
        offset = 0
        headers = {"Accept-Encoding": "identity"}
        if expect == "pdf":
            headers["Accept"] = "application/pdf, */*;q=0.1"
        else:
            headers["Accept"] = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
        if note is not None and note.url == url and note.validator and part.exists():
            offset = note.resumable_length(part.stat().st_size)
            if 0 < offset <= max_size:
                headers["Range"] = f"bytes={offset}-"
                headers["If-Range"] = note.validator
            else:
                offset = 0
        if offset == 0:
            self.discard(name)

        with contextlib.ExitStack() as stack:
            try:
                response = stack.enter_context(self.http.stream(url, headers, deadline=deadline))
            except HTTPStatusError as exc:
                if exc.status != 416 or not offset:
                    raise
                # our partial is as long as the file or longer: it cannot be continued
                # (a body cut at its very end, a server that lied about the length)
                self.discard(name)
                raise TransientError(
                    f"{url}: the server cannot continue the partial file of {offset:,} "
                    "bytes (HTTP 416: the file is shorter than announced, or changed); "
                    "the partial file was dropped"
                ) from None
            final_url = str(response.url)
            etag = response.headers.get("etag")
            last_modified = response.headers.get("last-modified")
            content_type = response.headers.get("content-type")
            encoded = response.headers.get("content-encoding", "identity").lower() not in (
                "identity",
                "",
            )
            if response.status_code == 206 and offset:
                parsed = _content_range_start(response.headers.get("content-range"))
                same_version = (
                    note is not None
                    and parsed is not None
                    and note.continues(etag, last_modified, parsed[1])
                )
                if parsed is None or parsed[0] != offset or not same_version:
                    self.discard(name)
                    raise TransientError(
                        f"{url}: the server answered the resume request with another range "
                        f"({response.headers.get('content-range')!r}) or version; restarting"
                    )
                expected_total = parsed[1]
            else:
                if response.status_code != 200:
                    raise TransientError(
                        f"{url}: unexpected HTTP {response.status_code}; expected 200 or 206"
                    )
                offset = 0
                expected_total = None
                length = response.headers.get("content-length")
                if length and length.isdigit() and not encoded:
                    expected_total = int(length)
            _check_type(expect, content_type, url)
            if expected_total is not None and expected_total > max_size:
                self.discard(name)
                raise ContentError(
                    f"{url} is {expected_total:,} bytes, over max_size {max_size:,}; raise "
                    "max_size in [settings] if you want it"
                )
            # A new body: remember how to resume it (not for encoded bodies, whose
            # byte offsets are not the stored file's).
            resumable = not encoded and bool(etag or last_modified)
            if offset == 0:
                note = Note(url, etag, last_modified, key, expected_total, 0, boot_id())
                try:
                    if resumable:
                        write_note(note_path, note)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            note_path.unlink()
                except OSError as exc:
                    self.discard(name)
                    raise storage_error(exc, note_path) from None
            digest = hashlib.sha256()
            head = b""
            tail = b""
            try:
                fh: BinaryIO
                if offset:
                    fh = open(part, "r+b")  # noqa: SIM115 - closed in finally
                    fh.truncate(offset)
                    head, tail = _hash_prefix(fh, digest, offset)
                    fh.seek(offset)
                else:
                    fh = open(part, "wb")  # noqa: SIM115
            except OSError as exc:
                self.discard(name)
                raise storage_error(exc, part) from None
            received = offset
            durable = offset
            started = self.clock.time()
            window: deque[tuple[float, int]] = deque([(started, 0)])
            if deadline is None:
                deadline = started + self.policy.entry_deadline
            try:
                try:
                    # as the bytes arrive: a fixed chunk size would hold back up to
                    # a chunk that a cut connection then loses instead of resuming after
                    for chunk in response.iter_bytes():
                        if not chunk:
                            continue
                        received += len(chunk)
                        if received > max_size:
                            raise ContentError(
                                f"{url} sent more than max_size ({max_size:,} bytes); refused"
                            )
                        if len(head) < SNIFF:
                            head = (head + chunk)[:SNIFF]
                            _sniff(expect, head, url)
                        # the last bytes, without copying every chunk once more
                        tail = chunk[-TAIL:] if len(chunk) >= TAIL else (tail + chunk)[-TAIL:]
                        digest.update(chunk)
                        try:
                            fh.write(chunk)
                        except OSError as exc:
                            raise storage_error(exc, part) from None
                        if resumable and received - durable >= DURABLE_EVERY:
                            durable = self._make_durable(fh, part, note_path, note, received)
                        self._check_rate(window, received - offset, url, deadline)
                        if progress is not None:
                            progress(received, expected_total)
                except httpx.HTTPError as exc:
                    raise describe_transport_error(exc, url) from None
                try:
                    fh.flush()
                    os.fsync(fh.fileno())
                except OSError as exc:
                    raise storage_error(exc, part) from None
            except (ContentError, StorageError):
                _close_quietly(fh)
                self.discard(name)
                raise
            except BaseException:
                # cut, too slow, past the deadline, cancelled: what arrived is kept for
                # the next attempt, made durable first so a resume never trusts lost writes
                if resumable and received > durable:
                    with contextlib.suppress(StorageError):
                        self._make_durable(fh, part, note_path, note, received)
                raise
            finally:
                _close_quietly(fh)

        if expected_total is not None and received != expected_total:
            self.discard(name)
            raise TransientError(
                f"{url}: body was {received:,} bytes but the server announced "
                f"{expected_total:,}; retrying from zero"
            )
        try:
            _check_complete(expect, head, tail, received, url)
        except ContentError:
            self.discard(name)
            raise
        sha = digest.hexdigest()
        want = pin or trusted
        if offset and want and sha != want:
            self.discard(name)
            raise ResumeMismatch(
                f"{url}: the download resumed after {offset:,} kept bytes hashes to "
                f"{sha[:12]}…, not {want[:12]}… as expected; the kept bytes may be "
                "damaged, so they were dropped"
            )
        if pin is not None and sha != pin:
            self.discard(name)
            raise IntegrityError(
                f"{url} hashes to {sha}, but the manifest pins sha256 {pin}; "
                "nothing was stored. If the source changed on purpose, update the pin"
            )
        with contextlib.suppress(FileNotFoundError):
            note_path.unlink()
        return Fetched(
            partial=part,
            sha256=sha,
            size=received,
            url=url,
            final_url=final_url,
            content_type=content_type,
            etag=etag,
            last_modified=last_modified,
            resumed_from=offset,
        )

    @staticmethod
    def _make_durable(
        fh: BinaryIO, part: Path, note_path: Path, note: Note | None, received: int
    ) -> int:
        """fsync the partial, then note its length: a resume after a power cut starts
        from bytes that reached the disk, not from a tail of lost writes."""
        try:
            fh.flush()
            os.fsync(fh.fileno())
            if note is not None:
                note.durable, note.boot = received, boot_id()
                write_note(note_path, note)
        except OSError as exc:
            raise storage_error(exc, part) from None
        return received

    def _check_rate(
        self, window: deque[tuple[float, int]], got: int, url: str, deadline: float
    ) -> None:
        """Fail a body that trickles in slower than `min_rate` or past the entry deadline.

        `window` holds (time, bytes so far) points, starting with (response start, 0); the
        rate is averaged from the last point at least `rate_window` old, so one byte a
        minute fails as surely as one byte a second. Called once per chunk; the read
        timeout bounds the wait for a chunk.
        """
        self.clock.sleep(0)  # a checkpoint: raises Cancelled after Ctrl-C / SIGTERM
        now = self.clock.time()
        if now > deadline:
            raise TransientError(
                f"{url}: not complete within the per-file deadline "
                f"({self.policy.entry_deadline:g}s); the partial file is kept and resumes "
                "next time"
            )
        if self.policy.min_rate <= 0:
            return
        window.append((now, got))
        horizon = now - self.policy.rate_window
        while len(window) > 2 and window[1][0] <= horizon:
            window.popleft()
        since, base = window[0]
        if since <= horizon:
            rate = (got - base) / (now - since)
            if rate < self.policy.min_rate:
                raise TransientError(
                    f"{url}: the server is too slow ({rate:.0f} B/s over the last "
                    f"{now - since:.0f}s, under {self.policy.min_rate:g} B/s); the partial "
                    "file is kept and resumes"
                )


def commit(fetched: Fetched, dest: Path) -> None:
    """Move a checked partial file to its final name, atomically; on failure the partial
    goes too (it is complete, so nothing would resume from it)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched.partial, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            fetched.partial.unlink()
        raise storage_error(exc, dest) from None


def _close_quietly(fh: BinaryIO) -> None:
    """Close after a failure: a flush that fails again (disk full) must not mask it."""
    with contextlib.suppress(OSError):
        fh.close()


def _hash_prefix(fh: BinaryIO, digest: Any, offset: int) -> tuple[bytes, bytes]:
    """Hash the bytes already in the partial file (only when resuming)."""
    fh.seek(0)
    remaining = offset
    head = b""
    tail = b""
    while remaining:
        block = fh.read(min(remaining, 1 << 20))
        if not block:
            break
        if len(head) < SNIFF:
            head = (head + block)[:SNIFF]
        tail = (tail + block)[-TAIL:]
        digest.update(block)
        remaining -= len(block)
    return head, tail


def _check_type(expect: Format, content_type: str | None, url: str) -> None:
    ctype = (content_type or "").split(";")[0].strip().lower()
    if expect == "pdf" and ctype in HTML_TYPES:
        raise ContentError(
            f"{url} sent an HTML page ({ctype}) where a PDF was expected; "
            "the link may need a login or point at a landing page"
        )
    if expect == "html" and ctype and ctype not in HTML_TYPES:
        raise ContentError(
            f'{url} sent {ctype} where an HTML page was expected; use format = "pdf" if it is a PDF'
        )


def _looks_like(head: bytes) -> str:
    """What a body that is not the expected file seems to be, for the error message."""
    start = head.lstrip()[:200]
    low = start.lower()
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low or b"<body" in low:
        return "an HTML page"
    if low.startswith(b"<"):
        return "XML"
    snippet = start[:60].decode("utf-8", errors="replace")
    if start[:1] in (b"{", b"["):
        return f"JSON: {snippet!r}"
    if start[:2] == b"\x1f\x8b":
        return "gzip data"
    if start[:2] == b"PK":
        return "a ZIP archive"
    if snippet.isprintable():
        return f"text: {snippet!r}"
    return "binary data"


def _not_a_pdf(head: bytes, url: str) -> ContentError:
    return ContentError(
        f"{url} is not a PDF (no %PDF- header; it looks like {_looks_like(head)}); "
        "the link may need a login or point at a landing page"
    )


def _sniff(expect: Format, head: bytes, url: str) -> None:
    if expect == "pdf" and len(head) >= 5 and not head.startswith(b"%PDF-"):
        raise _not_a_pdf(head, url)
    if expect == "html" and head.startswith(b"%PDF-"):
        raise ContentError(f'{url} is a PDF, not a page; use format = "pdf"')


def _check_complete(expect: Format, head: bytes, tail: bytes, size: int, url: str) -> None:
    if size == 0:
        raise ContentError(f"{url} sent an empty body")
    if expect == "pdf":
        if not head.startswith(b"%PDF-"):
            raise _not_a_pdf(head, url)
        if b"%%EOF" not in tail:
            raise ContentError(f"{url} is a truncated PDF ({size:,} bytes, no %%EOF at the end)")


def storage_error(exc: OSError, path: Path) -> StorageError:
    """One line for a failed write: disk full, permission denied, or what the OS said."""
    if exc.errno == errno.ENOSPC:
        return StorageError(f"disk full while writing {path}; free some space and sync again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"permission denied writing {path}; check the folder's permissions")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")
