"""arXiv's rules under load and under faults, measured by the server.

The fake server stamps every request with wall-clock start/end times (`time.time()`, one
clock for every process on the machine), so spacing and the one-at-a-time rule are
checked as arXiv would see them: `min_gap` between request starts, `max_concurrency` of
requests in flight, across retries, redirects and two processes sharing a library.
"""

from __future__ import annotations

import email.utils
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from fetcher import __version__
from fetcher import manifest as manifest_mod
from fetcher.library import read_lock
from tests.conftest import run_fetcher
from tests.fakeserver import FakeServer, Fault
from tests.integration.faultkit import (
    ARXIV_PATHS,
    FAST_ENV,
    INTERVAL,
    Lib,
    assert_polite,
    new_lib,
    pdf_path,
    report,
    requests_to,
    wait_for,
)


@pytest.fixture
def lib(tmp_path: Path, fake: FakeServer) -> Lib:
    return new_lib(tmp_path, fake)


def arxiv_lib(lib: Lib, n: int = 4, web: int = 2, size: int = 20_000) -> list[str]:
    keys = [f"2101.{i:05d}" for i in range(1, n + 1)]
    for key in keys:
        lib.add_arxiv(key, size)
    for i in range(web):
        lib.add_web(f"web{i}", size)
    lib.write()
    return keys


# --- the seed collection with transient faults ------------------------------------------


def test_seed_collection_with_transient_faults_exits_0_every_file_right(
    seed_library: Path, fake: FakeServer
) -> None:
    manifest = manifest_mod.load(seed_library)
    pdfs = [pdf_path(e.key) for e in manifest.entries if e.kind == "arxiv"]
    webs = {e.key: urlsplit(e.url or "").path for e in manifest.entries if e.kind == "url"}
    cut = pdfs[1:4]
    for path in cut:
        fake.fault(path, Fault.cut_after(7_000))
    fake.fault(pdfs[5], Fault.status(503, retry_after="1"))
    fake.fault(pdfs[8], Fault.status(429), times=2)
    fake.fault(pdfs[9], Fault.reset())
    fake.fault(pdfs[10], Fault.cut_after(5_000))
    fake.fault(pdfs[10], Fault.ignore_range())
    fake.fault("/api/query", Fault.status(502))
    fake.fault(webs["gpt1"], Fault.cut_after(9_000))
    fake.fault(webs["moe-blog"], Fault.reset())

    result = run_fetcher("sync", "--json", "-m", str(seed_library), env=FAST_ENV)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["counts"] == {"downloaded": 43, "skipped": 0, "failed": 0}
    log = fake.requests
    assert len(log) == 44 + 3 + 1 + 2 + 1 + 1 + 1 + 1 + 1  # every fault cost one retry
    for path in cut:
        resumed = requests_to(fake, path)[1]
        assert resumed.headers["range"] == "bytes=7000-" and resumed.status == 206
    (answer, retry) = requests_to(fake, pdfs[5])
    assert retry.start - answer.end >= 1.0  # type: ignore[operator]
    assert_polite(fake)  # every retry passed the gate too
    assert fake.max_concurrency(ARXIV_PATHS) == 1

    lock = read_lock(seed_library.parent / "manifest.lock")
    fake.reset_log()
    with httpx.Client() as client:
        for entry in manifest.entries:
            record = lock[entry.key]
            stored = (seed_library.parent / "downloads" / record.file).read_bytes()
            served = client.get(record.url, follow_redirects=True).content
            assert stored == served, entry.key
    assert list((seed_library.parent / "downloads" / ".fetcher" / "partial").iterdir()) == []


# --- spacing and one at a time across two processes ---------------------------------------

GATE_USER = """
import sys, time
from pathlib import Path
from fetcher.http import Http

url, state, n, interval = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
host = url.split("/")[2]
with Http(arxiv_hosts=frozenset({host}), arxiv_interval=interval, host_interval=0.0,
          state_dir=state) as http:
    time.sleep(max(0.0, float(sys.argv[5]) - time.time()))  # both start together
    for _ in range(n):
        http.get(url)
"""


