"""The fake arXiv/web server behaves like arXiv, injects each fault, and records politely.

These tests pin the test double itself, so integration tests of fetcher can trust it.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURES, REPO
from tests.fakeserver import FakeServer, Fault, is_well_formed_id, make_pdf

NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "arxiv": "http://arxiv.org/schemas/atom",
    "opensearch": "http://a9.com/-/spec/opensearch/1.1/",
}

PDF1 = make_pdf("1706.03762v1", 20_000)
PDF7 = make_pdf("1706.03762v7", 50_000)
WEB_PDF = make_pdf("gpt1", 30_000)
PDF_PATH = "/pdf/1706.03762v7"
WEB_PATH = "/web/cdn.openai.com/x/gpt1.pdf"


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        server.add_arxiv(
            "1706.03762",
            versions={1: PDF1, 7: PDF7},
            title="Attention Is All You Need",
            authors=["Ashish Vaswani", "Noam Shazeer"],
            summary="The dominant sequence transduction models ...",
            categories=["cs.CL", "cs.LG"],
            published="2017-06-12T17:57:34Z",
        )
        server.add_file(WEB_PATH, WEB_PDF)
        yield server


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One client for the module: building one costs ~15 ms (TLS context), servers differ
    by port so no connection is ever shared between tests."""
    with httpx.Client(timeout=5) as c:
        yield c


def feed(text: str | bytes) -> ET.Element:
    return ET.fromstring(text)


def entry_ids(root: ET.Element) -> list[str]:
    return [e.findtext("atom:id", namespaces=NS) or "" for e in root.findall("atom:entry", NS)]


