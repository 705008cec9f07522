"""A fake arXiv (API + PDFs) and web host for fetcher's integration tests and benchmarks.

The real CLI runs against it in subprocesses, so it must behave like arXiv on the wire
(Atom feeds shaped like the recorded ones, chunked PDFs, 301 from `.pdf`, ranges), fail on
demand (`Fault`), and record every request with wall-clock times (`time.time()`, comparable
across processes) so tests can assert politeness: spacing between request starts and how
many requests were in flight at once, even when two fetcher processes hit it together.

Stdlib only. Run by hand or from a benchmark in its own process:

    python tests/fakeserver.py --port 8765 --manifest manifest.toml [--pdf-size 200000]

Routes:
    GET|HEAD /api/query?id_list=A,B&start=0&max_results=N   Atom feed (400 on a malformed id)
    GET|HEAD /pdf/ID.pdf                                     301 to /pdf/ID
    GET|HEAD /pdf/ID                                         chunked PDF, ETag, ranges
    GET|HEAD /web/HOST/PATH                                  registered files, Content-Length

Paths are matched after percent-decoding and without the query string, for routes,
registered files, faults and the request log alike.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import gzip
import hashlib
import itertools
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - fetcher supports 3.10, where tomli is the same parser
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = ["FakeServer", "Fault", "RequestRecord", "is_well_formed_id", "make_pdf"]

SOCKET_TIMEOUT = 30.0  # a stuck client can hold a handler thread this long, no longer
_PIECE = 65536  # body write size when no fault asks for smaller pieces
_WEB_LAST_MODIFIED = 1_700_000_000.0  # fixed, so ETag/Last-Modified are stable across runs

# --- arXiv ids ----------------------------------------------------------------------------

# As lax as arXiv's API itself: it checks the shape only (0808.05394 is "well formed" there
# and simply not found), so month/digit-count rules are deliberately not enforced here.
_NEW_ID = r"\d{4}\.\d{4,5}"
_OLD_ID = r"[a-z]+(?:-[a-z]+)*(?:\.[A-Za-z]{2})?/\d{7}"
_ID_RE = re.compile(rf"^(?P<base>{_NEW_ID}|{_OLD_ID})(?:v(?P<version>\d+))?$")


def is_well_formed_id(text: str) -> bool:
    """True if arXiv's API would accept `text` in an id_list (found or not)."""
    return _ID_RE.match(text) is not None


def _split_id(text: str) -> tuple[str, int | None]:
    m = _ID_RE.match(text)
    if m is None:
        raise ValueError(f"not an arXiv id: {text!r}")
    version = m.group("version")
    return m.group("base"), (int(version) if version else None)


def _normalise_manifest_id(text: str) -> str:
    """Accept the forms a manifest may hold: `arXiv:ID`, abs/pdf URLs, `ID.pdf`."""
    raw = text.strip()
    if raw[:6].lower() == "arxiv:":
        raw = raw[6:].strip()
    if "://" in raw or raw.lower().startswith(("arxiv.org/", "export.arxiv.org/")):
        path = unquote(urlsplit(raw if "://" in raw else "https://" + raw).path)
        for prefix in ("/abs/", "/pdf/", "/html/"):
            if path.startswith(prefix):
                raw = path[len(prefix):].strip("/")
                break
    if raw.endswith(".pdf"):
        raw = raw[: -len(".pdf")]
    return raw


# --- synthetic content --------------------------------------------------------------------


def make_pdf(label: str, size: int = 50_000) -> bytes:
    """Deterministic PDF-looking bytes of exactly `size` bytes whose content depends on `label`.

    From 1 KiB up it is a structurally valid one-page PDF (catalog, pages, page, a binary
    stream, xref, trailer) so a parser-based check passes; smaller sizes give just the
    magic, a comment naming the label, filler and `%%EOF`.
    """
    if size < 32:
        raise ValueError("make_pdf needs size >= 32")
    seed = int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "big")
    rng = random.Random(seed)
    safe_label = re.sub(rb"[\r\n]", b" ", label.encode("utf-8"))[:200]
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    tail = b"\n%%EOF\n"
    if size >= 1024:
        for pad in range(8):
            length = size - 400
            for _ in range(6):
                doc = _pdf_document(head, safe_label, _rng_bytes(seed, length), pad)
                if len(doc) == size:
                    return doc
                length += size - len(doc)
                if length < 0:
                    break
    # Small (or pathological) sizes: magic, label comment, filler, EOF marker.
    comment = b"% " + safe_label + b"\n"
    room = size - len(head) - len(tail)
    comment = comment[: max(0, room)]
    filler = rng.randbytes(room - len(comment))
    return head + comment + filler + tail


