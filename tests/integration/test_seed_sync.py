"""The seed collection end to end: the installed CLI against the loopback fake server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from fetcher import manifest as manifest_mod
from fetcher.library import read_lock
from tests.conftest import run_fetcher
from tests.fakeserver import FakeServer

INTERVAL = 0.02


def served(fake: FakeServer, url: str) -> bytes:
    response = httpx.get(url, follow_redirects=True)
    response.raise_for_status()
    return response.content


def test_seed_collection_cold_then_warm(seed_library: Path, fake: FakeServer) -> None:
    manifest = manifest_mod.load(seed_library)
    cold = run_fetcher("sync", "--json", "-m", str(seed_library))
    assert cold.returncode == 0, cold.stderr
    report = json.loads(cold.stdout)
    log = list(fake.requests)

    # one API request for 40 ids, then one request per file, nothing else
    api = [r for r in log if r.path.startswith("/api/")]
    pdfs = [r for r in log if r.path.startswith("/pdf/")]
    web = [r for r in log if r.path.startswith("/web/")]
    assert len(api) == 1
    assert len(api[0].query.split("id_list=")[1].split("&")[0].split(",")) == 40
    assert len(pdfs) == 40 and len(web) == 3
    assert len(log) == 44

    # two hosts as fetcher sees them (conftest.point_at): arXiv at 127.0.0.1, the direct
    # URLs at localhost, so url entries run in the other-hosts lane, not the arXiv gate
    assert {r.headers["host"] for r in api + pdfs} == {f"127.0.0.1:{fake.port}"}
    assert {r.headers["host"] for r in web} == {f"localhost:{fake.port}"}
    # arXiv (counted over /api and /pdf only): one at a time, starts the interval apart
    assert fake.max_concurrency("/api/|/pdf/") == 1
    gap = fake.min_gap("/api/|/pdf/")
    assert gap is not None and gap >= INTERVAL
    # direct URLs run beside arXiv's queue, not after it: all started before its last request
    assert max(r.start for r in web) < max(r.start for r in pdfs)

    assert report["ok"] is True
    assert report["counts"] == {"downloaded": 43, "skipped": 0, "failed": 0}
    assert set(report) == {"ok", "entries", "counts", "warnings"}  # the interval warning
    entries = {e["key"]: e for e in report["entries"]}
    assert [e["key"] for e in report["entries"]] == [e.key for e in manifest.entries]

    lock = read_lock(seed_library.parent / "manifest.lock")
    assert set(lock) == set(entries)
    fake.reset_log()
    for entry in manifest.entries:
        record = lock[entry.key]
        stored = (seed_library.parent / "downloads" / record.file).read_bytes()
        assert stored == served(fake, record.url), entry.key
        assert hashlib.sha256(stored).hexdigest() == record.sha256 == entries[entry.key]["sha256"]
        assert entries[entry.key]["size"] == len(stored) == record.size
        assert entries[entry.key]["status"] == "downloaded"
        assert entries[entry.key]["path"] == f"downloads/{record.file}"
        sidecar = json.loads(
            (seed_library.parent / "downloads" / (Path(record.file).stem + ".json")).read_text()
        )
        assert sidecar["sha256"] == record.sha256
        if entry.kind == "arxiv":
            assert entries[entry.key]["version"] == record.version == sidecar["version"]
            assert sidecar["title"] and sidecar["authors"]
    assert lock["moe-blog"].file == "moe-blog.html"
    assert lock["gpt1"].file == "gpt1.pdf"
    fake.reset_log()

    warm = run_fetcher("sync", "--json", "-m", str(seed_library))
    assert warm.returncode == 0, warm.stderr
    assert fake.requests == []
    again = json.loads(warm.stdout)
    assert again["ok"] is True
    assert again["counts"] == {"downloaded": 0, "skipped": 43, "failed": 0}
    assert all(e["status"] == "skipped" for e in again["entries"])
    assert "warnings" not in again  # nothing went to arXiv, so no interval warning


def test_human_output_and_exit_code_when_an_entry_fails(
    seed_library: Path, fake: FakeServer
) -> None:
    text = seed_library.read_text() + '\n[[paper]]\narxiv = "2301.00001"\n'
    seed_library.write_text(text)
    result = run_fetcher("sync", "-m", str(seed_library))
    assert result.returncode == 1
    assert "FAILED     2301.00001: 2301.00001 not found on arXiv" in result.stderr
    assert "44 entries: 43 downloaded, 0 present, 1 failed" in result.stderr
    assert result.stdout.count("downloaded ") == 43
    assert "Traceback" not in result.stderr


def test_python_m_fetcher_is_the_same_program(seed_library: Path, fake: FakeServer) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "fetcher", "sync", "--dry-run", "-m", str(seed_library)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dry run: 43 to fetch, 0 present; nothing was fetched" in proc.stdout
    assert fake.requests == []
