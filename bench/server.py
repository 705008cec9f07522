"""The benchmarks' loopback server, in its own process so its GIL never slows the client.

It runs the tests' fake arXiv/web server (`tests/fakeserver.py`) plus one extra route for
the large-file benchmark, and takes orders on stdin, one JSON object a line, answering
each with one JSON line on stdout. The orders travel outside HTTP, so they never appear
in the request log that the benchmarks count and time.

    {"op": "load", "manifest": PATH, "pdf_size": N}  -> {"ok": true, "entries": K}
    {"op": "log"}    -> {"ok": true, "log": [[method, path, status, start, end], ...]}
    {"op": "reset"}  -> {"ok": true}   (clears the request log)
    {"op": "big_log"} -> {"ok": true, "log": [[size, start, end], ...]}  (then cleared)
    {"op": "quit"}   (or EOF)

The first stdout line is `{"url": ..., "web": ..., "big": ...}`: the fake server's base
URL; a second port of the same fake server for the manifest's direct URLs (on the first
port they would share arXiv's host, so fetcher would rightly space them like arXiv); and
the base URL of the streaming route, where `GET {big}/SIZE.pdf` answers SIZE deterministic
bytes that start with `%PDF-` and end with `%%EOF`, generated on the fly (a 1 GiB body
never sits in memory).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakeserver import FakeServer, _HTTPServer  # needs the repo root on sys.path

BLOCK = 1 << 20
HEAD = b"%PDF-1.4\n% fetcher benchmark body\n"
TAIL = b"\n%%EOF\n"


class _BigHandler(BaseHTTPRequestHandler):
    """`GET /SIZE.pdf`: SIZE bytes, Content-Length, strong ETag; written in 1 MiB pieces."""

    protocol_version = "HTTP/1.1"
    server_version = "benchserver/1.0"
    block = random.Random(7).randbytes(BLOCK)
    log: ClassVar[
        list[list[float]]
    ] = []  # [size, start, end]: head parsed -> last byte handed over
    log_lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        if not name.endswith(".pdf") or not name[:-4].isdigit() or int(name[:-4]) < 64:
            self.send_error(404)
            return
        size = int(name[:-4])
        start = time.time()
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Content-Length", str(size))
        self.send_header("ETag", f'"big-{size}"')
        self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
        self.end_headers()
        self.wfile.write(HEAD)
        left = size - len(HEAD) - len(TAIL)
        view = memoryview(self.block)
        while left > 0:
            n = min(left, BLOCK)
            self.wfile.write(view[:n])
            left -= n
        self.wfile.write(TAIL)
        with self.log_lock:
            self.log.append([size, start, time.time()])


def _serve(fake: FakeServer, order: dict[str, Any]) -> dict[str, Any]:
    op = order.get("op")
    if op == "load":
        paths = fake.load_manifest(order["manifest"], pdf_size=int(order.get("pdf_size", 20_000)))
        return {"ok": True, "entries": len(paths)}
    if op == "log":
        rows = [[r.method, r.path, r.status, r.start, r.end] for r in fake.requests]
        return {"ok": True, "log": rows}
    if op == "big_log":
        with _BigHandler.log_lock:
            rows, _BigHandler.log[:] = list(_BigHandler.log), []
        return {"ok": True, "log": rows}
    if op == "reset":
        fake.reset_log()
        return {"ok": True}
    return {"ok": False, "error": f"unknown op {op!r}"}


def main() -> int:
    fake = FakeServer().start()
    web = _HTTPServer(("127.0.0.1", 0), fake)  # same content and log, another host:port
    big = ThreadingHTTPServer(("127.0.0.1", 0), _BigHandler)
    big.daemon_threads = True
    for httpd in (web, big):
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(
        json.dumps(
            {
                "url": fake.url,
                "web": f"http://localhost:{web.server_address[1]}",
                "big": f"http://localhost:{big.server_address[1]}",
            }
        ),
        flush=True,
    )
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            order = json.loads(line)
            if order.get("op") == "quit":
                break
            try:
                answer = _serve(fake, order)
            except Exception as exc:  # report, keep serving: the bench decides what to do
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        for httpd in (web, big):
            httpd.shutdown()
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