def _rng_bytes(seed: int, n: int) -> bytes:
    """`n` pseudo-random bytes from `seed` (stable across runs and Python versions >= 3.9)."""
    return random.Random(seed).randbytes(max(0, n))


def _pdf_document(head: bytes, label: bytes, stream: bytes, pad: int) -> bytes:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(head + b"% " + label + b"\n" + b" " * pad)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)


def _html_page(title: str, text: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
        f"{escape(title)}</title></head>\n<body><h1>{escape(title)}</h1>\n"
        f"<p>{escape(text)}</p>\n</body></html>\n"
    ).encode()


# --- faults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for one response; build with the static constructors."""

    kind: str
    n: int = 0
    seconds: float = 0.0
    code: int = 0
    retry_after: str | None = None
    body: bytes | None = None
    content_type: str = "text/plain"
    location: str = ""
    chunk: int = 1
    start: int = 0
    delta: int = 0

    @staticmethod
    def cut_after(n: int) -> Fault:
        """Headers and the first `n` body bytes, then the connection is closed (no 0-chunk)."""
        return Fault("cut_after", n=n)

    @staticmethod
    def ignore_range() -> Fault:
        """Answer a Range request with the full 200, as servers without range support do."""
        return Fault("ignore_range")

    @staticmethod
    def wrong_content_range(start: int) -> Fault:
        """206 starting at `start` instead of the asked offset; Content-Range tells the truth."""
        return Fault("wrong_content_range", start=start)

    @staticmethod
    def status(
        code: int,
        retry_after: str | None = None,
        body: bytes | None = None,
        content_type: str = "text/plain",
    ) -> Fault:
        """Any status; `retry_after` goes out verbatim; body defaults to 'CODE Reason'."""
        return Fault("status", code=code, retry_after=retry_after, body=body,
                     content_type=content_type)

    @staticmethod
    def html_200() -> Fault:
        """200 text/html error page instead of the file (captive portals, soft 404s)."""
        return Fault("html_200")

    @staticmethod
    def trickle(delay: float, chunk: int = 1) -> Fault:
        """Send the body `chunk` bytes at a time, `delay` seconds apart."""
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        return Fault("trickle", seconds=delay, chunk=chunk)

    @staticmethod
    def content_length(delta: int) -> Fault:
        """Announce real_length + delta, write the real body, then close."""
        return Fault("content_length", delta=delta)

    @staticmethod
    def endless(chunk: int = 65536) -> Fault:
        """200, chunked, `%PDF-` then bytes forever until the client goes away."""
        return Fault("endless", chunk=max(1, chunk))

    @staticmethod
    def gzip() -> Fault:
        """Body gzip-compressed, `Content-Encoding: gzip`, Content-Length = compressed size."""
        return Fault("gzip")

    @staticmethod
    def delay(seconds: float) -> Fault:
        """Wait `seconds` before answering normally (client timeouts)."""
        return Fault("delay", seconds=seconds)

    @staticmethod
    def redirect(location: str, code: int = 302) -> Fault:
        """Redirect to `location` (absolute or relative) with `code`."""
        return Fault("redirect", code=code, location=location)

    @staticmethod
    def reset() -> Fault:
        """Close the connection with a TCP reset before any response (ECONNRESET)."""
        return Fault("reset")

    @staticmethod
    def ignore_if_range() -> Fault:
        """Honour Range but ignore If-Range, as some caches do: a 206 even after a rebuild."""
        return Fault("ignore_if_range")

    @staticmethod
    def cut_then_rebuild(n: int, new_bytes: bytes) -> Fault:
        """Like `cut_after(n)`, then the file at this path is rebuilt with `new_bytes` (new
        ETag, later Last-Modified), as when arXiv regenerates a PDF between two attempts."""
        return Fault("cut_then_rebuild", n=n, body=new_bytes)


# --- records ------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as the server saw it.

    `start`/`end` are `time.time()` (wall clock, comparable across processes). `start` is
    taken once the request head is parsed; `end` just before the last byte of the response
    is written (or before an abrupt close), so a client that waits for a complete response
    before starting its next request can never appear to overlap with it. `end` is None
    while the request is in flight; `status` is 0 until a status line is sent.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int
    start: float
    end: float | None
    client_port: int
    thread_id: int
    fault: str | None = None


def _prefixes(prefix: str) -> tuple[str, ...]:
    return tuple(p for p in prefix.split("|") if p) or ("",)


# --- resources ----------------------------------------------------------------------------