def test_two_processes_on_one_library_share_the_arxiv_gate(
    tmp_path: Path, fake: FakeServer
) -> None:
    """What `fetcher status --check-updates` beside a sync amounts to: two processes, one
    gate file. Some answers are slow, so without the lock they would overlap."""
    fake.add_arxiv("2101.00001")
    fake.fault("/api/query", Fault.delay(0.06), times=4)
    state = tmp_path / "downloads" / ".fetcher"
    interval, n = 0.05, 6
    go = time.time() + 1.5  # after both interpreters have started
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                GATE_USER,
                f"{fake.url}/api/query?id_list=2101.00001&p={p}",
                str(state),
                str(n),
                str(interval),
                str(go),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    log = fake.requests
    assert len(log) == 2 * n
    assert {r.query.rsplit("p=", 1)[1] for r in log} == {"1", "2"}
    # Both were ready at `go`; without the shared gate they would overlap at once. (Who
    # goes first is a race at each turn, so the order is not asserted.)
    assert min(r.start for r in log) >= go
    assert fake.max_concurrency("/api/") == 1
    gap = fake.min_gap("/api/")
    assert gap is not None and gap >= interval, gap


def test_overlapping_syncs_wait_fetch_each_file_once_and_keep_the_interval(lib: Lib) -> None:
    keys = arxiv_lib(lib)
    slow = pdf_path(keys[0])
    lib.fake.fault(slow, Fault.trickle(0.05, chunk=1000))  # the first sync takes about 1 s
    env = {"FETCHER_MIN_RATE": "0"}
    first = lib.popen(env=env)
    assert wait_for(lambda: bool(requests_to(lib.fake, slow)))
    second = lib.popen(env=env)
    out2, err2 = second.communicate(timeout=60)
    _, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "another sync holds the library; waiting" in err2
    assert "0 downloaded, 6 present" in out2  # everything was there already
    for key in [*keys, "web0", "web1"]:
        path = pdf_path(key) if key in lib.arxiv else lib.web[key][0]
        assert len(requests_to(lib.fake, path)) == 1, key
        assert lib.stored(key) == lib.expected(key)
    assert len(requests_to(lib.fake, "/api/query")) == 1
    assert_polite(lib.fake)


def test_no_wait_exits_75_at_once_when_a_sync_holds_the_library(lib: Lib) -> None:
    keys = arxiv_lib(lib, n=2, web=0)
    slow = pdf_path(keys[0])
    lib.fake.fault(slow, Fault.trickle(0.05, chunk=1000))
    first = lib.popen(env={"FETCHER_MIN_RATE": "0"})
    assert wait_for(lambda: bool(requests_to(lib.fake, slow)))
    started = time.monotonic()
    busy = lib.sync("--no-wait")
    assert time.monotonic() - started < 5
    assert busy.returncode == 75, busy.stderr
    assert "another fetcher sync is running" in busy.stderr
    assert busy.stdout == ""
    first.communicate(timeout=60)
    assert first.returncode == 0
    # the second sync asked nothing: one metadata request and one per file, all the first's
    paths = sorted(r.path for r in lib.fake.requests)
    assert paths == ["/api/query", *sorted(pdf_path(k) for k in keys)]


# --- 403: stop arXiv, finish the rest -------------------------------------------------------


