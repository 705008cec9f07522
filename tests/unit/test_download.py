"""Streaming into a partial file: hash on the way, content checks, resume, commit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
import respx

from fetcher.download import Downloader, commit
from fetcher.errors import ContentError, IntegrityError, TransientError
from fetcher.http import Http, Policy
from tests.conftest import FakeClock

URL = "https://cdn.example/paper.pdf"
PDF = b"%PDF-1.5\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@pytest.fixture
def downloader(tmp_path: Path, clock: FakeClock) -> Downloader:
    http = Http(
        arxiv_hosts=frozenset({"export.arxiv.org"}),
        arxiv_interval=0.0,
        host_interval=0.0,
        clock=clock,
    )
    return Downloader(http, tmp_path / ".fetcher" / "partial", Policy(), clock)


@respx.mock
def test_download_hashes_what_it_stores_and_commits_atomically(
    downloader: Downloader, tmp_path: Path
) -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF, headers={"ETag": '"v1"'}))
    fetched = downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)
    assert fetched.sha256 == hashlib.sha256(PDF).hexdigest()
    assert fetched.size == len(PDF)
    assert fetched.partial.read_bytes() == PDF
    dest = tmp_path / "paper.pdf"
    assert not dest.exists()
    commit(fetched, dest)
    assert dest.read_bytes() == PDF
    assert list((tmp_path / ".fetcher" / "partial").iterdir()) == []


@respx.mock
def test_html_served_as_pdf_is_refused_and_nothing_is_kept(downloader: Downloader) -> None:
    respx.get(URL).mock(
        return_value=httpx.Response(
            200, content=b"<html>Please log in</html>", headers={"Content-Type": "text/html"}
        )
    )
    with pytest.raises(ContentError, match="HTML page"):
        downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)
    assert list(downloader.partial_dir.iterdir()) == []


@respx.mock
def test_html_body_with_a_pdf_content_type_is_caught_by_the_sniff(
    downloader: Downloader,
) -> None:
    respx.get(URL).mock(
        return_value=httpx.Response(
            200, content=b"<!doctype html><p>error", headers={"Content-Type": "application/pdf"}
        )
    )
    with pytest.raises(ContentError, match="not a PDF"):
        downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)


@respx.mock
def test_pdf_without_eof_marker_is_truncated(downloader: Downloader) -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF[:-8]))
    with pytest.raises(ContentError, match="truncated"):
        downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)


@respx.mock
def test_pin_mismatch_stores_nothing(downloader: Downloader) -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF))
    with pytest.raises(IntegrityError, match="pins sha256"):
        downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6, pin="0" * 64)
    assert list(downloader.partial_dir.iterdir()) == []


@respx.mock
def test_body_over_max_size_is_refused(downloader: Downloader) -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF))
    with pytest.raises(ContentError, match="max_size"):
        downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=1000)
    assert list(downloader.partial_dir.iterdir()) == []


@respx.mock
def test_html_entry_refuses_a_pdf(downloader: Downloader) -> None:
    respx.get("https://blog.example/post").mock(
        return_value=httpx.Response(200, content=PDF, headers={"Content-Type": "application/pdf"})
    )
    with pytest.raises(ContentError, match="HTML page was expected"):
        downloader.fetch("https://blog.example/post", "post.html", expect="html", max_size=10**6)


def _leave_partial(downloader: Downloader, data: bytes, etag: str = '"v1"') -> None:
    part, note = downloader.paths("paper.pdf")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    note.write_text(json.dumps({"url": URL, "etag": etag, "last_modified": None}))


@respx.mock
def test_resume_sends_range_and_if_range_and_hashes_the_whole_file(
    downloader: Downloader,
) -> None:
    _leave_partial(downloader, PDF[:1000])
    route = respx.get(URL).mock(
        return_value=httpx.Response(
            206,
            content=PDF[1000:],
            headers={"Content-Range": f"bytes 1000-{len(PDF) - 1}/{len(PDF)}", "ETag": '"v1"'},
        )
    )
    fetched = downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)
    request = route.calls[0].request
    assert request.headers["range"] == "bytes=1000-"
    assert request.headers["if-range"] == '"v1"'
    assert fetched.resumed_from == 1000
    assert fetched.partial.read_bytes() == PDF
    assert fetched.sha256 == hashlib.sha256(PDF).hexdigest()


@respx.mock
def test_a_200_answer_to_a_range_request_restarts_from_zero(downloader: Downloader) -> None:
    _leave_partial(downloader, b"%PDF-old bytes of another version")
    respx.get(URL).mock(return_value=httpx.Response(200, content=PDF, headers={"ETag": '"v2"'}))
    fetched = downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)
    assert fetched.resumed_from == 0
    assert fetched.partial.read_bytes() == PDF


@respx.mock
def test_a_206_starting_elsewhere_is_never_spliced(downloader: Downloader) -> None:
    _leave_partial(downloader, PDF[:1000])
    respx.get(URL).mock(
        return_value=httpx.Response(
            206,
            content=PDF[500:],
            headers={"Content-Range": f"bytes 500-{len(PDF) - 1}/{len(PDF)}", "ETag": '"v1"'},
        )
    )
    with pytest.raises(TransientError, match="restarting"):
        downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)
    part, _ = downloader.paths("paper.pdf")
    assert not part.exists()  # the next attempt starts from zero


@respx.mock
def test_a_206_of_another_version_is_never_spliced(downloader: Downloader) -> None:
    _leave_partial(downloader, PDF[:1000], etag='"v1"')
    respx.get(URL).mock(
        return_value=httpx.Response(
            206,
            content=PDF[1000:],
            headers={"Content-Range": f"bytes 1000-{len(PDF) - 1}/{len(PDF)}", "ETag": '"v2"'},
        )
    )
    with pytest.raises(TransientError):
        downloader.fetch(URL, "paper.pdf", expect="pdf", max_size=10**6)


@respx.mock
def test_partial_of_another_url_is_not_resumed(downloader: Downloader) -> None:
    _leave_partial(downloader, PDF[:1000])
    other = "https://cdn.example/other.pdf"
    route = respx.get(other).mock(return_value=httpx.Response(200, content=PDF))
    downloader.fetch(other, "paper.pdf", expect="pdf", max_size=10**6)
    assert "range" not in route.calls[0].request.headers
