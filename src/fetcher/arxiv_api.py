"""Batched arXiv metadata: one API request for up to 100 ids, parsed by the `arxiv` package.

Only this module knows the `arxiv` package. We use its Atom parser and `Result` model
(pinned to 4.x) but never its HTTP client: all traffic goes through fetcher's own client
and politeness gate. The package is imported lazily so a sync with nothing to do does
not pay for it (it pulls in requests and lxml).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from . import ids
from .errors import Cancelled, ContentError, FetcherError, HTTPStatusError, InvalidArxivId

if TYPE_CHECKING:  # only for the type: the HTTP stack is the caller's to import
    from .http import Http

T = TypeVar("T")
Retry = Callable[[Callable[[], T]], T]

BATCH = 100
ATOM_NS = b"http://www.w3.org/2005/Atom"


@dataclass(frozen=True)
class PaperMeta:
    """What the sidecar keeps of an arXiv paper, as plain data."""

    id: str
    version: int
    title: str
    authors: tuple[str, ...]
    abstract: str
    categories: tuple[str, ...]
    primary_category: str
    published: str
    updated: str
    doi: str | None = None
    journal_ref: str | None = None
    comment: str | None = None

    @property
    def versioned_id(self) -> str:
        return f"{self.id}v{self.version}"

    @property
    def year(self) -> str:
        return self.published[:4]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "authors": list(self.authors),
            "abstract": self.abstract,
            "categories": list(self.categories),
            "primary_category": self.primary_category,
            "published": self.published,
            "updated": self.updated,
            "doi": self.doi,
            "journal_ref": self.journal_ref,
            "comment": self.comment,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PaperMeta:
        return cls(
            id=data["id"],
            version=int(data["version"]),
            title=data.get("title", ""),
            authors=tuple(data.get("authors", ())),
            abstract=data.get("abstract", ""),
            categories=tuple(data.get("categories", ())),
            primary_category=data.get("primary_category", ""),
            published=data.get("published", ""),
            updated=data.get("updated", ""),
            doi=data.get("doi"),
            journal_ref=data.get("journal_ref"),
            comment=data.get("comment"),
        )


def _iso(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "strftime") else str(value)


def _from_result(result: Any) -> PaperMeta | None:
    """Convert an `arxiv.Result`; None for entries that are not papers (error entries)."""
    try:
        parsed = ids.parse(result.get_short_id())
    except InvalidArxivId:
        return None
    if parsed.version is None:
        return None
    return PaperMeta(
        id=parsed.base,
        version=parsed.version,
        title=" ".join(result.title.split()),
        authors=tuple(a.name for a in result.authors),
        abstract=" ".join((result.summary or "").split()),
        categories=tuple(result.categories),
        primary_category=result.primary_category or "",
        published=_iso(result.published),
        updated=_iso(result.updated),
        doi=result.doi or None,
        journal_ref=result.journal_ref or None,
        comment=result.comment or None,
    )


def _quiet_arxiv_logger() -> None:
    """The package logs skipped entries (arXiv's error entries have no dates); with no
    logging configured Python would print them on stderr, and only cli.py prints."""
    import logging

    logger = logging.getLogger("arxiv")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def parse_feed(content: bytes) -> list[PaperMeta]:
    """Parse an Atom response body into paper metadata, with the `arxiv` package's parser."""
    from arxiv import _feed  # the package's own Atom parser; lazily imported

    _quiet_arxiv_logger()
    feed = _feed.parse(content)
    if feed.malformed or ATOM_NS not in content[:4096]:
        found = content[:60].decode("utf-8", "replace").strip()
        raise ContentError(
            f"the arXiv API answered with something that is not an Atom feed ({found!r}…); "
            "check arxiv_api in [settings] or try again later"
        )
    papers = []
    for result in feed.results:
        meta = _from_result(result)
        if meta is not None:
            papers.append(meta)
    return papers


def query_url(api: str, batch: Sequence[ids.ArxivId]) -> str:
    params = {"id_list": ",".join(str(i) for i in batch), "max_results": str(len(batch))}
    sep = "&" if "?" in api else "?"
    return api + sep + urlencode(params, safe=",/")


def batches(items: Sequence[ids.ArxivId], size: int = BATCH) -> Iterable[Sequence[ids.ArxivId]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Metadata:
    """What the API said, keyed by the id as asked (`1706.03762` or `1706.03762v2`).

    An id arXiv does not know is in neither map (the caller decides what that means);
    an id whose batch failed after its retries is in `failed`, with the batch's error.
    """

    found: dict[str, PaperMeta] = field(default_factory=dict)
    failed: dict[str, FetcherError] = field(default_factory=dict)


def _no_retry(fn: Callable[[], T]) -> T:
    return fn()


def fetch_metadata(
    http: Http,
    api: str,
    wanted: Sequence[ids.ArxivId],
    *,
    retry: Retry[list[PaperMeta]] = _no_retry,
) -> Metadata:
    """Metadata for every id, one request through the arXiv gate per 100 ids.

    `retry` wraps each batch (request and parse; e.g. `http.retrying` with the run's
    policy), so a batch that fails once is asked again alone: the batches that came
    back are kept, never asked twice, and a batch that gives up fails only its own ids.
    `Cancelled` ends the whole call.
    """
    result = Metadata()
    unique = sorted(set(wanted))
    for batch in batches(unique, BATCH):
        try:
            metas = retry(partial(_ask, http, api, batch))
        except Cancelled:
            raise
        except FetcherError as exc:
            for asked in batch:
                result.failed[str(asked)] = exc
            continue
        by_base: dict[str, list[PaperMeta]] = {}
        for meta in metas:
            by_base.setdefault(meta.id, []).append(meta)
        for asked in batch:
            candidates = by_base.get(asked.base, [])
            if asked.version is not None:
                candidates = [m for m in candidates if m.version == asked.version]
            if candidates:
                result.found[str(asked)] = max(candidates, key=lambda m: m.version)
    return result


def _ask(http: Http, api: str, batch: Sequence[ids.ArxivId]) -> list[PaperMeta]:
    """One API request for one batch, parsed."""
    try:
        response = http.get(query_url(api, batch))
    except HTTPStatusError as exc:
        if exc.status == 400:
            raise ContentError(
                f"the arXiv API refused the id list (HTTP 400); one of these ids is "
                f"malformed: {', '.join(str(i) for i in batch)}"
            ) from None
        raise
    return parse_feed(response.content)
