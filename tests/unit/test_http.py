"""The HTTP layer: gates, Retry-After, retries, redirects, the arXiv block switch."""

from __future__ import annotations

import email.utils
import itertools
import random
from pathlib import Path

import httpx
import pytest
import respx

from fetcher import __version__
from fetcher.errors import Blocked, HTTPStatusError, NotFound, RetryLater, TransientError
from fetcher.http import Gate, Http, Policy, parse_retry_after, retrying, user_agent
from tests.conftest import FakeClock

ARXIV = frozenset({"export.arxiv.org"})


def make_http(clock: FakeClock, **kw: object) -> Http:
    return Http(
        arxiv_hosts=ARXIV,
        arxiv_interval=3.0,
        host_interval=1.0,
        contact="me@example.org",
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def starts(clock: FakeClock, gate: Gate, n: int) -> list[float]:
    times = []
    for _ in range(n):
        with gate.slot():
            times.append(clock.time())
    return times


def test_gate_spaces_request_starts(clock: FakeClock) -> None:
    gate = Gate("arXiv", 3.0, clock)
    times = starts(clock, gate, 4)
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [3.0, 3.0, 3.0]


def test_gate_does_not_wait_when_the_interval_already_passed(clock: FakeClock) -> None:
    gate = Gate("arXiv", 3.0, clock)
    with gate.slot():
        pass
    clock.now += 10
    with gate.slot():
        pass
    assert clock.sleeps == []


def test_gate_state_file_spaces_two_processes(clock: FakeClock, tmp_path: Path) -> None:
    """Two gates (as in two processes) sharing one state file keep the interval between them."""
    state = tmp_path / "arxiv.gate"
    first = Gate("arXiv", 3.0, clock, state_file=state)
    second = Gate("arXiv", 3.0, clock, state_file=state)
    with first.slot():
        t1 = clock.time()
    with second.slot():
        t2 = clock.time()
    assert t2 - t1 == pytest.approx(3.0)
    assert float(state.read_text()) == pytest.approx(t2)


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_user_agent_names_fetcher_version_and_contact() -> None:
    ua = user_agent("me@example.org")
    assert ua.startswith(f"fetcher/{__version__} ")
    assert "mailto:me@example.org" in ua
    assert "mailto" not in user_agent("")


def test_retrying_retries_transient_then_succeeds(clock: FakeClock) -> None:
    calls = []

    def flaky() -> str:
        calls.append(clock.time())
        if len(calls) < 3:
            raise TransientError("HTTP 503", retry_after=7.0)
        return "ok"

    result = retrying(flaky, policy=Policy(), clock=clock, rng=random.Random(1))
    assert result == "ok"
    assert len(calls) == 3
    assert all(s >= 7.0 for s in clock.sleeps)  # Retry-After is a floor under the backoff


def test_retrying_gives_up_after_the_attempts(clock: FakeClock) -> None:
    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("reset")

    with pytest.raises(TransientError):
        retrying(broken, policy=Policy(attempts=4), clock=clock)
    assert calls == 4


def test_retrying_never_retries_permanent_errors(clock: FakeClock) -> None:
    calls = 0

    def gone() -> None:
        nonlocal calls
        calls += 1
        raise NotFound("404")

    with pytest.raises(NotFound):
        retrying(gone, policy=Policy(), clock=clock)
    assert calls == 1


@respx.mock
def test_every_redirect_hop_passes_the_gate(clock: FakeClock) -> None:
    respx.get("https://export.arxiv.org/pdf/1706.03762v7.pdf").mock(
        return_value=httpx.Response(301, headers={"Location": "/pdf/1706.03762v7"})
    )
    respx.get("https://export.arxiv.org/pdf/1706.03762v7").mock(
        return_value=httpx.Response(200, content=b"%PDF-1.4 ... %%EOF")
    )
    with make_http(clock) as http:
        response = http.get("https://export.arxiv.org/pdf/1706.03762v7.pdf")
        assert response.content.startswith(b"%PDF-")
        assert http.request_count == 2
    assert clock.sleeps == [3.0]


@respx.mock
def test_redirect_loop_and_downgrade_are_refused(clock: FakeClock) -> None:
    respx.get("https://a.example/x").mock(
        return_value=httpx.Response(302, headers={"Location": "https://a.example/y"})
    )
    respx.get("https://a.example/y").mock(
        return_value=httpx.Response(302, headers={"Location": "https://a.example/x"})
    )
    respx.get("https://b.example/x").mock(
        return_value=httpx.Response(302, headers={"Location": "http://b.example/x"})
    )
    with make_http(clock) as http:
        with pytest.raises(HTTPStatusError, match="loop"):
            http.get("https://a.example/x")
        with pytest.raises(HTTPStatusError, match="downgrade"):
            http.get("https://b.example/x")


@respx.mock
def test_arxiv_403_blocks_every_later_arxiv_request(clock: FakeClock) -> None:
    route = respx.get(url__startswith="https://export.arxiv.org/").mock(
        return_value=httpx.Response(403)
    )
    other = respx.get("https://cdn.example/x.pdf").mock(
        return_value=httpx.Response(200, content=b"%PDF-")
    )
    with make_http(clock) as http:
        with pytest.raises(Blocked, match="403"):
            http.get("https://export.arxiv.org/pdf/1706.03762v7")
        with pytest.raises(Blocked):
            http.get("https://export.arxiv.org/pdf/1810.04805v2")
        assert http.get("https://cdn.example/x.pdf").status_code == 200
    assert route.call_count == 1
    assert other.call_count == 1


@respx.mock
def test_statuses_map_to_what_the_caller_does_next(clock: FakeClock) -> None:
    respx.get("https://h.example/404").mock(return_value=httpx.Response(404))
    respx.get("https://h.example/503").mock(
        return_value=httpx.Response(503, headers={"Retry-After": "5"})
    )
    respx.get("https://h.example/429").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"})
    )
    respx.get("https://h.example/401").mock(return_value=httpx.Response(401))
    with make_http(clock) as http:
        with pytest.raises(NotFound):
            http.get("https://h.example/404")
        with pytest.raises(TransientError) as info:
            http.get("https://h.example/503")
        assert info.value.retry_after == 5.0
        with pytest.raises(RetryLater, match="try again after"):
            http.get("https://h.example/429")
        with pytest.raises(HTTPStatusError) as status:
            http.get("https://h.example/401")
        assert status.value.status == 401


@respx.mock
def test_transport_errors_become_one_line(clock: FakeClock) -> None:
    respx.get("https://down.example/x").mock(side_effect=httpx.ConnectError("refused"))
    respx.get("https://slow.example/x").mock(side_effect=httpx.ReadTimeout("timed out"))
    with make_http(clock) as http:
        with pytest.raises(TransientError, match="down.example"):
            http.get("https://down.example/x")
        with pytest.raises(TransientError, match="timed out talking to slow.example"):
            http.get("https://slow.example/x")


@respx.mock
def test_the_user_agent_is_sent(clock: FakeClock) -> None:
    route = respx.get("https://h.example/x").mock(return_value=httpx.Response(200))
    with make_http(clock) as http:
        http.get("https://h.example/x")
    assert route.calls[0].request.headers["user-agent"] == user_agent("me@example.org")
