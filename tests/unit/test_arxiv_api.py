"""Metadata parsing against arXiv's real responses, and batching through the gate."""

from __future__ import annotations

import httpx
import pytest
import respx

from fetcher import ids
from fetcher.arxiv_api import fetch_metadata, parse_feed, query_url
from fetcher.errors import ContentError
from fetcher.http import Http
from tests.conftest import FIXTURES, FakeClock

API = "https://export.arxiv.org/api/query"


def fixture(name: str) -> bytes:
    return next(FIXTURES.glob(name + "_*.xml")).read_bytes()


def test_real_feed_single_paper_has_every_field() -> None:
    [paper] = parse_feed(fixture("id_1707.08567_s0_m100"))
    assert paper.id == "1707.08567"
    assert paper.version == 1
    assert paper.title.startswith("Proceedings of Workshop AEW10")
    assert len(paper.authors) == 34
    assert paper.authors[0] == "Kees A. Schouhamer Immink"
    assert paper.authors[-1] == "Hirosuke Yamamoto"
    assert paper.categories == ("cs.IT",)
    assert paper.primary_category == "cs.IT"
    assert paper.published == "2017-07-27T08:18:33Z"
    assert paper.comment is not None and paper.comment.startswith("44 pages")
    assert paper.abstract.startswith("The 10th Asia-Europe workshop")
    assert "\n" not in paper.abstract


def test_real_feed_versioned_request_and_title_that_is_a_number() -> None:
    [paper] = parse_feed(fixture("id_2104.12255v1_s0_m100"))
    assert (paper.id, paper.version, paper.title) == ("2104.12255", 1, "0")


def test_real_feed_unknown_id_is_simply_absent() -> None:
    assert parse_feed(fixture("id_0000.0000_s0_m100")) == []
    assert [p.id for p in parse_feed(fixture("id_0808.05394_1707.08567_s0_m100"))] == ["1707.08567"]


def test_real_error_feed_for_malformed_id_yields_no_paper() -> None:
    assert parse_feed(fixture("id_abc_s0_m100")) == []


def test_real_search_feed_parses_every_entry() -> None:
    papers = parse_feed(fixture("q_testing_s0_m10"))
    assert len(papers) == 10
    assert all(p.version >= 1 and p.title and p.authors for p in papers)


def test_written_feed_with_old_style_id_doi_and_journal_ref() -> None:
    feed = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="http://arxiv.org/schemas/atom"
      xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">
  <opensearch:totalResults>1</opensearch:totalResults>
  <entry>
    <id>http://arxiv.org/abs/hep-th/9901001v3</id>
    <updated>1999-02-01T00:00:00Z</updated>
    <published>1999-01-01T00:00:00Z</published>
    <title>Strings &amp; Things:
      a   study</title>
    <summary>  Text with
      newlines  </summary>
    <author><name>Jos\xc3\xa9 Garc\xc3\xada</name></author>
    <arxiv:doi>10.1000/xyz</arxiv:doi>
    <arxiv:journal_ref>Phys. Rev. D 1 (1999)</arxiv:journal_ref>
    <category term="hep-th" scheme="http://arxiv.org/schemas/atom"/>
    <arxiv:primary_category term="hep-th"/>
  </entry>
</feed>"""
    [paper] = parse_feed(feed)
    assert paper.id == "hep-th/9901001"
    assert paper.version == 3
    assert paper.title == "Strings & Things: a study"
    assert paper.abstract == "Text with newlines"
    assert paper.authors == ("José García",)
    assert paper.doi == "10.1000/xyz"
    assert paper.journal_ref == "Phys. Rev. D 1 (1999)"
    assert paper.year == "1999"


def test_garbage_body_is_a_content_error() -> None:
    with pytest.raises(ContentError):
        parse_feed(b"<html><body>Service Unavailable")


def test_query_url_batches_ids_in_one_request() -> None:
    url = query_url(API, [ids.parse("1706.03762"), ids.parse("hep-th/9901001v2")])
    assert url == API + "?id_list=1706.03762,hep-th/9901001v2&max_results=2"


def _http(clock: FakeClock) -> Http:
    return Http(
        arxiv_hosts=frozenset({"export.arxiv.org"}),
        arxiv_interval=3.0,
        host_interval=1.0,
        clock=clock,
    )


@respx.mock
def test_fetch_metadata_makes_one_request_per_hundred_ids(clock: FakeClock) -> None:
    body = fixture("id_1707.08567_s0_m100")
    route = respx.get(url__startswith=API).mock(return_value=httpx.Response(200, content=body))
    wanted = [ids.parse(f"1707.{n:05d}") for n in range(8400, 8650)]
    with _http(clock) as http:
        found = fetch_metadata(http, API, wanted).found
    assert route.call_count == 3
    sizes = [len(c.request.url.params["id_list"].split(",")) for c in route.calls]
    assert sizes == [100, 100, 50]
    assert set(found) == {"1707.08567"}
    # three requests, spaced by the arXiv interval on the fake clock
    assert clock.sleeps == [3.0, 3.0]


@respx.mock
def test_fetch_metadata_keys_by_the_id_as_asked(clock: FakeClock) -> None:
    respx.get(url__startswith=API).mock(
        return_value=httpx.Response(200, content=fixture("id_2104.12255v1_s0_m100"))
    )
    with _http(clock) as http:
        asked = [ids.parse("2104.12255v1"), ids.parse("2104.12255v2")]
        found = fetch_metadata(http, API, asked).found
    assert list(found) == ["2104.12255v1"]


@respx.mock
def test_http_400_names_the_batch(clock: FakeClock) -> None:
    respx.get(url__startswith=API).mock(
        return_value=httpx.Response(400, content=fixture("id_abc_s0_m100"))
    )
    with _http(clock) as http:
        result = fetch_metadata(http, API, [ids.parse("1706.03762")])
    assert result.found == {}
    error = result.failed["1706.03762"]
    assert isinstance(error, ContentError) and "malformed" in str(error)


def test_parsing_prints_nothing_even_when_the_package_skips_an_entry() -> None:
    """arXiv's error entry has no dates, so the package logs a warning while skipping it;
    a library must not print (with no logging configured Python would write it to stderr)."""
    import subprocess
    import sys

    path = next(FIXTURES.glob("id_abc_s0_m100_*.xml"))
    code = (
        "import sys; from fetcher.arxiv_api import parse_feed; "
        f"print(parse_feed(open({str(path)!r}, 'rb').read()))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert proc.stderr == ""
