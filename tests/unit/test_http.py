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
from fetcher.errors import (
    Blocked,
    HTTPStatusError,
    NotFound,
    RetryLater,
    TransientError,
    Unreachable,
)
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
        with pytest.raises(HTTPStatusError) as status:
            http.get("https://h.example/401")
        assert status.value.status == 401
        # last: a pause beyond the cap closes the host for the rest of the run
        with pytest.raises(RetryLater, match="try again after"):
            http.get("https://h.example/429")


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


# --- host names: invalid ones fail one entry; hosts the gates see as one --------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://a..b/x.pdf",  # the resolver's idna codec: empty label
        "https://.a.com/x",
        f"https://{'a' * 64}.com/x.pdf",  # a label longer than 63
        "https://xn--a.com/x",  # httpx's idna: not valid punycode
    ],
)
def test_a_host_name_that_cannot_be_encoded_is_unreachable(clock: FakeClock, url: str) -> None:
    """Whatever slips past the manifest (a redirect, the Python API) fails that one entry
    with a fetcher error; a UnicodeError used to escape and crash the whole sync (F1).
    The real transport: the name is refused while it is encoded, before any lookup."""
    http = make_http(clock, policy=Policy(connect_timeout=1, read_timeout=1))
    with http, pytest.raises(Unreachable, match="cannot request") as info:
        http.get(url)
    assert "\n" not in str(info.value)
    assert url in str(info.value)


@respx.mock
def test_a_redirect_to_a_bad_host_name_is_unreachable(clock: FakeClock) -> None:
    respx.get("https://h.example/x").mock(
        return_value=httpx.Response(302, headers={"Location": "https://xn--a.com/x"})
    )
    http = make_http(clock)
    with http, pytest.raises(Unreachable, match="h.example/x redirects to a URL whose host name"):
        http.get("https://h.example/x")


@respx.mock
def test_a_pause_beyond_the_cap_closes_that_host_for_the_run(clock: FakeClock) -> None:
    """Any host, not only arXiv: its other entries fail with the same "try again after"
    and no further request reaches it (F5); other hosts carry on."""
    first = respx.get("https://h.example/a").mock(
        return_value=httpx.Response(503, headers={"Retry-After": "3600"})
    )
    later = respx.get(url__regex=r"https://h\.example(:443)?/[bc]").mock(
        return_value=httpx.Response(200, content=b"%PDF-")
    )
    other = respx.get("https://other.example/x").mock(
        return_value=httpx.Response(200, content=b"%PDF-")
    )
    with make_http(clock) as http:
        with pytest.raises(RetryLater) as info:
            http.get("https://h.example/a")
        message = str(info.value)
        assert "try again after 2023-11-14 23:13 UTC" in message
        assert "no more requests to h.example in this run" in message
        for url in ("https://h.example/b", "https://H.EXAMPLE:443/c", "https://h.example./b"):
            with pytest.raises(RetryLater) as again:
                http.get(url)
            assert str(again.value) == message
        assert http.get("https://other.example/x").status_code == 200
    assert first.call_count == 1
    assert later.call_count == 0
    assert other.call_count == 1


@respx.mock
def test_a_request_waiting_for_its_turn_sees_the_host_close(clock: FakeClock) -> None:
    """A request already queued at the gate when the host closes is not sent either."""
    respx.get("https://h.example/b").mock(return_value=httpx.Response(200))
    with make_http(clock) as http:
        gate = http.gate_for("https://h.example/b")
        real_sleep = clock.sleep

        def close_while_waiting(seconds: float) -> None:
            gate.closed = "HTTP 503 from https://h.example/a ...; try again after then"
            real_sleep(seconds)

        clock.sleep = close_while_waiting  # type: ignore[method-assign]
        with pytest.raises(RetryLater, match="try again after then"):
            http.get("https://h.example/b")
        assert http.request_count == 0


@pytest.mark.parametrize(
    ("url", "arxiv"),
    [
        ("https://export.arxiv.org/pdf/1706.03762v7", True),
        ("https://export.arxiv.org:443/list/cs.CL/new", True),
        ("https://EXPORT.arXiv.org./api/query", True),
        ("https://user:pw@export.arxiv.org/api/query", True),
        ("https://info.arxiv.org/help/api/index.html", True),
        ("http://arxiv.org/abs/1706.03762", True),
        ("https://mirror.example:8443/pdf/1706.03762v7", True),  # configured, port ignored
        ("https://notarxiv.org/x", False),
        ("https://arxiv.org.evil.example/x", False),
        ("https://cdn.example/x.pdf", False),
    ],
)
def test_arxiv_hosts_are_matched_by_host_name(clock: FakeClock, url: str, arxiv: bool) -> None:
    """Port, userinfo, case, a trailing dot or a subdomain must not let arXiv traffic
    past its gate (F6)."""
    http = Http(
        arxiv_hosts=frozenset({"export.arxiv.org", "mirror.example:9000"}),
        arxiv_interval=3.0,
        host_interval=1.0,
        clock=clock,
    )
    assert http.is_arxiv(url) is arxiv
    assert (http.gate_for(url) is http.arxiv_gate) is arxiv


def test_one_gate_per_host_name(clock: FakeClock) -> None:
    with make_http(clock) as http:
        gate = http.gate_for("https://cdn.example/a.pdf")
        assert http.gate_for("https://CDN.example:443/b.pdf") is gate
        assert http.gate_for("https://cdn.example./c.pdf") is gate
        assert http.gate_for("https://other.example/a.pdf") is not gate
