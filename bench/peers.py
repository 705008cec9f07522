"""Two reference downloaders for the cold-sync benchmark, run against the same fake server.

What people write without fetcher, using the `arxiv` package (4.x) the way its README
shows: a `Client` with `delay_seconds`, a `Search` by id, then the result's `pdf_url`
downloaded with `requests`.

    python bench/peers.py readme  --manifest M --server URL --interval S --out DIR
    python bench/peers.py batched --manifest M --server URL --interval S --out DIR

`readme`: one query per id, then its PDF, then `time.sleep(interval)`. The client spaces
its own API calls, but nothing spaces the PDF request after a query: that is the spacing
breach such scripts commit on every paper.
`batched`: one query for every id (one API page holds 100), then each PDF after
`time.sleep(interval)`: polite, but the sleep comes on top of every transfer.

Both then fetch the manifest's direct URLs (no arXiv spacing needed). The fake server
stands in for arXiv: `https://arxiv.org/pdf/...` links are rewritten to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import arxiv
import requests


def _arxiv_ids(manifest: dict[str, object]) -> tuple[list[str], list[tuple[str, str]]]:
    papers = manifest.get("paper", [])
    assert isinstance(papers, list)
    ids = [str(p["arxiv"]) for p in papers if "arxiv" in p]
    urls = [(str(p["name"]), str(p["url"])) for p in papers if "url" in p]
    return ids, urls


def _local(url: str, server: str) -> str:
    """arXiv's own PDF link -> the same path on the fake server."""
    return server + urlsplit(url).path


def _save(session: requests.Session, url: str, dest: Path) -> None:
    response = session.get(url, timeout=60)
    response.raise_for_status()
    dest.write_bytes(response.content)


def readme_style(
    ids: list[str], server: str, interval: float, out: Path, session: requests.Session
) -> None:
    client = arxiv.Client(delay_seconds=interval)
    client.query_url_format = server + "/api/query?{}"
    for arxiv_id in ids:
        paper = next(client.results(arxiv.Search(id_list=[arxiv_id])))
        assert paper.pdf_url is not None
        _save(session, _local(paper.pdf_url, server), out / f"{arxiv_id}.pdf")
        time.sleep(interval)


def batched(
    ids: list[str], server: str, interval: float, out: Path, session: requests.Session
) -> None:
    client = arxiv.Client(delay_seconds=interval, page_size=100)
    client.query_url_format = server + "/api/query?{}"
    papers = list(client.results(arxiv.Search(id_list=ids)))
    for paper in papers:
        assert paper.pdf_url is not None
        time.sleep(interval)
        _save(session, _local(paper.pdf_url, server), out / f"{paper.get_short_id()}.pdf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("style", choices=("readme", "batched"))
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--server", required=True, help="fake server base URL")
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    ids, urls = _arxiv_ids(tomllib.loads(args.manifest.read_text(encoding="utf-8")))
    args.out.mkdir(parents=True, exist_ok=True)
    with requests.Session() as session:
        run = readme_style if args.style == "readme" else batched
        run(ids, args.server, args.interval, args.out, session)
        for name, url in urls:
            _save(session, url, args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
