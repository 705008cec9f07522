"""A respx-mocked arXiv for unit tests: synthetic Atom feeds and PDFs for known ids."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import respx

API = "https://export.arxiv.org/api/query"


def pdf_for(label: str) -> bytes:
    return (
        b"%PDF-1.4\n% "
        + label.encode()
        + b"\n"
        + hashlib.sha256(label.encode()).digest() * 50
        + b"\n%%EOF\n"
    )


def atom(ids_versions: list[tuple[str, int]]) -> bytes:
    entries = "".join(
        f"""<entry><id>http://arxiv.org/abs/{i}v{v}</id>
<updated>2020-01-02T00:00:00Z</updated><published>2019-05-01T00:00:00Z</published>
<title>Paper {i}</title><summary>About {i}.</summary>
<author><name>Ada Lovelace</name></author><author><name>Alan Turing</name></author>
<category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
<arxiv:primary_category term="cs.CL"/></entry>"""
        for i, v in ids_versions
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom">' + entries + "</feed>"
    ).encode()


class Arxiv:
    """A respx arXiv: known papers with versions; records what was asked."""

    def __init__(self, router: respx.MockRouter, papers: dict[str, int]):
        self.papers = papers
        self.api_calls = 0
        router.get(url__startswith=API).mock(side_effect=self.api)
        router.get(url__regex=r"https://export\.arxiv\.org/pdf/.*").mock(side_effect=self.pdf)

    def api(self, request: httpx.Request) -> httpx.Response:
        self.api_calls += 1
        asked = parse_qs(urlsplit(str(request.url)).query)["id_list"][0].split(",")
        found = []
        for a in asked:
            base, _, v = a.partition("v")
            if base in self.papers:
                found.append((base, int(v) if v else self.papers[base]))
        return httpx.Response(200, content=atom(found))

    def pdf(self, request: httpx.Request) -> httpx.Response:
        vid = request.url.path.removeprefix("/pdf/")
        m = re.match(r"(.+)v(\d+)$", vid)
        if not m or m.group(1) not in self.papers:
            return httpx.Response(404)
        return httpx.Response(200, content=pdf_for(vid), headers={"ETag": f'"{vid}"'})