def test_arxiv_403_stops_every_arxiv_request_and_finishes_other_hosts(lib: Lib) -> None:
    keys = arxiv_lib(lib, n=5, web=2)
    blocked = pdf_path(keys[1])
    lib.fake.fault(blocked, Fault.status(403))
    result = lib.sync("--json")
    assert result.returncode == 1
    entries = report(result)
    assert entries[keys[0]]["status"] == "downloaded"
    message = entries[keys[1]]["error"]
    assert "403" in str(message) and "wait" in str(message)
    for key in keys[2:]:  # one message for every arXiv entry not done
        assert entries[key]["status"] == "failed"
        assert entries[key]["error"] == message
    for key in ("web0", "web1"):
        assert entries[key]["status"] == "downloaded"
        assert lib.stored(key) == lib.expected(key)
    forbidden = requests_to(lib.fake, blocked)[0]
    after = [r for r in lib.fake.requests if r.start > forbidden.start]
    assert not [r for r in after if r.path.startswith(("/api/", "/pdf/"))]


def test_arxiv_403_on_the_metadata_request_stops_the_pdfs_too(lib: Lib) -> None:
    """Three papers known from an earlier sync (no metadata needed) lost their files, one
    is new: the metadata request gets 403, and not one PDF is asked for after it."""
    keys = arxiv_lib(lib, n=3, web=1)
    assert lib.sync().returncode == 0
    for key in keys:
        (lib.downloads / f"{key}.pdf").unlink()
    lib.add_arxiv("2101.00009")
    lib.write()
    lib.fake.reset_log()
    lib.fake.fault("/api/query", Fault.status(403))
    result = lib.sync("--json")
    assert result.returncode == 1
    entries = report(result)
    arxiv = [*keys, "2101.00009"]
    assert {entries[k]["status"] for k in arxiv} == {"failed"}
    assert len({entries[k]["error"] for k in arxiv}) == 1
    assert "403" in str(entries[keys[0]]["error"])
    assert entries["web0"]["status"] == "skipped"
    assert [r.path for r in lib.fake.requests] == ["/api/query"]


# --- Retry-After ----------------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_an_http_date_is_obeyed(lib: Lib) -> None:
    keys = arxiv_lib(lib, n=3, web=0)
    seconds, dated = pdf_path(keys[0]), pdf_path(keys[1])
    lib.fake.fault(seconds, Fault.status(503, retry_after="1"))
    when = int(time.time()) + 3
    lib.fake.fault(dated, Fault.status(429, retry_after=email.utils.formatdate(when, usegmt=True)))
    result = lib.sync()
    assert result.returncode == 0, result.stderr
    first, retry = requests_to(lib.fake, seconds)
    assert retry.start - first.end >= 1.0  # type: ignore[operator]
    # nothing else went to arXiv meanwhile: the pause holds for the host, not just the entry
    between = [r for r in lib.fake.requests if first.start < r.start < retry.start]
    assert between == []
    _, retry2 = requests_to(lib.fake, dated)
    assert retry2.start >= when
    assert_polite(lib.fake)


def test_retry_after_beyond_the_cap_fails_for_this_run_saying_when(lib: Lib) -> None:
    keys = arxiv_lib(lib, n=3, web=1)
    lib.fake.fault(pdf_path(keys[0]), Fault.status(503, retry_after="3600"))
    started = time.monotonic()
    result = lib.sync("--json")
    assert time.monotonic() - started < 10  # nobody waited an hour
    assert result.returncode == 1
    entries = report(result)
    error = str(entries[keys[0]]["error"])
    assert "asks to wait 3600s (more than 600s); try again after" in error
    assert time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3600)) in error
    for key in keys[1:]:
        assert entries[key]["error"] == error  # no more arXiv requests in this run
    assert len([r for r in lib.fake.requests if r.path.startswith("/pdf/")]) == 1
    assert entries["web0"]["status"] == "downloaded"


# --- who we are -------------------------------------------------------------------------------


def test_every_request_names_fetcher_its_version_and_the_contact(lib: Lib) -> None:
    arxiv_lib(lib, n=2, web=1)
    assert lib.sync().returncode == 0
    agents = {r.headers.get("user-agent") for r in lib.fake.requests}
    assert agents == {
        f"fetcher/{__version__} (+https://github.com/fetcher-dev/fetcher; mailto:tests@example.org)"
    }
    assert INTERVAL == 0.02