def wait_until(predicate: object, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


# --- make_pdf ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 500, 1023, 1024, 1025, 9_999, 10_000, 200_000])
def test_make_pdf_has_exact_size_and_pdf_markers(size: int) -> None:
    data = make_pdf("1706.03762v7", size)
    assert len(data) == size
    assert data.startswith(b"%PDF-1.4\n")
    assert data.endswith(b"\n%%EOF\n")


def test_make_pdf_is_deterministic_and_varies_with_label() -> None:
    assert make_pdf("a", 5000) == make_pdf("a", 5000)
    assert make_pdf("a", 5000) != make_pdf("b", 5000)
    big = make_pdf("a", 5000)
    assert b"/Type /Catalog" in big and b"startxref" in big
    with pytest.raises(ValueError):
        make_pdf("a", 10)


# --- the API -----------------------------------------------------------------------------


def test_api_returns_latest_or_pinned_version(srv: FakeServer, client: httpx.Client) -> None:
    r = client.get(f"{srv.url}/api/query", params={"id_list": "1706.03762", "max_results": 1})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/atom+xml; charset=UTF-8"
    root = feed(r.content)
    assert entry_ids(root) == ["http://arxiv.org/abs/1706.03762v7"]
    assert root.findtext("opensearch:totalResults", namespaces=NS) == "1"
    entry = root.find("atom:entry", NS)
    assert entry is not None
    assert entry.findtext("atom:title", namespaces=NS) == "Attention Is All You Need"
    assert [a.findtext("atom:name", namespaces=NS) for a in entry.findall("atom:author", NS)] == [
        "Ashish Vaswani", "Noam Shazeer"]
    pdf_links = [link.get("href") for link in entry.findall("atom:link", NS)
                 if link.get("title") == "pdf"]
    assert pdf_links == ["https://arxiv.org/pdf/1706.03762v7"]
    primary = entry.find("arxiv:primary_category", NS)
    assert primary is not None and primary.get("term") == "cs.CL"

    r = client.get(f"{srv.url}/api/query?id_list=1706.03762v1&max_results=10")
    assert entry_ids(feed(r.content)) == ["http://arxiv.org/abs/1706.03762v1"]


def test_api_keeps_order_skips_unknown_and_pages(srv: FakeServer, client: httpx.Client) -> None:
    srv.add_arxiv("hep-th/9901001", {2: make_pdf("old", 2000)})
    ids = "9999.99999,hep-th/9901001,1706.03762v2,1706.03762v1,1706.03762"
    r = client.get(f"{srv.url}/api/query", params={"search_query": "", "id_list": ids,
                                                  "sortBy": "relevance", "max_results": 100})
    root = feed(r.content)
    assert entry_ids(root) == [
        "http://arxiv.org/abs/hep-th/9901001v2",
        "http://arxiv.org/abs/1706.03762v1",
        "http://arxiv.org/abs/1706.03762v7",
    ]
    assert root.findtext("opensearch:totalResults", namespaces=NS) == "3"
    r = client.get(f"{srv.url}/api/query", params={"id_list": ids, "start": 1, "max_results": 1})
    root = feed(r.content)
    assert entry_ids(root) == ["http://arxiv.org/abs/1706.03762v1"]
    assert root.findtext("opensearch:totalResults", namespaces=NS) == "3"
    assert root.findtext("opensearch:startIndex", namespaces=NS) == "1"


def test_api_malformed_id_is_400_error_feed(srv: FakeServer, client: httpx.Client) -> None:
    r = client.get(f"{srv.url}/api/query", params={"id_list": "1706.03762,abc"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/atom+xml")
    root = feed(r.content)
    entry = root.find("atom:entry", NS)
    assert entry is not None
    assert entry.findtext("atom:summary", namespaces=NS) == "incorrect id format for abc"
    assert entry.findtext("atom:id", namespaces=NS) == (
        "https://arxiv.org/api/errors#incorrect_id_format_for_abc")


@pytest.mark.parametrize(
    ("text", "ok"),
    [("1706.03762", True), ("1706.03762v7", True), ("0808.05394", True), ("0704.0001", True),
     ("hep-th/9901001", True), ("hep-th/9901001v2", True), ("math.GT/0309136", True),
     ("abc", False), ("1706.037", False), ("1706.03762v", False), ("hep-th/990100", False),
     ("arXiv:1706.03762", False), ("", False)],
)
def test_id_well_formedness(text: str, ok: bool) -> None:
    assert is_well_formed_id(text) is ok


def _fixture_cases() -> list[str]:
    names = sorted(p.name for p in FIXTURES.glob("id_*.xml"))
    assert names, f"no recorded arXiv responses in {FIXTURES}"
    return names


def _fixture_query(name: str) -> str:
    ids = name.removeprefix("id_").split("_s0_")[0].replace("_", ",")
    return ("search_query=&id_list=" + ids.replace(",", "%2C")
            + "&sortBy=relevance&sortOrder=descending&start=0&max_results=100")


def _normalise_feed(text: str) -> str:
    """Blank the parts that differ per request: the feed id and the time of the query."""
    text = re.sub(r"<id>https://arxiv\.org/api/[^<]*</id>", "<id>FEED</id>", text, count=1)
    first = re.search(r"<updated>([^<]*)</updated>", text)
    assert first is not None
    return text.replace(f"<updated>{first.group(1)}</updated>", "<updated>NOW</updated>")


@pytest.mark.parametrize("name", _fixture_cases())
def test_api_output_matches_recorded_arxiv_responses(name: str) -> None:
    """Register each recorded paper, ask the same question, get arXiv's answer byte for byte."""
    recorded = (FIXTURES / name).read_text(encoding="utf-8")
    root = feed(recorded.encode())
    with FakeServer() as server:
        for entry in root.findall("atom:entry", NS):
            entry_id = entry.findtext("atom:id", namespaces=NS) or ""
            if "/api/errors#" in entry_id:
                continue
            m = re.fullmatch(r"http://arxiv\.org/abs/(.+)v(\d+)", entry_id)
            assert m is not None
            server.add_arxiv(
                m.group(1),
                {int(m.group(2)): make_pdf(entry_id, 1000)},
                title=entry.findtext("atom:title", namespaces=NS),
                authors=[a.findtext("atom:name", default="", namespaces=NS)
                         for a in entry.findall("atom:author", NS)],
                summary=entry.findtext("atom:summary", namespaces=NS),
                categories=[c.get("term", "") for c in entry.findall("atom:category", NS)],
                published=entry.findtext("atom:published", namespaces=NS),
                updated=entry.findtext("atom:updated", namespaces=NS),
                comment=entry.findtext("arxiv:comment", namespaces=NS),
                journal_ref=entry.findtext("arxiv:journal_ref", namespaces=NS),
                doi=entry.findtext("arxiv:doi", namespaces=NS),
            )
        r = httpx.get(f"{server.url}/api/query?{_fixture_query(name)}", timeout=5)
    expected_status = 400 if "incorrect id format" in recorded else 200
    assert r.status_code == expected_status
    assert _normalise_feed(r.content.decode("utf-8")) == _normalise_feed(recorded)


def test_api_escapes_text_and_parses_with_arxiv_package(
    srv: FakeServer, client: httpx.Client
) -> None:
    arxiv_feed = pytest.importorskip("arxiv._feed")
    srv.add_arxiv(
        "hep-th/9901001",
        {1: make_pdf("o1", 1000), 2: make_pdf("o2", 1000)},
        title='Strings & <branes> "quoted"',
        authors=["Ö. Ümlaut", "B & C"],
        summary="a < b && c > d",
        categories=["hep-th", "gr-qc"],
        published="1999-01-04T10:00:00Z",
        updated="1999-03-01T10:00:00Z",
        doi="10.1000/x&y",
        journal_ref="J. Phys. <A> 1 (1999)",
        comment="12 pages & 3 figures",
    )
    r = client.get(f"{srv.url}/api/query", params={"id_list": "hep-th/9901001"})
    parsed = arxiv_feed.parse(r.content)
    (result,) = parsed.results
    assert result.entry_id == "http://arxiv.org/abs/hep-th/9901001v2"
    assert result.title == 'Strings & <branes> "quoted"'
    assert [a.name for a in result.authors] == ["Ö. Ümlaut", "B & C"]
    assert result.summary == "a < b && c > d"
    assert result.categories == ["hep-th", "gr-qc"]
    assert result.primary_category == "hep-th"
    assert result.doi == "10.1000/x&y"
    assert result.journal_ref == "J. Phys. <A> 1 (1999)"
    assert result.comment == "12 pages & 3 figures"
    assert result.updated.year == 1999 and result.updated.month == 3
    assert result.published.month == 1
    assert result.pdf_url == "https://arxiv.org/pdf/hep-th/9901001v2"


# --- PDFs --------------------------------------------------------------------------------


def test_pdf_dot_pdf_redirects_301(srv: FakeServer, client: httpx.Client) -> None:
    r = client.get(f"{srv.url}/pdf/1706.03762v7.pdf")
    assert r.status_code == 301
    assert r.headers["location"] == "/pdf/1706.03762v7"
    r = client.get(f"{srv.url}/pdf/1706.03762v7.pdf", follow_redirects=True)
    assert r.status_code == 200 and r.content == PDF7


def test_pdf_is_chunked_with_validators(srv: FakeServer, client: httpx.Client) -> None:
    r = client.get(f"{srv.url}/pdf/1706.03762v7")
    assert r.status_code == 200
    assert r.content == PDF7
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    assert r.headers["accept-ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+"', r.headers["etag"])
    assert r.headers["last-modified"].endswith(" GMT")
    assert client.get(f"{srv.url}/pdf/1706.03762").content == PDF7  # unversioned = latest
    assert client.get(f"{srv.url}/pdf/1706.03762v1").content == PDF1
    assert (client.get(f"{srv.url}/pdf/1706.03762v1").headers["etag"]
            != r.headers["etag"])


@pytest.mark.parametrize("path", ["/pdf/1706.03762v3", "/pdf/2001.00001", "/pdf/nonsense",
                                  "/nothing/here"])
def test_unknown_pdf_is_404(srv: FakeServer, client: httpx.Client, path: str) -> None:
    assert client.get(srv.url + path).status_code == 404


def test_pdf_head(srv: FakeServer, client: httpx.Client) -> None:
    r = client.head(f"{srv.url}/pdf/1706.03762v7")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["etag"]
    assert client.get(f"{srv.url}/pdf/1706.03762v7").content == PDF7  # connection still sane


def test_pdf_ranges(srv: FakeServer, client: httpx.Client) -> None:
    r = client.get(f"{srv.url}/pdf/1706.03762v7", headers={"Range": "bytes=1000-"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-{len(PDF7) - 1}/{len(PDF7)}"
    assert r.content == PDF7[1000:]
    r = client.get(f"{srv.url}/pdf/1706.03762v7", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 10-19/{len(PDF7)}"
    assert r.content == PDF7[10:20]
    r = client.get(f"{srv.url}/pdf/1706.03762v7", headers={"Range": f"bytes={len(PDF7)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(PDF7)}"


def test_if_range(srv: FakeServer, client: httpx.Client) -> None:
    full = client.get(f"{srv.url}/pdf/1706.03762v7")
    etag, modified = full.headers["etag"], full.headers["last-modified"]
    url = f"{srv.url}/pdf/1706.03762v7"
    r = client.get(url, headers={"Range": "bytes=5-", "If-Range": etag})
    assert r.status_code == 206 and r.content == PDF7[5:]
    r = client.get(url, headers={"Range": "bytes=5-", "If-Range": modified})
    assert r.status_code == 206
    r = client.get(url, headers={"Range": "bytes=5-", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == PDF7
    r = client.get(url, headers={"Range": "bytes=5-", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 200


def test_conditional_get(srv: FakeServer, client: httpx.Client) -> None:
    etag = client.get(srv.url + WEB_PATH).headers["etag"]
    r = client.get(srv.url + WEB_PATH, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert client.get(srv.url + WEB_PATH, headers={"If-None-Match": '"x"'}).status_code == 200


def test_add_version_and_replace_bytes(srv: FakeServer, client: httpx.Client) -> None:
    before = client.get(f"{srv.url}/pdf/1706.03762v7")
    pdf8 = make_pdf("1706.03762v8", 3000)
    srv.add_version("1706.03762", 8, pdf8)
    assert client.get(f"{srv.url}/pdf/1706.03762").content == pdf8
    r = client.get(f"{srv.url}/api/query?id_list=1706.03762")
    assert entry_ids(feed(r.content)) == ["http://arxiv.org/abs/1706.03762v8"]

    rebuilt = make_pdf("1706.03762v7 rebuilt", 50_000)
    srv.replace_bytes("/pdf/1706.03762v7", rebuilt)
    after = client.get(f"{srv.url}/pdf/1706.03762v7")
    assert after.content == rebuilt
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["last-modified"] != before.headers["last-modified"]
    r = client.get(f"{srv.url}/pdf/1706.03762v7",
                   headers={"Range": "bytes=100-", "If-Range": before.headers["etag"]})
    assert r.status_code == 200 and r.content == rebuilt

    srv.replace_bytes(WEB_PATH, b"%PDF-new")
    assert client.get(srv.url + WEB_PATH).content == b"%PDF-new"
    with pytest.raises(KeyError):
        srv.replace_bytes("/pdf/2001.00001v1", b"x")


# --- direct files ------------------------------------------------------------------------


def test_web_files(srv: FakeServer, client: httpx.Client) -> None:
    r = client.get(srv.url + WEB_PATH)
    assert r.status_code == 200 and r.content == WEB_PDF
    assert r.headers["content-length"] == str(len(WEB_PDF))
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["etag"] and r.headers["last-modified"] and r.headers["accept-ranges"]
    r = client.get(srv.url + WEB_PATH, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == WEB_PDF[100:200]
    assert r.headers["content-length"] == "100"
    assert client.get(srv.url + "/web/cdn.openai.com/x/missing.pdf").status_code == 404

    page = b"<html><body>MoE</body></html>"
    srv.add_file("/web/huggingface.co/blog/moe", page, content_type="text/html; charset=utf-8")
    r = client.get(srv.rewrite_url("https://huggingface.co/blog/moe"))
    assert r.content == page and r.headers["content-type"].startswith("text/html")


def test_rewrite_url_and_add_file_by_url(srv: FakeServer, client: httpx.Client) -> None:
    url = "https://cdn.openai.com/a/b.pdf"
    assert srv.rewrite_url(url) == f"{srv.url}/web/cdn.openai.com/a/b.pdf"
    assert srv.rewrite_url("https://h.org/p?x=1") == f"{srv.url}/web/h.org/p?x=1"
    assert srv.add_file(url, b"%PDF-b") == "/web/cdn.openai.com/a/b.pdf"
    assert client.get(srv.rewrite_url(url) + "?ignored=1").content == b"%PDF-b"
    assert srv.arxiv_api == f"{srv.url}/api/query"
    assert srv.arxiv_pdf.format(id="1706.03762v7") == f"{srv.url}/pdf/1706.03762v7"


# --- faults ------------------------------------------------------------------------------


def _read_until_error(response: httpx.Response) -> int:
    got = 0
    with pytest.raises(httpx.TransportError):
        for part in response.iter_raw():
            got += len(part)
    return got


def test_cut_after_chunked(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(PDF_PATH, Fault.cut_after(1000))
    with client.stream("GET", srv.url + PDF_PATH) as r:
        assert r.status_code == 200
        assert _read_until_error(r) == 1000
    assert client.get(srv.url + PDF_PATH).content == PDF7  # only once


def test_cut_after_content_length(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(WEB_PATH, Fault.cut_after(500))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(srv.url + WEB_PATH)
    with client.stream("GET", srv.url + WEB_PATH, headers={"Range": "bytes=100-"}) as r:
        assert r.status_code == 206 and r.read() == WEB_PDF[100:]


def test_fault_queue_times_and_order(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault("/api/query", Fault.status(503, retry_after="2"), times=2)
    srv.fault("/api/query", Fault.status(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    url = f"{srv.url}/api/query?id_list=1706.03762"
    responses = [client.get(url) for _ in range(4)]
    assert [r.status_code for r in responses] == [503, 503, 429, 200]
    assert responses[0].headers["retry-after"] == "2"
    assert responses[2].headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert responses[0].text == "503 Service Unavailable\n"
    assert [r.status for r in srv.requests] == [503, 503, 429, 200]
    assert [r.fault for r in srv.requests] == ["status", "status", "status", None]
    assert srv.pending_faults("/api/query") == []


def test_fault_matches_exact_path_only(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(PDF_PATH, Fault.status(403))
    assert client.get(f"{srv.url}/pdf/1706.03762").status_code == 200
    assert client.get(f"{srv.url}/pdf/1706.03762v1").status_code == 200
    assert client.get(srv.url + PDF_PATH + "?x=1").status_code == 403


def test_status_with_body(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(WEB_PATH, Fault.status(410, body=b"<h1>gone</h1>", content_type="text/html"))
    r = client.get(srv.url + WEB_PATH)
    assert r.status_code == 410 and r.content == b"<h1>gone</h1>"
    assert r.headers["content-type"] == "text/html"
    assert "retry-after" not in r.headers


def test_ignore_range(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(PDF_PATH, Fault.ignore_range())
    r = client.get(srv.url + PDF_PATH, headers={"Range": "bytes=1000-"})
    assert r.status_code == 200 and r.content == PDF7
    assert "content-range" not in r.headers


def test_wrong_content_range(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(PDF_PATH, Fault.wrong_content_range(500))
    r = client.get(srv.url + PDF_PATH, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 500-{len(PDF7) - 1}/{len(PDF7)}"
    assert r.content == PDF7[500:]


def test_html_200(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(PDF_PATH, Fault.html_200())
    r = client.get(srv.url + PDF_PATH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.content.lstrip().lower().startswith(b"<!doctype html")


def test_trickle_is_slow_and_complete(srv: FakeServer, client: httpx.Client) -> None:
    srv.add_file("/web/slow.example/tiny.pdf", b"%PDF-0123456789ABCDE")
    srv.fault("/web/slow.example/tiny.pdf", Fault.trickle(0.01, chunk=2))
    t0 = time.monotonic()
    r = client.get(srv.url + "/web/slow.example/tiny.pdf")
    assert r.content == b"%PDF-0123456789ABCDE"
    assert time.monotonic() - t0 >= 0.09  # 10 pieces, 9 pauses


def test_trickle_stops_when_client_leaves(srv: FakeServer) -> None:
    srv.fault(PDF_PATH, Fault.trickle(0.01, chunk=1))
    with httpx.Client(timeout=5) as c, c.stream("GET", srv.url + PDF_PATH) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"%")
    # the client is gone: the handler notices on a following write and finishes
    assert wait_until(lambda: srv.requests[-1].end is not None)


def test_content_length_lies(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(WEB_PATH, Fault.content_length(+10))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(srv.url + WEB_PATH)
    srv.fault(WEB_PATH, Fault.content_length(-10))
    r = client.get(srv.url + WEB_PATH)
    assert r.headers["content-length"] == str(len(WEB_PDF) - 10)
    assert r.content == WEB_PDF[:-10]
    srv.fault(PDF_PATH, Fault.content_length(+1))  # a chunked resource gets a lying length too
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(srv.url + PDF_PATH)


def test_endless(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(PDF_PATH, Fault.endless(chunk=65536))
    got = b""
    with client.stream("GET", srv.url + PDF_PATH) as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        for part in r.iter_raw():
            got += part
            if len(got) > 1_000_000:
                break
    assert got.startswith(b"%PDF-")
    assert wait_until(lambda: srv.requests[-1].end is not None)


def test_gzip(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(WEB_PATH, Fault.gzip())
    with client.stream("GET", srv.url + WEB_PATH) as r:
        raw = r.read()  # decoded by httpx
        assert r.headers["content-encoding"] == "gzip"
        assert int(r.headers["content-length"]) == len(gzip.compress(WEB_PDF, mtime=0))
    assert raw == WEB_PDF
    srv.fault(PDF_PATH, Fault.gzip())
    r = client.get(srv.url + PDF_PATH)
    assert r.content == PDF7 and "transfer-encoding" not in r.headers


def test_delay(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault(PDF_PATH, Fault.delay(2.0))
    with pytest.raises(httpx.ReadTimeout):
        client.get(srv.url + PDF_PATH, timeout=0.2)
    srv.fault(PDF_PATH, Fault.delay(0.1))
    t0 = time.monotonic()
    assert client.get(srv.url + PDF_PATH).content == PDF7
    assert time.monotonic() - t0 >= 0.1


def test_redirect(srv: FakeServer, client: httpx.Client) -> None:
    srv.fault("/web/old.example/paper.pdf", Fault.redirect(WEB_PATH))
    r = client.get(srv.url + "/web/old.example/paper.pdf")
    assert r.status_code == 302 and r.headers["location"] == WEB_PATH
    srv.fault("/web/old.example/paper.pdf", Fault.redirect(srv.url + WEB_PATH, code=307))
    r = client.get(srv.url + "/web/old.example/paper.pdf", follow_redirects=True)
    assert r.content == WEB_PDF
    assert [h.status_code for h in r.history] == [307]


# --- the request log ---------------------------------------------------------------------


def test_records(srv: FakeServer, client: httpx.Client) -> None:
    client.get(f"{srv.url}/api/query?id_list=1706.03762", headers={"User-Agent": "fetcher/0.1"})
    client.get(srv.url + PDF_PATH, headers={"Range": "bytes=0-9"})
    first, second = srv.requests
    assert (first.method, first.path, first.query, first.status) == (
        "GET", "/api/query", "id_list=1706.03762", 200)
    assert first.headers["user-agent"] == "fetcher/0.1"
    assert second.headers["range"] == "bytes=0-9" and second.status == 206
    assert first.end is not None and first.start <= first.end <= second.start
    assert abs(first.start - time.time()) < 5  # wall clock, comparable across processes
    assert first.client_port == second.client_port  # keep-alive reused the connection
    assert first.thread_id == second.thread_id
    srv.reset_log()
    assert srv.requests == []


def test_sequential_clients_never_overlap(srv: FakeServer) -> None:
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=5, limits=no_keepalive) as c:
        for _ in range(30):  # a new connection each time: different handler threads
            c.get(srv.url + PDF_PATH)
    assert len(srv.requests) == 30
    assert len({r.client_port for r in srv.requests}) == 30
    assert srv.max_concurrency() == 1


def test_concurrency_is_measured(srv: FakeServer) -> None:
    srv.fault(PDF_PATH, Fault.delay(0.2), times=3)
    barrier = threading.Barrier(3)

    def fetch() -> None:
        barrier.wait()
        httpx.get(srv.url + PDF_PATH, timeout=5)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    httpx.get(srv.url + WEB_PATH, timeout=5)
    assert srv.max_concurrency() == 3
    assert srv.max_concurrency(prefix="/pdf/") == 3
    assert srv.max_concurrency(prefix="/web/") == 1
    assert srv.max_concurrency(prefix="/api/") == 0
    assert len({r.thread_id for r in srv.requests}) >= 3


def test_min_gap(srv: FakeServer, client: httpx.Client) -> None:
    assert srv.min_gap() is None
    client.get(f"{srv.url}/api/query?id_list=1706.03762")
    assert srv.min_gap() is None
    time.sleep(0.05)
    client.get(srv.url + WEB_PATH)  # not counted by the default prefixes
    time.sleep(0.1)
    client.get(srv.url + PDF_PATH)
    gap = srv.min_gap()
    assert gap is not None and gap >= 0.15
    all_gap = srv.min_gap(prefix="/")
    assert all_gap is not None and 0.05 <= all_gap < 0.15


def test_in_flight_request_counts_as_open(srv: FakeServer) -> None:
    srv.fault(PDF_PATH, Fault.delay(0.3))
    t = threading.Thread(target=lambda: httpx.get(srv.url + PDF_PATH, timeout=5))
    t.start()
    assert wait_until(lambda: len(srv.requests) == 1)
    assert srv.requests[0].end is None and srv.requests[0].status == 0
    assert srv.max_concurrency() == 1
    t.join()
    assert srv.requests[0].end is not None and srv.requests[0].status == 200


# --- lifecycle, quietness, manifest, CLI ------------------------------------------------


def test_stop_is_fast_with_busy_connections_and_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    baseline = threading.active_count()
    server = FakeServer().start()
    server.add_file("/web/a/b.pdf", make_pdf("b", 100_000))
    server.fault("/web/a/b.pdf", Fault.endless())
    server.fault(PDF_PATH, Fault.delay(30))
    server.add_arxiv("1706.03762", {7: PDF7})
    idle = httpx.Client(timeout=5)
    idle.get(server.url + "/web/a/nothing")  # leaves an idle keep-alive connection
    stream_client = httpx.Client(timeout=5)
    stream = stream_client.send(stream_client.build_request("GET", server.url + "/web/a/b.pdf"),
                                stream=True)
    next(stream.iter_raw())  # endless response in progress, client not reading

    def wait_for_delayed() -> None:
        with pytest.raises(httpx.HTTPError):  # cut by stop(), long before the 30 s delay
            httpx.get(server.url + PDF_PATH, timeout=5)

    waiter = threading.Thread(target=wait_for_delayed)
    waiter.start()
    assert wait_until(lambda: len(server.requests) == 3)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.0
    waiter.join(timeout=2)
    stream.close()
    stream_client.close()
    idle.close()
    assert wait_until(lambda: threading.active_count() <= baseline)
    assert capfd.readouterr().err == ""


def test_client_disconnects_print_nothing(srv: FakeServer,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    srv.fault(PDF_PATH, Fault.cut_after(10))
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + PDF_PATH, timeout=5)
    with httpx.Client(timeout=5) as c, c.stream("GET", srv.url + PDF_PATH) as r:
        next(r.iter_raw())
    assert wait_until(lambda: all(r.end is not None for r in srv.requests))
    assert capfd.readouterr().err == ""


MANIFEST = """\
[settings]
library = "downloads"

[[paper]]
arxiv = "1706.03762"

[[paper]]
arxiv = "1810.04805v2"

[[paper]]
arxiv = "hep-th/9901001"

[[paper]]
arxiv = "https://arxiv.org/abs/2005.14165"

[[paper]]
url = "https://cdn.openai.com/research-covers/language-unsupervised/gpt1.pdf"
name = "gpt1"

[[paper]]
url = "https://huggingface.co/blog/moe"
name = "moe-blog"
format = "html"
"""


def test_load_manifest(tmp_path: Path, client: httpx.Client) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    with FakeServer() as server:
        paths = server.load_manifest(manifest, pdf_size=5000)
        assert paths == [
            "/pdf/1706.03762v1", "/pdf/1810.04805v2", "/pdf/hep-th/9901001v1",
            "/pdf/2005.14165v1",
            "/web/cdn.openai.com/research-covers/language-unsupervised/gpt1.pdf",
            "/web/huggingface.co/blog/moe",
        ]
        r = client.get(server.url + "/api/query",
                       params={"id_list": "1706.03762,1810.04805,hep-th/9901001,2005.14165"})
        root = feed(r.content)
        assert entry_ids(root) == [
            "http://arxiv.org/abs/1706.03762v1", "http://arxiv.org/abs/1810.04805v2",
            "http://arxiv.org/abs/hep-th/9901001v1", "http://arxiv.org/abs/2005.14165v1"]
        assert root.findtext("atom:entry/atom:title", namespaces=NS) == "Paper 1706.03762"
        pdf = client.get(server.url + "/pdf/1810.04805v2").content
        assert len(pdf) == 5000 and pdf.startswith(b"%PDF-")
        gpt1 = client.get(server.rewrite_url(
            "https://cdn.openai.com/research-covers/language-unsupervised/gpt1.pdf"))
        assert gpt1.status_code == 200 and len(gpt1.content) == 5000
        page = client.get(server.rewrite_url("https://huggingface.co/blog/moe"))
        assert page.headers["content-type"].startswith("text/html")
        assert b"<html" in page.content


def test_cli(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    script = REPO / "tests" / "fakeserver.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--manifest", str(manifest),
         "--pdf-size", "3000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        r = httpx.get(url + "/pdf/1706.03762v1", timeout=5)
        assert r.status_code == 200 and len(r.content) == 3000
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert proc.returncode == 0
