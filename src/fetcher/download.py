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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import httpx

from .errors import ContentError, IntegrityError, StorageError, TransientError
from .http import Clock, Http, Policy, describe_transport_error

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
    url: str
    etag: str | None
    last_modified: str | None

    @property
    def validator(self) -> str | None:
        """If-Range takes a strong ETag, else a Last-Modified date."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


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
        try:
            data = json.loads(note_path.read_bytes())
            return _Note(data["url"], data.get("etag"), data.get("last_modified"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_note(self, note_path: Path, note: _Note) -> None:
        data = {"url": note.url, "etag": note.etag, "last_modified": note.last_modified}
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
    ) -> Fetched:
        """One attempt: resume or start the partial file `name`, stream, hash, check."""
        part, note_path = self.paths(name)
        try:
            self.partial_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error(exc, self.partial_dir) from None
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

        with self.http.stream(url, headers) as response:
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
                same_version = note is not None and (
                    etag is None or note.etag is None or etag == note.etag
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
                if resumable:
                    self._write_note(note_path, _Note(url, etag, last_modified))
                else:
                    with contextlib.suppress(FileNotFoundError):
                        note_path.unlink()
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
                raise _storage_error(exc, part) from None
            received = offset
            window: deque[tuple[float, int]] = deque()
            started = self.clock.time()
            try:
                try:
                    for chunk in response.iter_bytes(1 << 16):
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
                        tail = (tail + chunk)[-TAIL:]
                        digest.update(chunk)
                        try:
                            fh.write(chunk)
                        except OSError as exc:
                            raise _storage_error(exc, part) from None
                        self._check_rate(window, started, received - offset, url)
                        if progress is not None:
                            progress(received, expected_total)
                except httpx.HTTPError as exc:
                    fh.flush()
                    raise describe_transport_error(exc, url) from None
                try:
                    fh.flush()
                    os.fsync(fh.fileno())
                except OSError as exc:
                    raise _storage_error(exc, part) from None
            except (ContentError, StorageError):
                fh.close()
                self.discard(name)
                raise
            finally:
                fh.close()

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
        self, window: deque[tuple[float, int]], started: float, got: int, url: str
    ) -> None:
        """Fail a body that trickles in slower than `min_rate` or past the file deadline."""
        self.clock.sleep(0)  # a checkpoint: raises Cancelled after Ctrl-C / SIGTERM
        now = self.clock.time()
        if now - started > self.policy.entry_deadline:
            raise TransientError(
                f"{url}: still downloading after {self.policy.entry_deadline:.0f}s"
            )
        window.append((now, got))
        while len(window) > 1 and now - window[0][0] > self.policy.rate_window:
            window.popleft()
        if now - started >= self.policy.rate_window and len(window) > 1:
            span = now - window[0][0]
            rate = (got - window[0][1]) / span if span > 0 else float("inf")
            if span >= self.policy.rate_window * 0.5 and rate < self.policy.min_rate:
                raise TransientError(
                    f"{url}: the server is too slow ({rate:.0f} B/s, under "
                    f"{self.policy.min_rate:.0f} B/s); will resume later"
                )


def commit(fetched: Fetched, dest: Path) -> None:
    """Move a checked partial file to its final name, atomically."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched.partial, dest)
    except OSError as exc:
        raise _storage_error(exc, dest) from None


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


def _sniff(expect: Format, head: bytes, url: str) -> None:
    if expect == "pdf" and len(head) >= 5 and not head.startswith(b"%PDF-"):
        looks = "an HTML page" if b"<" in head[:100] else "something else"
        raise ContentError(f"{url} is not a PDF (no %PDF- header; looks like {looks})")
    if expect == "html" and head.startswith(b"%PDF-"):
        raise ContentError(f'{url} is a PDF, not a page; use format = "pdf"')


def _check_complete(expect: Format, head: bytes, tail: bytes, size: int, url: str) -> None:
    if size == 0:
        raise ContentError(f"{url} sent an empty body")
    if expect == "pdf":
        if not head.startswith(b"%PDF-"):
            raise ContentError(f"{url} is not a PDF (no %PDF- header)")
        if b"%%EOF" not in tail:
            raise ContentError(f"{url} is a truncated PDF ({size:,} bytes, no %%EOF at the end)")


def _storage_error(exc: OSError, path: Path) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"disk full while writing {path}; free some space and sync again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"permission denied writing {path}; check the folder's permissions")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")
