"""The one HTTP client of fetcher, its politeness gates and its retry policy.

All traffic goes through `Http`: one `httpx.Client` (keep-alive), redirects followed by
hand so that every hop passes the gate of its host, httpx errors turned into fetcher
errors. arXiv's gate lets one request through at a time, `arxiv_interval` apart, across
every process that uses the same library (a lock file holding the time the next start
is spaced from).
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from . import __version__
from .errors import (
    Blocked,
    Cancelled,
    EntryError,
    HTTPStatusError,
    NotFound,
    RetryLater,
    TransientError,
    Unreachable,
    UsageError,
)
from .ids import hostname, is_arxiv_host

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process spacing only
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")


class Clock(Protocol):
    """Time as fetcher sees it; tests swap in a fake one that never really sleeps."""

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time; sleeps end early with `Cancelled` when the run is cancelled."""

    def __init__(self, cancel: threading.Event | None = None):
        self.cancel = cancel or threading.Event()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0 and self.cancel.wait(seconds):
            raise Cancelled("cancelled")
        if self.cancel.is_set():
            raise Cancelled("cancelled")


@dataclass(frozen=True)
class Policy:
    """Retry and patience limits; tests shrink them."""

    attempts: int = 5
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    retry_after_cap: float = 600.0
    entry_deadline: float = 1800.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    min_rate: float = 2048.0  # bytes/s averaged over `rate_window`, else the server is too slow
    rate_window: float = 30.0
    other_hosts_parallel: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Policy:
        """The default policy with the `FETCHER_*` tuning knobs of `env` applied.

        For slow links, impatient cron jobs and tests; the manifest schema is fixed, so
        these live in the environment. A bad value is a usage error naming the variable.
        """
        changes: dict[str, float | int] = {}
        for var, (name, kind, minimum) in POLICY_ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            try:
                value: float | int = int(raw) if kind is int else float(raw)
            except ValueError:
                value = float("nan")
            if not math.isfinite(value) or value < minimum:
                unit = "a whole number" if kind is int else "a number of seconds"
                if name == "min_rate":
                    unit = "bytes per second (0 turns the rule off)"
                raise UsageError(
                    f"environment variable {var}={raw!r} is not valid: expected {unit}, "
                    f"at least {minimum:g}; unset it to use the default "
                    f"({getattr(cls(), name)!r})"
                )
            changes[name] = value
        return replace(cls(), **changes)  # type: ignore[arg-type]


# variable -> (Policy field, type, smallest allowed value)
POLICY_ENV: dict[str, tuple[str, type, float]] = {
    "FETCHER_RETRY_ATTEMPTS": ("attempts", int, 1),
    "FETCHER_BACKOFF": ("backoff_initial", float, 0),
    "FETCHER_BACKOFF_MAX": ("backoff_max", float, 0),
    "FETCHER_RETRY_AFTER_CAP": ("retry_after_cap", float, 0),
    "FETCHER_ENTRY_DEADLINE": ("entry_deadline", float, 0.1),
    "FETCHER_CONNECT_TIMEOUT": ("connect_timeout", float, 0.1),
    "FETCHER_READ_TIMEOUT": ("read_timeout", float, 0.1),
    "FETCHER_MIN_RATE": ("min_rate", float, 0),
    "FETCHER_RATE_WINDOW": ("rate_window", float, 0.1),
}


def user_agent(contact: str) -> str:
    ua = f"fetcher/{__version__} (+https://github.com/fetcher-dev/fetcher"
    if contact:
        ua += f"; mailto:{contact}"
    return ua + ")"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


# --- gates ---------------------------------------------------------------------------------


