"""Servers that answer wrongly: the entry fails with one clear line, the others are done.

The real CLI runs against the fake server. Each test has a good arXiv entry beside the
bad one, so "the other entries are still done" is checked every time, and nothing but
complete, checked files may appear in the library.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

import fetcher
from fetcher.http import Policy
from tests.conftest import Result, point_at, run_fetcher
from tests.fakeserver import FakeServer, Fault, make_pdf

GOOD = '[[paper]]\narxiv = "1706.03762"\n'
TINY = Policy(attempts=2, backoff_initial=0.01, backoff_max=0.02, connect_timeout=2, read_timeout=5)


def sync(
    tmp_path: Path, srv: FakeServer, body: str, extra: str = "", *, outside: str = ""
) -> Result:
    """`fetcher sync` of the good entry plus `body`; the good entry must come through.

    URLs in `body` are moved to the fake server; those in `outside` are left alone.
    """
    srv.add_arxiv("1706.03762")
    path = tmp_path / "manifest.toml"
    path.write_text(point_at(GOOD + body, srv, extra=extra) + outside)
    result = run_fetcher("sync", "-m", str(path), cwd=tmp_path, timeout=60)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert (tmp_path / "downloads" / "1706.03762.pdf").is_file(), result.stderr
    return result


def failed_line(result: Result, key: str) -> str:
    """Exit 1 and exactly one FAILED line for `key`, on stderr."""
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"FAILED     {key}: "), lines[0]
    assert "FAILED" not in result.stdout
    return lines[0]


def library_files(tmp_path: Path) -> set[str]:
    """Visible library files, and fail if a partial download was left for a refused body."""
    library = tmp_path / "downloads"
    return {p.name for p in library.iterdir() if not p.name.startswith(".")} - {
        "index.md",
        "index.html",
    }


def no_partials(tmp_path: Path) -> None:
    partial = tmp_path / "downloads" / ".fetcher" / "partial"
    assert not partial.exists() or list(partial.iterdir()) == []


# --- the wrong kind of body ------------------------------------------------------------------


def test_html_with_200_where_a_pdf_is_expected(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_file("https://a.example/paper.pdf", make_pdf("p", 5000))
    fake.fault("https://a.example/paper.pdf", Fault.html_200())
    result = sync(
        tmp_path, fake, '[[paper]]\nurl = "https://a.example/paper.pdf"\nname = "paper"\n'
    )
    line = failed_line(result, "paper")
    assert "sent an HTML page (text/html) where a PDF was expected" in line
    assert "login" in line
    assert library_files(tmp_path) == {"1706.03762.pdf", "1706.03762.json"}
    no_partials(tmp_path)


def test_json_with_200_where_a_pdf_is_expected(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_file("https://a.example/api/paper", make_pdf("p", 5000))
    fake.fault(
        "https://a.example/api/paper",
        Fault.status(
            200,
            body=b'{"error": "quota exceeded", "retry": false}',
            content_type="application/json",
        ),
    )
    result = sync(tmp_path, fake, '[[paper]]\nurl = "https://a.example/api/paper"\nname = "p"\n')
    line = failed_line(result, "p")
    assert 'is not a PDF (no %PDF- header; it looks like JSON: \'{"error": "quota exceeded"' in line
    assert library_files(tmp_path) == {"1706.03762.pdf", "1706.03762.json"}
    no_partials(tmp_path)


def test_arxiv_pdf_replaced_by_an_html_page(tmp_path: Path, fake: FakeServer) -> None:
    """A captive portal in front of arXiv: the id's PDF URL answers 200 with HTML."""
    fake.add_arxiv("1810.04805")
    fake.fault("/pdf/1810.04805v1", Fault.html_200())
    result = sync(tmp_path, fake, '[[paper]]\narxiv = "1810.04805"\n')
    assert "HTML page" in failed_line(result, "1810.04805")
    assert not (tmp_path / "downloads" / "1810.04805.pdf").exists()


