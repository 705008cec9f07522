"""Host names as the gates see them, measured by the fake server's request log.

URLs on real host names (info.arxiv.org, example.org) reach the loopback fake server
through a transport that rewrites each request to `/web/<host><path>`, so the client's
gates work on the names written in the manifest while the server logs every request.
"""

from __future__ import annotations

from pathlib import Path

import httpx

import fetcher
from fetcher.http import Policy
from tests.fakeserver import FakeServer, Fault, make_pdf

TINY = Policy(attempts=2, backoff_initial=0.01, backoff_max=0.02, connect_timeout=2, read_timeout=5)
PAGE = b"<!doctype html><html><head><title>t</title></head><body>" + b"x" * 2000 + b"</body></html>"


class ToFakeServer(httpx.BaseTransport):
    """Send requests for any host but the fake server's own to `/web/<host><path>` on it."""

    def __init__(self, srv: FakeServer):
        self.srv = srv
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.host != "127.0.0.1":
            query = f"?{url.query.decode()}" if url.query else ""
            request.url = httpx.URL(f"{self.srv.url}/web/{url.host}{url.path}{query}")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def settings(srv: FakeServer, arxiv_interval: float, host_interval: float) -> str:
    return (
        f'[settings]\narxiv_api = "{srv.arxiv_api}"\narxiv_pdf = "{srv.arxiv_pdf}"\n'
        f"arxiv_interval = {arxiv_interval}\nhost_interval = {host_interval}\n"
    )


def test_url_entries_on_arxiv_hosts_go_through_the_arxiv_gate(
    tmp_path: Path, fake: FakeServer
) -> None:
    """A port (`:443`), another subdomain (info.arxiv.org), case or a trailing dot do not
    make arXiv traffic a second lane: every request to arXiv, API, PDFs and these pages,
    is one at a time and `arxiv_interval` apart (F6). Every answer is slow, so a page
    fetched beside the arXiv lane would overlap with it."""
    interval = 0.15
    keys = ["2101.00001", "2101.00002"]
    for key in keys:
        fake.add_arxiv(key, {1: make_pdf(key, 5000)})
        fake.fault(f"/pdf/{key}v1", Fault.delay(0.2))
    fake.fault("/api/query", Fault.delay(0.2))
    pages = {
        "info": "https://info.arxiv.org/help/x.html",
        "listing": "https://export.arxiv.org:443/list/cs.CL/new",
        "upper": "https://ARXIV.org./a/someone.html",
    }
    for url in pages.values():
        parts = httpx.URL(url)
        path = f"/web/{parts.host}{parts.path}"
        fake.add_file(path, PAGE, "text/html; charset=utf-8")
        fake.fault(path, Fault.delay(0.2))
    text = settings(fake, interval, 0.0)
    text += "".join(f'[[paper]]\narxiv = "{key}"\n' for key in keys)
    text += "".join(
        f'[[paper]]\nurl = "{url}"\nname = "{name}"\nformat = "html"\n'
        for name, url in pages.items()
    )
    path = tmp_path / "manifest.toml"
    path.write_text(text)

    report = fetcher.sync(fetcher.load_manifest(path), policy=TINY, transport=ToFakeServer(fake))

    assert {e.key: e.status for e in report.entries} == dict.fromkeys([*keys, *pages], "downloaded")
    web = [r.path for r in fake.requests if r.path.startswith("/web/")]
    assert sorted(web) == [
        "/web/arxiv.org./a/someone.html",
        "/web/export.arxiv.org/list/cs.CL/new",
        "/web/info.arxiv.org/help/x.html",
    ]
    assert len(fake.requests) == 2 + 1 + 3  # two PDFs, one API batch, three pages
    assert fake.max_concurrency("/") == 1
    gap = fake.min_gap("/")
    assert gap is not None and gap >= interval, gap


def test_a_pause_beyond_the_cap_stops_requests_to_that_host(
    tmp_path: Path, fake: FakeServer
) -> None:
    """`Retry-After: 3600` from one web host: that host gets no further request in the run,
    its other entries fail saying when to try again, the rest is done (F5)."""
    fake.add_arxiv("2101.00001", {1: make_pdf("2101.00001", 5000)})
    names = ["a", "b", "c"]
    for name in names:
        local = fake.add_file(f"/web/example.org/{name}.pdf", make_pdf(name, 5000))
        fake.fault(local, Fault.status(503, retry_after="3600"))
    fake.add_file("/web/other.example/d.pdf", make_pdf("d", 5000))
    text = settings(fake, 0.02, 0.2) + '[[paper]]\narxiv = "2101.00001"\n'
    text += "".join(
        f'[[paper]]\nurl = "https://example.org/{name}.pdf"\nname = "{name}"\n' for name in names
    )
    text += '[[paper]]\nurl = "https://other.example/d.pdf"\nname = "d"\n'
    path = tmp_path / "manifest.toml"
    path.write_text(text)

    report = fetcher.sync(fetcher.load_manifest(path), policy=TINY, transport=ToFakeServer(fake))

    by_key = {e.key: e for e in report.entries}
    assert by_key["2101.00001"].status == "downloaded"
    assert by_key["d"].status == "downloaded"
    to_host = [r.path for r in fake.requests if r.path.startswith("/web/example.org/")]
    assert len(to_host) == 1, to_host
    errors = {by_key[n].error for n in names}
    assert all(by_key[n].status == "failed" for n in names)
    assert len(errors) == 1  # the first answer's message, for all three
    [error] = errors
    assert error is not None
    assert "asks to wait 3600s (more than 600s); try again after " in error
    assert "no more requests to example.org in this run" in error
    for name in names:
        assert not (tmp_path / "downloads" / f"{name}.pdf").exists()
