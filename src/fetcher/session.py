"""The HTTP client of a run and its batched metadata requests, as sync and status use them.

One place builds the client from a manifest's settings (gates shared through the
library's state folder with every other fetcher process) and asks the API with a retry
per batch, so `sync` and `status --check-updates` cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .manifest import Settings

if TYPE_CHECKING:
    import httpx

    from .arxiv_api import Metadata
    from .http import Clock, Http, Policy
    from .ids import ArxivId

T = TypeVar("T")
OnRetry = Callable[[int, BaseException, float], None]


def open_http(
    settings: Settings,
    state_dir: Path | None,
    *,
    clock: Clock | None = None,
    policy: Policy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Http:
    """The client of one run: `state_dir` (the library's `.fetcher/`) shares the
    politeness gates with other processes; None when the library does not exist yet."""
    from .http import Http

    return Http(
        arxiv_hosts=settings.arxiv_hosts,
        arxiv_interval=settings.arxiv_interval,
        host_interval=settings.host_interval,
        contact=settings.contact,
        state_dir=state_dir,
        clock=clock,
        policy=policy,
        transport=transport,
    )


def ask_metadata(
    http: Http, api: str, wanted: Sequence[ArxivId], *, on_retry: OnRetry | None = None
) -> Metadata:
    """`arxiv_api.fetch_metadata` with the run's retry policy around each batch."""
    from .arxiv_api import fetch_metadata
    from .http import retrying

    def retry(fn: Callable[[], T]) -> T:
        return retrying(fn, policy=http.policy, clock=http.clock, on_retry=on_retry)

    return fetch_metadata(http, api, wanted, retry=retry)