def test_a_pdf_where_an_html_page_is_expected(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_file("https://a.example/post", make_pdf("post", 4000))
    result = sync(
        tmp_path,
        fake,
        '[[paper]]\nurl = "https://a.example/post"\nname = "post"\nformat = "html"\n',
    )
    line = failed_line(result, "post")
    assert "sent application/pdf where an HTML page was expected" in line
    assert 'use format = "pdf"' in line
    assert not (tmp_path / "downloads" / "post.html").exists()


def test_a_pdf_labelled_as_html(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_file("https://a.example/post", make_pdf("post", 4000), content_type="text/html")
    result = sync(
        tmp_path,
        fake,
        '[[paper]]\nurl = "https://a.example/post"\nname = "post"\nformat = "html"\n',
    )
    assert 'is a PDF, not a page; use format = "pdf"' in failed_line(result, "post")
    no_partials(tmp_path)


# --- redirects -------------------------------------------------------------------------------


def _chain(srv: FakeServer, hops: int, final: str) -> str:
    for i in range(hops):
        target = final if i == hops - 1 else f"/web/a.example/r{i + 1}"
        srv.fault(f"/web/a.example/r{i}", Fault.redirect(target))
    return "https://a.example/r0"


def test_ten_redirects_are_followed(tmp_path: Path, fake: FakeServer) -> None:
    body = make_pdf("moved", 4000)
    fake.add_file("https://a.example/final.pdf", body)
    start = _chain(fake, 10, "/web/a.example/final.pdf")
    result = sync(tmp_path, fake, f'[[paper]]\nurl = "{start}"\nname = "moved"\n')
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "downloads" / "moved.pdf").read_bytes() == body
    sidecar = json.loads((tmp_path / "downloads" / "moved.json").read_text())
    assert sidecar["final_url"].endswith("/web/a.example/final.pdf")


def test_an_eleventh_redirect_is_refused(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_file("https://a.example/final.pdf", make_pdf("moved", 4000))
    start = _chain(fake, 11, "/web/a.example/final.pdf")
    result = sync(tmp_path, fake, f'[[paper]]\nurl = "{start}"\nname = "moved"\n')
    assert "more than 10 redirects" in failed_line(result, "moved")
    hops = [r for r in fake.requests if r.path.startswith("/web/a.example/")]
    assert len(hops) == 11  # the 11th redirect is read, never followed
    assert not (tmp_path / "downloads" / "moved.pdf").exists()


def test_a_redirect_loop_is_detected(tmp_path: Path, fake: FakeServer) -> None:
    fake.fault("/web/a.example/a", Fault.redirect("/web/a.example/b"), times=5)
    fake.fault("/web/a.example/b", Fault.redirect("/web/a.example/a"), times=5)
    result = sync(tmp_path, fake, '[[paper]]\nurl = "https://a.example/a"\nname = "loop"\n')
    assert "redirect loop at" in failed_line(result, "loop")
    assert len([r for r in fake.requests if r.path.startswith("/web/a.example/")]) == 2


def test_a_redirect_to_an_invalid_url(tmp_path: Path, fake: FakeServer) -> None:
    fake.fault("/web/a.example/x", Fault.redirect("http://[::1/broken"))
    result = sync(tmp_path, fake, '[[paper]]\nurl = "https://a.example/x"\nname = "x"\n')
    line = failed_line(result, "x")
    assert "/web/a.example/x redirects to an invalid URL" in line
    assert len([r for r in fake.requests if r.path == "/web/a.example/x"]) == 1  # no retry


def test_a_redirect_from_https_to_http_is_refused(tmp_path: Path) -> None:
    """The fake server speaks plain http, so this one runs on a mock transport."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.scheme == "https":
            return httpx.Response(302, headers={"Location": "http://a.example/paper.pdf"})
        return httpx.Response(
            200, content=make_pdf("x", 2000), headers={"Content-Type": "application/pdf"}
        )

    path = tmp_path / "manifest.toml"
    path.write_text(
        "[settings]\nhost_interval = 0\n"
        '[[paper]]\nurl = "https://a.example/paper.pdf"\nname = "paper"\n'
    )
    report = fetcher.sync(
        fetcher.load_manifest(path), policy=TINY, transport=httpx.MockTransport(handler)
    )
    [entry] = report.entries
    assert entry.status == "failed"
    assert entry.error is not None
    assert "refused redirect from https to http://a.example/paper.pdf" in entry.error
    assert seen == ["https://a.example/paper.pdf"]  # the http URL was never asked for
    assert not (tmp_path / "downloads" / "paper.pdf").exists()


# --- encodings and sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["web", "arxiv"])
def test_gzip_bodies_are_stored_decoded_and_hashed_as_stored(
    where: str, tmp_path: Path, fake: FakeServer
) -> None:
    body = make_pdf("zipped", 30_000)
    if where == "web":
        fake.add_file("https://a.example/z.pdf", body)
        fake.fault("https://a.example/z.pdf", Fault.gzip())
        entry, key, file = '[[paper]]\nurl = "https://a.example/z.pdf"\nname = "z"\n', "z", "z.pdf"
    else:
        fake.add_arxiv("1810.04805", {1: body})
        fake.fault("/pdf/1810.04805v1", Fault.gzip())
        entry, key, file = '[[paper]]\narxiv = "1810.04805"\n', "1810.04805", "1810.04805.pdf"
    result = sync(tmp_path, fake, entry)
    assert result.returncode == 0, result.stderr
    assert any(r.fault == "gzip" for r in fake.requests)  # the fault really was served
    stored = (tmp_path / "downloads" / file).read_bytes()
    assert stored == body
    digest = hashlib.sha256(stored).hexdigest()
    lock = json.loads((tmp_path / "manifest.lock").read_text())["entries"][key]
    assert (lock["sha256"], lock["size"]) == (digest, len(body))
    sidecar = json.loads((tmp_path / "downloads" / file).with_suffix(".json").read_text())
    assert sidecar["sha256"] == digest
    verify = run_fetcher("verify", "-m", str(tmp_path / "manifest.toml"), cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr


def test_a_body_over_max_size_announced_by_content_length(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_file("https://a.example/big.pdf", make_pdf("big", 60_000))
    result = sync(
        tmp_path,
        fake,
        '[[paper]]\nurl = "https://a.example/big.pdf"\nname = "big"\n',
        extra="max_size = 50_000\n",
    )
    line = failed_line(result, "big")
    assert "is 60,000 bytes, over max_size 50,000" in line and "raise max_size" in line
    assert "big.pdf" not in library_files(tmp_path)
    no_partials(tmp_path)


def test_a_chunked_body_over_max_size_is_cut_off(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_arxiv("1810.04805", {1: make_pdf("big", 200_000)})
    result = sync(tmp_path, fake, '[[paper]]\narxiv = "1810.04805"\n', extra="max_size = 50_000\n")
    assert "sent more than max_size (50,000 bytes); refused" in failed_line(result, "1810.04805")
    assert "1810.04805.pdf" not in library_files(tmp_path)
    no_partials(tmp_path)


def test_an_endless_body_stops_at_max_size(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_file("https://a.example/endless.pdf", make_pdf("e", 2000))
    fake.fault("https://a.example/endless.pdf", Fault.endless())
    started = time.monotonic()
    result = sync(
        tmp_path,
        fake,
        '[[paper]]\nurl = "https://a.example/endless.pdf"\nname = "endless"\n',
        extra="max_size = 300_000\n",
    )
    assert "sent more than max_size (300,000 bytes)" in failed_line(result, "endless")
    assert time.monotonic() - started < 30
    no_partials(tmp_path)


# --- hosts that cannot be reached ------------------------------------------------------------


def test_a_host_that_does_not_exist(tmp_path: Path, fake: FakeServer) -> None:
    started = time.monotonic()
    result = sync(
        tmp_path,
        fake,
        "",
        outside='[[paper]]\nurl = "http://nonexistent.invalid/x.pdf"\nname = "gone"\n',
    )
    elapsed = time.monotonic() - started
    line = failed_line(result, "gone")
    assert "nonexistent.invalid" in line
    assert "cannot resolve host nonexistent.invalid" in line
    assert line.count("\n") == 0
    assert elapsed < 20  # a name that does not exist is final: no backoff, no retries
    assert "1 downloaded" in result.stderr  # the summary goes to stderr when a run fails
    assert not (tmp_path / "downloads" / "gone.pdf").exists()


def test_a_host_that_refuses_connections(tmp_path: Path, fake: FakeServer) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake.add_arxiv("1706.03762")
    path = tmp_path / "manifest.toml"
    path.write_text(
        point_at(
            GOOD + f'[[paper]]\nurl = "http://127.0.0.1:{port}/x.pdf"\nname = "closed"\n', fake
        )
    )
    report = fetcher.sync(fetcher.load_manifest(path), policy=TINY)
    by_key = {e.key: e for e in report.entries}
    assert by_key["1706.03762"].status == "downloaded"
    assert by_key["closed"].status == "failed"
    assert by_key["closed"].error == f"connection refused by 127.0.0.1:{port}" or (
        f"127.0.0.1:{port}" in (by_key["closed"].error or "")
    )
    assert "\n" not in (by_key["closed"].error or "")