class Gate:
    """Spaces request starts to one host group and bounds how many are in flight.

    With a `state_file`, the spacing and the one-at-a-time rule hold across processes:
    the file is locked for the whole request and holds the wall time the next start is
    spaced from (the last start, then the moment its answer began, pushed later by a
    `Retry-After`). A value further ahead than `interval + max_defer` cannot be ours (a
    clock set back, a damaged file) and is ignored.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        clock: Clock,
        max_in_flight: int = 1,
        state_file: Path | None = None,
        max_defer: float = 600.0,
    ):
        self.name = name
        self.interval = interval
        self.clock = clock
        self.state_file = state_file
        self.max_defer = max_defer
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._last: float | None = None
        # set when the host asked for a pause longer than we wait: no request for the run
        self.closed: str | None = None

    def _acquire_slot(self) -> None:
        while not self._slots.acquire(timeout=0.2):
            self.clock.sleep(0)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[int | None]:
        if self.state_file is None or fcntl is None:
            yield None
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a link planted here must not make us truncate a file elsewhere
        fd = os.open(self.state_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.clock.sleep(0.02)
            yield fd
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @staticmethod
    def _read_last(fd: int | None) -> float | None:
        if fd is None:
            return None
        try:
            raw = os.pread(fd, 64, 0)
            return float(raw.decode().strip()) if raw.strip() else None
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_last(fd: int | None, when: float) -> None:
        if fd is None:
            return
        with contextlib.suppress(OSError):
            data = f"{when:.6f}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)

    @contextlib.contextmanager
    def slot(self) -> Iterator[Slot]:
        """Hold a request slot: returns when this request may start.

        Yields a `Slot`; its `responded()` is called when the response head arrives: the
        next start is then spaced from that moment, which is after the server saw this
        request, so the server too sees starts at least `interval` apart whatever the
        network latency. Its `defer(seconds)` obeys a `Retry-After` for the whole host.
        """
        self._acquire_slot()
        try:
            while True:
                with self._file_lock() as fd:
                    with self._lock:
                        now = self.clock.time()
                        last = self._last
                        shared = self._read_last(fd)
                        if shared is not None and shared <= now + self.interval + self.max_defer:
                            last = shared if last is None else max(last, shared)
                        start = now if last is None else max(now, last + self.interval)
                        ready = fd is None or start <= now
                        if ready:  # in-process only: the start is reserved, then waited for
                            self._last = start
                            self._write_last(fd, start)
                    if ready:
                        self.clock.sleep(start - now)
                        yield Slot(self, fd)
                        return
                # Shared: wait without the file lock, then look again. Holding it while
                # waiting would let one process keep the gate until it is done, and
                # `fetcher status` beside a long sync would wait for the whole sync.
                self.clock.sleep(start - now)
        finally:
            self._slots.release()

    def _push(self, fd: int | None, when: float) -> None:
        """Space the next start from `when`, if that is later than what we have."""
        with self._lock:
            if self._last is None or when > self._last:
                self._last = when
                self._write_last(fd, when)


class Slot:
    """A request slot held in a `Gate` (see `Gate.slot`)."""

    def __init__(self, gate: Gate, fd: int | None):
        self.gate = gate
        self.fd = fd

    def responded(self) -> None:
        """The answer began (or the attempt failed): the server has seen the request."""
        self.gate._push(self.fd, self.gate.clock.time())

    def defer(self, seconds: float) -> None:
        """The host asked for a pause (`Retry-After`): no request to it before then, from
        this process or any other sharing the state file."""
        seconds = min(max(0.0, seconds), self.gate.max_defer)
        self.gate._push(self.fd, self.gate.clock.time() + seconds - self.gate.interval)


# --- the client ----------------------------------------------------------------------------


class Http:
    """fetcher's HTTP client: gates, manual redirects, error mapping, arXiv block switch."""

    MAX_REDIRECTS = 10

    def __init__(
        self,
        *,
        arxiv_hosts: frozenset[str],
        arxiv_interval: float,
        host_interval: float,
        contact: str = "",
        state_dir: Path | None = None,
        clock: Clock | None = None,
        policy: Policy | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.clock: Clock = clock or SystemClock()
        self.policy = policy or Policy()
        # host names (a "host:port" given is reduced to its name): ports, userinfo, case
        # and a trailing dot must not let a request to arXiv past its gate
        self.arxiv_hosts = frozenset(hostname(f"//{h}") or h for h in arxiv_hosts)
        self.host_interval = host_interval
        self.arxiv_gate = Gate(
            "arXiv",
            arxiv_interval,
            self.clock,
            max_in_flight=1,
            state_file=(state_dir / "arxiv.gate") if state_dir else None,
            max_defer=self.policy.retry_after_cap,
        )
        self._gates: dict[str, Gate] = {}
        self._gates_lock = threading.Lock()
        self.blocked: str | None = None
        self.request_count = 0
        self._count_lock = threading.Lock()
        # sockets of the responses being read, so `abort` can wake a blocked read at once
        self._inflight: set[socket.socket] = set()
        self._aborted = False
        timeout = httpx.Timeout(self.policy.read_timeout, connect=self.policy.connect_timeout)
        self.client = httpx.Client(
            headers={"User-Agent": user_agent(contact)},
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def abort(self) -> None:
        """Cut every response being read (Ctrl-C, SIGTERM): a worker blocked in a socket
        read wakes now with a read error instead of at the next byte or the read timeout."""
        with self._count_lock:
            self._aborted = True
            sockets = list(self._inflight)
        for sock in sockets:
            _shutdown(sock)

    def _track(self, response: httpx.Response) -> socket.socket | None:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return None
        with self._count_lock:
            self._inflight.add(sock)
            aborted = self._aborted
        if aborted:
            _shutdown(sock)
        return sock

    def _untrack(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._count_lock:
                self._inflight.discard(sock)

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_arxiv(self, url: str) -> bool:
        """The configured arXiv hosts and any *.arxiv.org host, whatever port or case."""
        host = hostname(url)
        return host in self.arxiv_hosts or is_arxiv_host(host)

    def gate_for(self, url: str) -> Gate:
        if self.is_arxiv(url):
            return self.arxiv_gate
        host = hostname(url)  # one gate per host name: a port or a trailing dot is the same host
        with self._gates_lock:
            gate = self._gates.get(host)
            if gate is None:
                gate = Gate(
                    host,
                    self.host_interval,
                    self.clock,
                    max_in_flight=2,
                    max_defer=self.policy.retry_after_cap,
                )
                self._gates[host] = gate
            return gate

    @contextlib.contextmanager
    def stream(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        *,
        deadline: float | None = None,
    ) -> Iterator[httpx.Response]:
        """GET `url`, following redirects hop by hop; yields a 2xx response to read.

        Statuses that are errors raise the matching fetcher error; the gate of the final
        host stays held while the caller reads the body (one connection at a time). With
        a `deadline` (clock time), no single wait on the network outlasts it.
        """
        seen: list[str] = []
        current = url
        while True:
            if self.is_arxiv(current) and self.blocked:
                raise Blocked(self.blocked)
            gate = self.gate_for(current)
            if gate.closed:
                raise RetryLater(gate.closed)
            with gate.slot() as slot:
                self.clock.sleep(0)  # a checkpoint: no new request once the run is cancelled
                # again: the host may have been closed (or arXiv blocked) while we waited
                if gate is self.arxiv_gate and self.blocked:
                    raise Blocked(self.blocked)
                if gate.closed:
                    raise RetryLater(gate.closed)
                with self._count_lock:
                    self.request_count += 1
                sock = None
                try:
                    request = self.client.build_request(
                        "GET", current, headers=headers, timeout=self._timeout(deadline)
                    )
                    response = self.client.send(request, stream=True)
                except (httpx.HTTPError, httpx.InvalidURL) as exc:
                    slot.responded()
                    raise describe_transport_error(exc, current) from None
                except ValueError as exc:  # UnicodeError and idna's errors: a bad host name
                    slot.responded()
                    raise _bad_host_name(current, exc) from None
                slot.responded()
                try:
                    sock = self._track(response)
                    if response.is_redirect:
                        location = response.headers.get("location", "").strip()
                        response.read()
                        try:
                            nxt = urljoin(current, location)
                            urlsplit(nxt).port  # noqa: B018 - ValueError if out of range
                        except ValueError:
                            nxt = ""
                        if not nxt or not location:
                            raise HTTPStatusError(
                                f"{current} redirects to an invalid URL {location!r}",
                                response.status_code,
                            )
                        self._check_redirect(url, current, nxt, seen)
                        seen.append(current)
                        current = nxt
                        continue
                    self._raise_for_status(response, current, slot)
                    yield response
                    return
                except httpx.HTTPError as exc:
                    raise describe_transport_error(exc, current) from None
                finally:
                    self._untrack(sock)
                    response.close()

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        """The client's timeouts, shortened so that none outlasts `deadline`."""
        read, connect = self.policy.read_timeout, self.policy.connect_timeout
        if deadline is not None:
            left = max(0.1, deadline - self.clock.time())
            read, connect = min(read, left), min(connect, left)
        return httpx.Timeout(read, connect=connect)

    def get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET a small document into memory (API responses)."""
        with self.stream(url, headers) as response:
            response.read()
            return response

    def _check_redirect(self, origin: str, current: str, nxt: str, seen: list[str]) -> None:
        if len(seen) >= self.MAX_REDIRECTS:
            raise HTTPStatusError(
                f"more than {self.MAX_REDIRECTS} redirects from {origin}; the server loops", 310
            )
        if nxt in seen or nxt == current:
            raise HTTPStatusError(f"redirect loop at {nxt} (from {origin})", 310)
        if urlsplit(current).scheme == "https" and urlsplit(nxt).scheme != "https":
            raise HTTPStatusError(
                f"refused redirect from https to {nxt}: a downgrade to plain http", 310
            )
        if urlsplit(nxt).scheme not in ("http", "https"):
            raise HTTPStatusError(f"refused redirect to {nxt}: not http(s)", 310)

    def _raise_for_status(
        self, response: httpx.Response, url: str, slot: Slot | None = None
    ) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock.time())
        with contextlib.suppress(httpx.HTTPError):
            response.read()
        if status == 403 and self.is_arxiv(url):
            self.blocked = (
                f"arXiv answered 403 Forbidden to {url}: it is rate-limiting or blocking this "
                "machine. All arXiv requests of this run were stopped; wait an hour or more "
                "before syncing again, and set `contact` in [settings]"
            )
            raise Blocked(self.blocked)
        if status in (404, 410):
            what = "withdrawn or missing" if self.is_arxiv(url) else "not found"
            raise NotFound(f"HTTP {status} from {url} ({what})")
        if status == 429 or status >= 500:
            if retry_after is not None and retry_after > self.policy.retry_after_cap:
                when = time.strftime(
                    "%Y-%m-%d %H:%M UTC", time.gmtime(self.clock.time() + retry_after)
                )
                message = (
                    f"HTTP {status} from {url} asks to wait {retry_after:.0f}s "
                    f"(more than {self.policy.retry_after_cap:.0f}s); try again after {when}"
                )
                # the pause holds for every entry of that host (all of arXiv's) for the run
                if self.is_arxiv(url):
                    message += "; no more arXiv requests in this run"
                else:
                    message += f"; no more requests to {hostname(url) or url} in this run"
                self.gate_for(url).closed = message
                raise RetryLater(message)
            if retry_after is not None and slot is not None:
                slot.defer(retry_after)  # the whole host waits, not only this entry
            raise TransientError(f"HTTP {status} from {url}", retry_after=retry_after)
        raise HTTPStatusError(f"HTTP {status} from {url}", status)


def _shutdown(sock: socket.socket) -> None:
    """Wake a read blocked on `sock` in another thread (close() alone would not)."""
    with contextlib.suppress(OSError):
        # the plain socket's shutdown, also under TLS: SSLSocket's would drop its state
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _bad_host_name(url: str, exc: ValueError) -> Unreachable:
    """A host name httpx or the resolver's idna codec cannot encode: in `url` itself, or
    in the Location it redirects to (httpx parses that while sending)."""
    try:
        parsed = httpx.URL(url)
        parsed.host  # noqa: B018 - decodes xn-- labels
        parsed.raw_host.decode("ascii").encode("idna")
    except (ValueError, httpx.InvalidURL):
        return Unreachable(f"cannot request {url!r}: the host name is not valid ({exc})")
    return Unreachable(f"{url} redirects to a URL whose host name is not valid ({exc})")


def _no_such_host(exc: BaseException) -> bool:
    """The resolver answered that the name does not exist (not a temporary DNS failure)."""
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text:
        return True
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror) and cause.errno == socket.EAI_NONAME:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def describe_transport_error(exc: httpx.HTTPError | httpx.InvalidURL, url: str) -> EntryError:
    """One line a user understands, for any httpx transport failure.

    A host that does not exist or a URL that cannot be sent is final (retrying cannot
    help); everything else may pass and is a `TransientError`.
    """
    try:
        host = urlsplit(url).netloc or url
    except ValueError:
        host = url
    if isinstance(exc, httpx.InvalidURL):
        return Unreachable(f"cannot request {url!r}: {exc}")
    if isinstance(exc, httpx.RemoteProtocolError) and "location header" in str(exc).lower():
        # httpx parses Location even when we follow redirects by hand
        return Unreachable(f"{url} redirects to an invalid URL ({exc})")
    if isinstance(exc, httpx.ConnectError) and _no_such_host(exc):
        return Unreachable(
            f"cannot resolve host {host}: no such host (DNS); check the URL and that this "
            "machine is online"
        )
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"timed out talking to {host} ({url})")
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if (
            "Name or service not known" in text
            or "nodename nor servname" in text
            or ("Temporary failure in name resolution" in text)
        ):
            return TransientError(f"cannot resolve host {host} (DNS); check the network")
        if "refused" in text.lower() or getattr(exc.__cause__, "errno", None) == errno.ECONNREFUSED:
            return TransientError(f"connection refused by {host}")
        return TransientError(f"cannot connect to {host}: {text or type(exc).__name__}")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return TransientError(f"connection to {host} broke mid-response ({exc or 'closed'})")
    return TransientError(f"network error with {host}: {exc or type(exc).__name__}")


# --- retries -------------------------------------------------------------------------------


class _WaitBackoffOrRetryAfter(wait_base):
    """Exponential backoff with full jitter, or the server's Retry-After if longer."""

    def __init__(self, policy: Policy, rng: random.Random):
        self.policy = policy
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        n = retry_state.attempt_number
        ceiling = min(self.policy.backoff_max, self.policy.backoff_initial * 2 ** (n - 1))
        wait = self.policy.backoff_initial / 2 + self.rng.uniform(0, ceiling)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


class _StopAtDeadline(stop_base):
    """Stop when the deadline has passed, or when the coming wait would pass it."""

    def __init__(self, clock: Clock, deadline: float):
        self.clock = clock
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        upcoming = getattr(retry_state, "upcoming_sleep", 0.0) or 0.0  # tenacity >= 8.3
        return self.clock.time() + upcoming >= self.deadline


def retrying(
    fn: Callable[[], T],
    *,
    policy: Policy,
    clock: Clock,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    deadline: float | None = None,
) -> T:
    """Call `fn`, retrying `TransientError` with backoff, bounded attempts and a deadline
    (`deadline`, a clock time; default `policy.entry_deadline` from now)."""
    if deadline is None:
        deadline = clock.time() + policy.entry_deadline

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(state.attempt_number, exc, state.next_action.sleep)

    retryer = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(policy.attempts) | _StopAtDeadline(clock, deadline),
        wait=_WaitBackoffOrRetryAfter(policy, rng or random.Random()),
        sleep=clock.sleep,
        reraise=True,
        before_sleep=before_sleep,
    )
    try:
        return retryer(fn)
    except TransientError as exc:
        attempts = int(retryer.statistics.get("attempt_number", 1))
        if attempts < 2:
            raise
        raise TransientError(
            f"{exc} (gave up after {attempts} attempts)", retry_after=exc.retry_after
        ) from None
