"""Stream one file to a partial file, hash it on the way, check it, then commit it.

The partial file lives in `<library>/.fetcher/partial/` (same filesystem as the library,
so the final `os.replace` is atomic). Beside it a small JSON note keeps the URL and the
validators (ETag, Last-Modified) so a later attempt, or a later run after `kill -9`,
resumes with `Range` + `If-Range` and never splices bytes of two versions of a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from .errors import ContentError, HTTPStatusError, IntegrityError, StorageError, TransientError

if TYPE_CHECKING:  # the HTTP stack is imported by `fetch`: a sync with nothing to do, which
    # only calls `clean_partials`, must not pay 0.1 s for httpx, ssl and tenacity
    from .http import Clock, Http, Policy

Format = Literal["pdf", "html"]
Progress = Callable[[int, "int | None"], None]
HTML_TYPES = ("text/html", "application/xhtml+xml")
TAIL = 2048
SNIFF = 1024


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


@dataclass
class _Note:
    """What a partial file is a prefix of: the URL, its validators, its announced size and
    the entry it belongs to (so a later sync can tell a stale partial from a live one)."""

    url: str
    etag: str | None
    last_modified: str | None
    key: str | None = None
    total: int | None = None

    @property
    def validator(self) -> str | None:
        """If-Range takes a strong ETag, else a Last-Modified date."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def continues(self, etag: str | None, last_modified: str | None, total: int | None) -> bool:
        """Can a 206 with these headers continue the bytes this note describes?

        The ETag decides when both sides have one; else Last-Modified; a different total
        size always means another file. What cannot be compared is not held against it
        (the server already checked If-Range).
        """
        if self.total is not None and total is not None and self.total != total:
            return False
        if self.etag and etag:
            return self.etag == etag
        if self.last_modified and last_modified:
            return self.last_modified == last_modified
        return True


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

    def _read_note(self, note_path: Path) -> _Note | None:
        return read_note(note_path)

    def _write_note(self, note_path: Path, note: _Note) -> None:
        data = {
            "url": note.url,
            "etag": note.etag,
            "last_modified": note.last_modified,
            "key": note.key,
            "total": note.total,
        }
        note_path.write_text(json.dumps(data))

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
    ) -> Fetched:
        """One attempt: resume or start the partial file `name`, stream, hash, check.

        `deadline` (clock time) bounds the whole entry across attempts: past it the body
        stops with a `TransientError` and the partial file is kept for the next run.
        """
        import httpx

        from .http import describe_transport_error

        part, note_path = self.paths(name)
        try:
            self.partial_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, self.partial_dir) from None
        note = self._read_note(note_path)
        offset = 0
        headers = {"Accept-Encoding": "identity"}
        if expect == "pdf":
            headers["Accept"] = "application/pdf, */*;q=0.1"
        else:
            headers["Accept"] = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
        if note is not None and note.url == url and note.validator and part.exists():
            offset = part.stat().st_size
            if 0 < offset <= max_size:
                headers["Range"] = f"bytes={offset}-"
                headers["If-Range"] = note.validator
            else:
                offset = 0
        if offset == 0:
            self.discard(name)

        with contextlib.ExitStack() as stack:
            try:
                response = stack.enter_context(
                    self.http.stream(url, headers, deadline=deadline)
                )
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
            if offset == 0:
                resumable = not encoded and bool(etag or last_modified)
                try:
                    if resumable:
                        fresh = _Note(url, etag, last_modified, key, expected_total)
                        self._write_note(note_path, fresh)
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
                        self._check_rate(window, received - offset, url, deadline)
                        if progress is not None:
                            progress(received, expected_total)
                except httpx.HTTPError as exc:
                    with contextlib.suppress(OSError):
                        fh.flush()  # keep what arrived: the next attempt resumes after it
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


PARTIAL_MAX_AGE = 14 * 86400.0  # a partial older than this is not worth resuming
TEMP_MAX_AGE = 3600.0  # an atomic write's temporary file lives milliseconds


def clean_partials(
    partial_dir: Path,
    keys: Collection[str],
    now: float,
    *,
    temps: Iterable[tuple[Path, str]] = (),
    max_age: float = PARTIAL_MAX_AGE,
) -> list[Path]:
    """Remove what no later sync can resume; returns the paths removed.

    Call it under the library's sync lock: then every partial file belongs to a process
    that is gone. Kept: a partial whose note names an entry still in the manifest (`keys`;
    a note without a key is kept too) and that is younger than `max_age`; the next fetch
    of that entry resumes it with `If-Range`, or restarts it if the URL or the server's
    version changed. Removed: partials without a readable note (never resumable), notes
    without a partial, partials of entries no longer in the manifest, old ones, and the
    temporary files an interrupted atomic write left (`temps`: folder and the file name
    its temporary files start with, e.g. `(library, "")` or `(folder, "manifest.lock")`;
    only names `mkstemp` makes, `.NAME.XXXXXXXX.tmp`, older than an hour).
    Partial files live only under `.fetcher/partial/`, so none is ever taken for a
    complete file.
    """
    wanted = set(keys)
    removed: list[Path] = []

    def remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)

    try:
        names = sorted(os.listdir(partial_dir))
    except OSError:
        names = []
    present = set(names)
    for name in names:
        path = partial_dir / name
        if name.endswith(".part.json"):
            if name[: -len(".json")] not in present:
                remove(path)  # a note whose partial is gone
            continue
        if not name.endswith(".part"):
            continue
        note_path = partial_dir / (name + ".json")
        note = read_note(note_path)
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        stale = (
            note is None
            or (note.key is not None and note.key not in wanted)
            or age > max_age
        )
        if stale:
            remove(path)
            remove(note_path)
    for folder, prefix in temps:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for item in entries:
            match = _TEMP_NAME.match(item.name)
            if match is None or not match.group(1).startswith(prefix):
                continue
            with contextlib.suppress(OSError):
                old = now - item.stat(follow_symlinks=False).st_mtime > TEMP_MAX_AGE
                if old and item.is_file(follow_symlinks=False):
                    remove(Path(item.path))
    return removed


_TEMP_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp(prefix=".NAME.")


def read_note(note_path: Path) -> _Note | None:
    """The note beside a partial file, or None if absent or unreadable."""
    try:
        data = json.loads(note_path.read_bytes())
        total = data.get("total")
        return _Note(
            str(data["url"]),
            data.get("etag"),
            data.get("last_modified"),
            data.get("key"),
            int(total) if isinstance(total, int) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


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