@dataclass
class _Blob:
    data: bytes
    content_type: str
    last_modified: float  # whole seconds since the epoch
    etag: str = ""

    def __post_init__(self) -> None:
        self.last_modified = float(int(self.last_modified))
        self.etag = '"' + hashlib.sha256(self.data).hexdigest()[:24] + '"'


@dataclass
class _Paper:
    base: str
    title: str
    authors: list[str]
    summary: str
    categories: list[str]
    published: str
    doi: str | None
    journal_ref: str | None
    comment: str | None
    versions: dict[int, _Blob] = field(default_factory=dict)
    updated: dict[int, str] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        return max(self.versions)


def _parse_iso(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _default_published(base: str) -> str:
    """A plausible submission date from the id's YYMM."""
    yymm = base.split("/")[-1][:4] if "/" in base else base[:4]
    yy, mm = int(yymm[:2]), min(max(int(yymm[2:]), 1), 12)
    year = 1900 + yy if yy >= 91 else 2000 + yy
    return f"{year:04d}-{mm:02d}-15T12:00:00Z"


def _http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def _parse_http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


# --- Atom feeds ---------------------------------------------------------------------------

_FEED_OPEN = (
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    '<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
    'xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">\n'
)
_SCHEME = "http://arxiv.org/schemas/atom"


def _x(text: str) -> str:
    return escape(text)


def _xa(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def _entry_xml(paper: _Paper, version: int) -> str:
    """One `<entry>` in the element order arXiv uses (see the recorded fixtures)."""
    vid = f"{paper.base}v{version}"
    out = [
        "  <entry>",
        f"    <id>http://arxiv.org/abs/{_x(vid)}</id>",
        f"    <title>{_x(paper.title)}</title>",
        f"    <updated>{_x(paper.updated[version])}</updated>",
        f'    <link href="https://arxiv.org/abs/{_xa(vid)}" rel="alternate" type="text/html"/>',
        f'    <link href="https://arxiv.org/pdf/{_xa(vid)}" rel="related" '
        'type="application/pdf" title="pdf"/>',
        f"    <summary>{_x(paper.summary)}</summary>",
    ]
    out += [f'    <category term="{_xa(c)}" scheme="{_SCHEME}"/>' for c in paper.categories]
    out.append(f"    <published>{_x(paper.published)}</published>")
    if paper.comment is not None:
        out.append(f"    <arxiv:comment>{_x(paper.comment)}</arxiv:comment>")
    primary = paper.categories[0] if paper.categories else "cs.LG"
    out.append(f'    <arxiv:primary_category term="{_xa(primary)}"/>')
    if paper.journal_ref is not None:
        out.append(f"    <arxiv:journal_ref>{_x(paper.journal_ref)}</arxiv:journal_ref>")
    for name in paper.authors:
        out += ["    <author>", f"      <name>{_x(name)}</name>", "    </author>"]
    if paper.doi is not None:
        out.append(f"    <arxiv:doi>{_x(paper.doi)}</arxiv:doi>")
        out.append(f'    <link rel="related" href="https://doi.org/{_xa(paper.doi)}" title="doi"/>')
    out.append("  </entry>")
    return "\n".join(out)


def _feed_xml(
    search_query: str, id_list: str, start: int, max_results: int, total: int,
    entries: Sequence[str],
) -> bytes:
    """A results feed; the feed id is a 27-character hash like arXiv's."""
    paging = f"start={start}&max_results={max_results}"
    title_q = f"search_query={search_query}&id_list={id_list}&{paging}"
    link_q = f"search_query={search_query}&{paging}&id_list={id_list}"
    feed_id = base64.b64encode(hashlib.sha1(link_q.encode("utf-8")).digest()).decode()[:27]
    lines = [
        f"  <id>https://arxiv.org/api/{_x(feed_id)}</id>",
        f"  <title>arXiv Query: {_x(title_q)}</title>",
        f"  <updated>{_iso(datetime.now(timezone.utc))}</updated>",
        f'  <link href="https://arxiv.org/api/query?{_xa(link_q)}" type="application/atom+xml"/>',
        f"  <opensearch:itemsPerPage>{max_results}</opensearch:itemsPerPage>",
        f"  <opensearch:totalResults>{total}</opensearch:totalResults>",
        f"  <opensearch:startIndex>{start}</opensearch:startIndex>",
        *entries,
    ]
    return (_FEED_OPEN + "\n".join(lines) + "\n</feed>\n").encode("utf-8")


def _error_feed(message: str) -> bytes:
    """The feed arXiv sends with HTTP 400 (`incorrect id format for X` and friends)."""
    now = _iso(datetime.now(timezone.utc))
    anchor = "https://arxiv.org/api/errors#" + message.replace(" ", "_")
    lines = [
        "  <id>https://arxiv.org/</id>",
        "  <title>arXiv Search Results</title>",
        f"  <updated>{now}</updated>",
        "  <opensearch:itemsPerPage>1</opensearch:itemsPerPage>",
        "  <opensearch:totalResults>1</opensearch:totalResults>",
        "  <opensearch:startIndex>0</opensearch:startIndex>",
        "  <entry>",
        f"    <id>{_x(anchor)}</id>",
        "    <title>Error</title>",
        f"    <updated>{now}</updated>",
        f'    <link href="{_xa(anchor)}" rel="alternate" type="text/html"/>',
        f"    <summary>{_x(message)}</summary>",
        "    <author>",
        "      <name>arXiv api core</name>",
        "    </author>",
        "  </entry>",
    ]
    return (_FEED_OPEN + "\n".join(lines) + "\n</feed>\n").encode("utf-8")


# --- HTTP plumbing ------------------------------------------------------------------------

_ATOM = "application/atom+xml; charset=UTF-8"
_HTML = "text/html; charset=utf-8"


@dataclass
class _Resp:
    """A response before transport faults are applied to it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False


class _Aborted(Exception):
    """The server is stopping: abandon the response."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeServer):
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects are normal here (faults cause them): stay quiet about them."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _Aborted)) or self.fake._stopping.is_set():
            return
        sys.stderr.write(f"fakeserver: error while serving {client_address}:\n")
        traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakeserver/1.0"
    sys_version = ""
    timeout = SOCKET_TIMEOUT
    disable_nagle_algorithm = True  # header and body go in separate writes
    server: _HTTPServer

    # -- connection bookkeeping (so stop() can unblock every handler thread) --

    def setup(self) -> None:
        super().setup()
        self.fake = self.server.fake
        self.fake._connection_opened(self.connection)
        self._rec: RequestRecord | None = None

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.fake._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.fake.verbose:
            sys.stderr.write(f"fakeserver {self.address_string()} {format % args}\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._rec is not None:
            self._rec.status = code
        super().send_response(code, message)

    # -- verbs --

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _not_allowed(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._dispatch(allowed=False)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _dispatch(self, allowed: bool = True) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path) or "/"
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        rec = RequestRecord(
            method=self.command, path=path, query=parts.query, headers=headers, status=0,
            start=time.time(), end=None, client_port=int(self.client_address[1]),
            thread_id=threading.get_ident(),
        )
        self._rec = rec
        self._path, self._query = path, parts.query
        self._head = self.command == "HEAD"
        fault = self.fake._begin(rec)
        try:
            if not allowed:
                self._write(_Resp(405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")],
                                  b"405 Method Not Allowed\n"), None)
            else:
                self._respond(fault)
        except (OSError, _Aborted):
            self.close_connection = True
        finally:
            self._mark_end()
            self._rec = None

    def _mark_end(self) -> None:
        rec = self._rec
        if rec is not None and rec.end is None:
            self.fake._finish(rec)

    # -- responses --

    def _respond(self, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if fault is not None and kind == "delay":
            self._sleep(fault.seconds)
            fault, kind = None, None
        if fault is not None and kind == "endless":
            self._endless(fault.chunk)
            return
        if kind == "reset":
            self._reset()
            return
        self._ignore_if_range = kind == "ignore_if_range"
        if fault is not None and kind == "status":
            reason = _reason(fault.code)
            body = fault.body if fault.body is not None else f"{fault.code} {reason}\n".encode()
            headers = [("Content-Type", fault.content_type)]
            if fault.retry_after is not None:
                headers.append(("Retry-After", fault.retry_after))
            resp = _Resp(fault.code, headers, body)
        elif kind == "html_200":
            resp = _Resp(200, [("Content-Type", _HTML)], _html_page(
                "Access denied", "This page is an HTML error page, not the file you asked for."))
        elif fault is not None and kind == "redirect":
            resp = _Resp(fault.code, [("Location", fault.location), ("Content-Type", _HTML)],
                         _html_page("Moved", f"Moved to {fault.location}"))
        else:
            resp = self._route(
                ignore_range=kind == "ignore_range",
                force_start=fault.start if fault is not None and kind == "wrong_content_range"
                else None,
            )
        if kind == "gzip":
            resp.body = gzip.compress(resp.body, mtime=0)
            resp.chunked = False
            resp.headers.append(("Content-Encoding", "gzip"))
        self._write(resp, fault)

    def _write(self, resp: _Resp, fault: Fault | None) -> None:
        """Send `resp`, applying transport faults (cut, trickle, lying length)."""
        kind = fault.kind if fault else None
        body = b"" if self._head else resp.body
        chunked = resp.chunked
        announced = len(resp.body)
        if kind == "content_length" and fault is not None:
            chunked = False
            announced = max(0, len(resp.body) + fault.delta)
        self.send_response(resp.status)
        for name, value in resp.headers:
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(announced))
        abort = kind in ("cut_after", "content_length", "cut_then_rebuild")
        if abort:
            self.close_connection = True
        if self._head or (not body and not chunked):
            self._mark_end()
            self.end_headers()
            if abort:
                self._close_abruptly()
            return
        self.end_headers()
        limit = fault.n if fault is not None and kind in ("cut_after", "cut_then_rebuild") else None
        piece, pause = _PIECE, 0.0
        if fault is not None and kind == "trickle":
            piece, pause = fault.chunk, fault.seconds
        try:
            self._send_body(body, chunked=chunked, piece=piece, pause=pause, limit=limit,
                            abort=abort)
        finally:
            if fault is not None and kind == "cut_then_rebuild" and fault.body is not None:
                self.fake.replace_bytes(self._path, fault.body)

    def _send_body(
        self, body: bytes, *, chunked: bool, piece: int, pause: float, limit: int | None,
        abort: bool,
    ) -> None:
        """Write the body in pieces; the request's `end` is stamped before the final write."""
        data = body if limit is None else body[: max(0, limit)]
        pieces = [data[i:i + piece] for i in range(0, len(data), piece)] or [b""]
        for index, part in enumerate(pieces):
            last = index == len(pieces) - 1
            frame = (b"%x\r\n" % len(part) + part + b"\r\n") if chunked and part else part
            if last and chunked and not abort:
                frame += b"0\r\n\r\n"
            if last:
                self._mark_end()
            if frame:
                self.wfile.write(frame)
            if not last and pause:
                self._sleep(pause)
        if abort:
            self._close_abruptly()

    def _endless(self, chunk: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Transfer-Encoding", "chunked")
        self.close_connection = True
        if self._head:
            self._mark_end()
            self.end_headers()
            return
        self.end_headers()
        filler = _rng_bytes(1, chunk)
        first = b"%PDF-1.4\n" + filler[: max(0, chunk - 9)]
        self.wfile.write(b"%x\r\n" % len(first) + first + b"\r\n")
        frame = b"%x\r\n" % len(filler) + filler + b"\r\n"
        while not self.fake._stopping.is_set():
            self.wfile.write(frame)  # blocks while the client is not reading; raises once gone

    def _reset(self) -> None:
        """RST instead of an answer: SO_LINGER 0, then close."""
        self.close_connection = True
        self._mark_end()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()

    def _close_abruptly(self) -> None:
        self.close_connection = True
        self._mark_end()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _sleep(self, seconds: float) -> None:
        if self.fake._stopping.wait(max(0.0, seconds)):
            raise _Aborted

    # -- routes --

    def _route(self, *, ignore_range: bool, force_start: int | None) -> _Resp:
        path = self._path
        if path == "/api/query":
            return self._api()
        if path.startswith("/pdf/"):
            return self._pdf(path[len("/pdf/"):], ignore_range, force_start)
        blob = self.fake._file(path)  # /web/... and anything else add_file registered
        if blob is None:
            return _not_found(path)
        return self._ranged(blob, chunked=False, ignore_range=ignore_range,
                            force_start=force_start)

    def _api(self) -> _Resp:
        qs = parse_qs(self._query, keep_blank_values=True)
        search_query = qs.get("search_query", [""])[0]
        id_list = qs.get("id_list", [""])[0]
        numbers: dict[str, int] = {}
        for name, default in (("start", 0), ("max_results", 10)):
            raw = qs.get(name, [str(default)])[0].strip() or str(default)
            try:
                numbers[name] = int(raw)
            except ValueError:
                return _Resp(400, [("Content-Type", _ATOM)],
                             _error_feed(f"{name} must be an integer"))
            if numbers[name] < 0:
                return _Resp(400, [("Content-Type", _ATOM)],
                             _error_feed(f"{name} must be non-negative"))
        start, max_results = numbers["start"], numbers["max_results"]
        wanted = [part.strip() for part in id_list.split(",") if part.strip()]
        for text in wanted:
            if not is_well_formed_id(text):
                return _Resp(400, [("Content-Type", _ATOM)],
                             _error_feed(f"incorrect id format for {text}"))
        entries = self.fake._entries(wanted)
        page = entries[start:start + max_results]
        body = _feed_xml(search_query, id_list, start, max_results, len(entries), page)
        return _Resp(200, [("Content-Type", _ATOM)], body)

    def _pdf(self, rest: str, ignore_range: bool, force_start: int | None) -> _Resp:
        if rest.endswith(".pdf"):
            target = "/pdf/" + rest[: -len(".pdf")]
            return _Resp(301, [("Location", target)], b"")
        blob = self.fake._pdf_blob(rest)
        if blob is None:
            return _not_found("/pdf/" + rest)
        return self._ranged(blob, chunked=True, ignore_range=ignore_range,
                            force_start=force_start)

    def _ranged(
        self, blob: _Blob, *, chunked: bool, ignore_range: bool, force_start: int | None
    ) -> _Resp:
        """200/206/304/416 for a stored file, honouring Range, If-Range and validators."""
        total = len(blob.data)
        headers = [
            ("Content-Type", blob.content_type),
            ("ETag", blob.etag),
            ("Last-Modified", _http_date(blob.last_modified)),
            ("Accept-Ranges", "bytes"),
        ]
        if _not_modified(self.headers, blob):
            return _Resp(304, [h for h in headers if h[0] != "Content-Type"], b"")
        requested = None if ignore_range else self.headers.get("Range")
        if (
            requested is not None
            and not getattr(self, "_ignore_if_range", False)
            and not _if_range_matches(self.headers.get("If-Range"), blob)
        ):
            requested = None
        span = _parse_range(requested, total) if requested is not None else None
        if force_start is not None:
            first = min(max(0, force_start), max(0, total - 1))
            last = span[1] if isinstance(span, tuple) and span[1] >= first else total - 1
            span = (first, last)
        if span == "unsatisfiable":
            return _Resp(416, [*headers[1:], ("Content-Range", f"bytes */{total}")], b"")
        if isinstance(span, tuple):
            first, last = span
            headers.append(("Content-Range", f"bytes {first}-{last}/{total}"))
            return _Resp(206, headers, blob.data[first:last + 1], chunked)
        return _Resp(200, headers, blob.data, chunked)


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Status"


def _not_found(path: str) -> _Resp:
    return _Resp(404, [("Content-Type", _HTML)], _html_page("Not Found", f"{path} not found"))


def _parse_range(value: str, total: int) -> tuple[int, int] | str | None:
    """(first, last) inclusive, 'unsatisfiable', or None to ignore (bad or multi-range)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix range: the last N bytes
        n = int(m.group(2))
        if n == 0 or total == 0:
            return "unsatisfiable"
        return (max(0, total - n), total - 1)
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else total - 1
    if m.group(2) and last < first:
        return None
    if first >= total:
        return "unsatisfiable"
    return (first, min(last, total - 1))


def _if_range_matches(value: str | None, blob: _Blob) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == blob.etag  # strong comparison: weak tags never match
    when = _parse_http_date(value)
    return when is not None and int(when) == int(blob.last_modified)


def _not_modified(headers: Any, blob: _Blob) -> bool:
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or blob.etag in tags
    ims = headers.get("If-Modified-Since")
    if ims is not None:
        when = _parse_http_date(ims)
        return when is not None and int(blob.last_modified) <= int(when)
    return False


# --- the server ---------------------------------------------------------------------------


class FakeServer:
    """Fake arXiv + web host on 127.0.0.1 in a background thread; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False):
        self.verbose = verbose
        self._lock = threading.Lock()
        self._papers: dict[str, _Paper] = {}
        self._files: dict[str, _Blob] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._log: list[RequestRecord] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._host = host
        self._httpd = _HTTPServer((host, port), self)

    # -- lifecycle --

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. http://127.0.0.1:54321."""
        return f"http://{self._host}:{self.port}"

    @property
    def web_url(self) -> str:
        """The same server under another host name, e.g. http://localhost:54321: direct
        URLs served here are another host than arXiv to fetcher (its gates, its lanes)."""
        return f"http://localhost:{self.port}"

    @property
    def arxiv_api(self) -> str:
        """Value for the manifest's `arxiv_api` setting."""
        return f"{self.url}/api/query"

    @property
    def arxiv_pdf(self) -> str:
        """Value for the manifest's `arxiv_pdf` setting."""
        return f"{self.url}/pdf/{{id}}"

    def start(self) -> FakeServer:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                name=f"fakeserver:{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake sleeping faults and cut open connections so no thread lingers."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _connection_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    # -- content --

    def add_arxiv(
        self,
        arxiv_id: str,
        versions: Mapping[int, bytes] | None = None,
        *,
        title: str | None = None,
        authors: Sequence[str] | None = None,
        summary: str | None = None,
        categories: Sequence[str] | None = None,
        published: str | None = None,
        updated: str | None = None,
        doi: str | None = None,
        journal_ref: str | None = None,
        comment: str | None = None,
    ) -> None:
        """Register a paper. `arxiv_id` has no version; `versions` maps N -> PDF bytes
        (default: v1 from make_pdf). `updated` is the latest version's date; earlier ones
        get published + 7 days per version. Re-adding an id replaces it."""
        base, version = _split_id(arxiv_id)
        if version is not None:
            raise ValueError(f"add_arxiv takes an id without version, got {arxiv_id!r}")
        if versions is None:
            versions = {1: make_pdf(f"{base}v1")}
        if not versions:
            raise ValueError("a paper needs at least one version")
        published = published or _default_published(base)
        paper = _Paper(
            base=base,
            title=title if title is not None else f"Paper {base}",
            authors=list(authors) if authors is not None else ["A. Author"],
            summary=summary if summary is not None else f"Synthetic abstract of {base}.",
            categories=list(categories) if categories else ["cs.LG"],
            published=published,
            doi=doi, journal_ref=journal_ref, comment=comment,
        )
        start = _parse_iso(published)
        latest = max(versions)
        for number in sorted(versions):
            if number < 1:
                raise ValueError("versions start at 1")
            stamp = updated if (number == latest and updated) else _iso(
                start + timedelta(days=7 * (number - 1)))
            paper.updated[number] = stamp
            paper.versions[number] = _Blob(versions[number], "application/pdf",
                                           _parse_iso(stamp).timestamp())
        with self._lock:
            self._papers[base] = paper

    def add_version(
        self, arxiv_id: str, version: int, pdf: bytes, *, updated: str | None = None
    ) -> None:
        """Publish a new version of a registered paper (it becomes latest if highest)."""
        base, _ = _split_id(arxiv_id)
        with self._lock:
            paper = self._papers[base]
            if updated is None:
                previous = _parse_iso(paper.updated[paper.latest])
                updated = _iso(max(previous + timedelta(days=7 * (version - paper.latest)),
                                   previous + timedelta(days=1)))
            paper.updated[version] = updated
            paper.versions[version] = _Blob(pdf, "application/pdf",
                                            _parse_iso(updated).timestamp())

    def add_file(
        self, path: str, body: bytes, content_type: str = "application/pdf",
        *, last_modified: float | None = None,
    ) -> str:
        """Serve `body` at `path` (`/web/host/...`; a full https URL is rewritten).
        Returns the path used."""
        path = self._local_path(path)
        blob = _Blob(body, content_type,
                     _WEB_LAST_MODIFIED if last_modified is None else last_modified)
        with self._lock:
            self._files[path] = blob
        return path

    def replace_bytes(self, path: str, new_bytes: bytes) -> None:
        """Same URL, new bytes (arXiv rebuilt the PDF): new ETag, later Last-Modified."""
        path = self._local_path(path)
        with self._lock:
            if path.startswith("/pdf/"):
                paper, version = self._lookup_pdf(path[len("/pdf/"):])
                if paper is None or version is None:
                    raise KeyError(path)
                old = paper.versions[version]
                paper.versions[version] = _Blob(new_bytes, old.content_type,
                                                max(time.time(), old.last_modified + 1))
            elif path in self._files:
                old = self._files[path]
                self._files[path] = _Blob(new_bytes, old.content_type,
                                          max(time.time(), old.last_modified + 1))
            else:
                raise KeyError(path)

    def rewrite_url(self, url: str, base: str | None = None) -> str:
        """`https://host/path?q` -> `{base}/web/host/path?q` (where add_file serves it);
        `base` defaults to `self.url`, `self.web_url` gives the other-host form."""
        parts = urlsplit(url)
        rewritten = f"{base or self.url}/web/{parts.netloc}{parts.path or '/'}"
        return rewritten + (f"?{parts.query}" if parts.query else "")

    def load_manifest(self, path: str | Path, pdf_size: int = 200_000) -> list[str]:
        """Register a synthetic paper/file for every `[[paper]]` of a fetcher manifest.

        arXiv entries get one version (v1, or the pinned one), title "Paper <id>", author
        "A. Author"; url entries get a PDF or HTML page under /web/<host>/<path>.
        Returns the paths registered, for logging."""
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        registered: list[str] = []
        for entry in data.get("paper", []):
            if "arxiv" in entry:
                base, version = _split_id(_normalise_manifest_id(str(entry["arxiv"])))
                number = version or 1
                pdf = make_pdf(f"{base}v{number}", pdf_size)
                with self._lock:
                    known = base in self._papers
                if known:
                    self.add_version(base, number, pdf)
                else:
                    self.add_arxiv(base, {number: pdf})
                registered.append(f"/pdf/{base}v{number}")
            elif "url" in entry:
                url = str(entry["url"])
                if entry.get("format", "pdf") == "html":
                    body = _html_page(f"Page {url}", f"Synthetic snapshot of {url}. " * 20)
                    registered.append(self.add_file(url, body, _HTML))
                else:
                    registered.append(self.add_file(url, make_pdf(url, pdf_size)))
        return registered

    # -- faults --

    def fault(self, path: str, fault: Fault, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests to exactly `path` (query ignored)."""
        path = self._local_path(path)
        with self._lock:
            self._faults.setdefault(path, deque()).extend([fault] * times)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self, path: str) -> list[Fault]:
        """Faults still queued for `path`, in order."""
        with self._lock:
            return list(self._faults.get(self._local_path(path), ()))

    # -- the log --

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot (copies) of every request so far, in arrival order."""
        with self._lock:
            return [dataclasses.replace(r, headers=dict(r.headers)) for r in self._log]

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def max_concurrency(self, prefix: str = "/") -> int:
        """Most requests in flight at once among paths starting with a `|`-separated prefix.
        Requests still in flight count as open-ended."""
        events: list[tuple[float, int]] = []
        for r in self._matching(prefix):
            events.append((r.start, 1))
            events.append((r.end if r.end is not None else float("inf"), -1))
        events.sort()  # at equal times, -1 sorts before +1: touching is not overlapping
        best = current = 0
        for _, step in events:
            current += step
            best = max(best, current)
        return best

    def min_gap(self, prefix: str = "/api/|/pdf/") -> float | None:
        """Smallest gap between consecutive request starts among matching paths."""
        starts = sorted(r.start for r in self._matching(prefix))
        if len(starts) < 2:
            return None
        return min(b - a for a, b in itertools.pairwise(starts))

    def _matching(self, prefix: str) -> list[RequestRecord]:
        wanted = _prefixes(prefix)
        with self._lock:
            return [dataclasses.replace(r) for r in self._log if r.path.startswith(wanted)]

    # -- used by handler threads --

    def _begin(self, rec: RequestRecord) -> Fault | None:
        with self._lock:
            self._log.append(rec)
            queue = self._faults.get(rec.path)
            fault = queue.popleft() if queue else None
            if queue is not None and not queue:
                del self._faults[rec.path]
            rec.fault = fault.kind if fault else None
            return fault

    def _finish(self, rec: RequestRecord) -> None:
        with self._lock:
            if rec.end is None:
                rec.end = time.time()

    def _file(self, path: str) -> _Blob | None:
        with self._lock:
            return self._files.get(path)

    def _pdf_blob(self, text: str) -> _Blob | None:
        with self._lock:
            paper, version = self._lookup_pdf(text)
            return paper.versions[version] if paper is not None and version is not None else None

    def _lookup_pdf(self, text: str) -> tuple[_Paper | None, int | None]:
        """Caller holds the lock."""
        m = _ID_RE.match(text)
        if m is None:
            return None, None
        paper = self._papers.get(m.group("base"))
        if paper is None:
            return None, None
        version = int(m.group("version")) if m.group("version") else paper.latest
        return (paper, version) if version in paper.versions else (None, None)

    def _entries(self, wanted: Iterable[str]) -> list[str]:
        """Entries for the found ids, in id_list order, each (id, version) once."""
        seen: set[tuple[str, int]] = set()
        out: list[str] = []
        with self._lock:
            for text in wanted:
                paper, version = self._lookup_pdf(text)
                if paper is None or version is None or (paper.base, version) in seen:
                    continue
                seen.add((paper.base, version))
                out.append(_entry_xml(paper, version))
        return out

    @staticmethod
    def _local_path(path: str) -> str:
        """Accept `/pdf/..`, `/web/..`, our own full URL, or an outside URL (-> /web/host/..)."""
        if "://" not in path:
            return unquote(path.split("?", 1)[0])
        parts = urlsplit(path)
        local = unquote(parts.path or "/")
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port is not None:
            return local
        return f"/web/{parts.netloc}{local}"


# --- CLI ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; the first stdout line is the base URL."""
    parser = argparse.ArgumentParser(description="Fake arXiv + web server for fetcher tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--manifest", type=Path, help="fetcher manifest.toml to serve")
    parser.add_argument("--pdf-size", type=int, default=200_000)
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    server = FakeServer(args.host, args.port, verbose=args.verbose)
    if args.manifest is not None:
        paths = server.load_manifest(args.manifest, pdf_size=args.pdf_size)
        sys.stderr.write(f"fakeserver: {len(paths)} entries from {args.manifest}\n")
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server.start()
    print(server.url, flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
