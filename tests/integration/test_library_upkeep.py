"""Keeping a library over months: verify, status, --check-updates, --upgrade, --locked,
--prune, upstream rebuilds and quiet cron runs, each through the real CLI against the
fake arXiv server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fetcher.status import STATES
from tests.conftest import Result, point_at
from tests.fakeserver import FakeServer, Fault, make_pdf

Cli = Callable[..., Result]

PAPERS = ("1706.03762", "1810.04805", "1910.10683")
WEB_URL = "https://example.org/files/webpaper.pdf"
SIZE = 20_000


class Lib:
    """A small library served by the fake server: three arXiv papers and one URL entry."""

    def __init__(self, tmp_path: Path, fake: FakeServer, cli: Cli):
        self.dir = tmp_path
        self.fake = fake
        self.cli = cli
        self.manifest = tmp_path / "manifest.toml"
        self.lock = tmp_path / "manifest.lock"
        self.root = tmp_path / "downloads"
        for paper in PAPERS:
            fake.add_arxiv(paper, {1: make_pdf(f"{paper}v1", SIZE)})
        fake.add_file(WEB_URL, make_pdf("webpaper", SIZE))
        self.write(PAPERS)

    def write(
        self, papers: tuple[str, ...], *, pins: dict[str, str] | None = None, web: bool = True
    ) -> None:
        text = ""
        for paper in papers:
            text += f'[[paper]]\narxiv = "{paper}"\n'
            if pins and paper in pins:
                text += f'sha256 = "{pins[paper]}"\n'
            text += "\n"
        if web:
            text += f'[[paper]]\nurl = "{WEB_URL}"\nname = "webpaper"\n'
        self.manifest.write_text(point_at(text, self.fake))

    def run(self, *args: str) -> Result:
        return self.cli(*args, "-m", str(self.manifest), cwd=self.dir)

    def sync_ok(self, *args: str) -> Result:
        result = self.run("sync", *args)
        assert result.returncode == 0, result.stderr
        return result

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pdf"

    def lock_entries(self) -> dict[str, dict[str, object]]:
        data: dict[str, dict[str, object]] = json.loads(self.lock.read_text())["entries"]
        return data

    def api_requests(self) -> list[str]:
        return [r.path for r in self.fake.requests if r.path.startswith("/api/")]

    def pdf_requests(self) -> list[str]:
        return [r.path for r in self.fake.requests if r.path.startswith(("/pdf/", "/web/"))]


@pytest.fixture
def lib(tmp_path: Path, fake: FakeServer, cli: Cli) -> Lib:
    library = Lib(tmp_path, fake, cli)
    library.sync_ok()
    fake.reset_log()
    return library


def rot_bit(path: Path) -> None:
    """Damage no stat field shows (bit rot below the file system): one bit flipped, and
    the stat cache left believing the file is as it was hashed."""
    cache_path = path.parent / ".fetcher" / "stat-cache.json"
    cache = json.loads(cache_path.read_text())
    sha = cache[path.name][-1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    st = path.stat()
    cache[path.name] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, sha]
    cache_path.write_text(json.dumps(cache))


def damage_three_ways(lib: Lib) -> tuple[Path, Path, Path]:
    flipped, truncated, deleted = (lib.path(p) for p in PAPERS)
    rot_bit(flipped)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    deleted.unlink()
    return flipped, truncated, deleted


def problem_lines(result: Result) -> list[str]:
    return [
        line
        for line in result.stderr.splitlines()
        if line.split()[:1] and line.split()[0] in ("missing", "damaged", "unexpected", "unsynced")
    ]


def status_lines(result: Result) -> dict[str, str]:
    """The entry lines of `fetcher status`, by key."""
    lines = {}
    for line in result.stdout.splitlines():
        state = next((s for s in STATES if line.startswith(s + " ")), None)
        if state is not None:
            lines[line[len(state) :].split()[0]] = line
    return lines


# --- verify and repair ------------------------------------------------------------------------


def test_verify_names_all_three_damages_and_sync_repairs_them_without_the_api(lib: Lib) -> None:
    good = {p: lib.path(p).read_bytes() for p in PAPERS}
    damage_three_ways(lib)

    result = lib.run("verify")
    assert result.returncode == 1
    lines = problem_lines(result)
    assert len(lines) == 3, result.stderr
    assert any(line.startswith("damaged") and "1706.03762.pdf" in line for line in lines)
    assert any(line.startswith("damaged") and "1810.04805.pdf" in line for line in lines)
    assert any(line.startswith("missing") and "1910.10683.pdf" in line for line in lines)

    as_json = json.loads(lib.run("verify", "--json").stdout)
    assert as_json["ok"] is False
    assert sorted((p["kind"], p["key"]) for p in as_json["problems"]) == [
        ("damaged", "1706.03762"),
        ("damaged", "1810.04805"),
        ("missing", "1910.10683"),
    ]

    lib.fake.reset_log()
    lib.sync_ok()
    assert lib.api_requests() == [], "the lock knows every version: no API request"
    assert sorted(lib.pdf_requests()) == [f"/pdf/{p}v1" for p in PAPERS]
    for paper in PAPERS:
        assert lib.path(paper).read_bytes() == good[paper]
    assert lib.run("verify").returncode == 0


def test_sync_repairs_what_it_sees_and_verify_drives_the_rest(lib: Lib) -> None:
    flipped, truncated, deleted = damage_three_ways(lib)
    damaged_bytes = flipped.read_bytes()

    lib.sync_ok()
    assert lib.api_requests() == []
    assert sorted(lib.pdf_requests()) == ["/pdf/1810.04805v1", "/pdf/1910.10683v1"]
    assert truncated.stat().st_size == SIZE and deleted.exists()
    assert flipped.read_bytes() == damaged_bytes, "the stat cache hides a bit flip from sync"

    result = lib.run("verify")
    assert result.returncode == 1
    lines = problem_lines(result)
    assert len(lines) == 1 and lines[0].startswith("damaged") and "1706.03762" in lines[0]

    lib.fake.reset_log()
    lib.sync_ok()
    assert lib.pdf_requests() == ["/pdf/1706.03762v1"] and lib.api_requests() == []
    assert flipped.read_bytes() == make_pdf("1706.03762v1", SIZE)
    assert lib.run("verify").returncode == 0


def test_a_deleted_sidecar_is_rewritten_from_the_api_without_downloading(lib: Lib) -> None:
    (lib.root / "1706.03762.json").unlink()
    result = lib.run("verify")
    assert result.returncode == 1 and "1706.03762.json" in result.stderr
    lib.sync_ok()
    assert lib.pdf_requests() == [] and len(lib.api_requests()) == 1
    assert json.loads((lib.root / "1706.03762.json").read_text())["version"] == 1
    assert lib.run("verify").returncode == 0


# --- status, updates, upgrade ---------------------------------------------------------------


def test_status_shows_every_state_and_never_touches_the_network(lib: Lib) -> None:
    lib.path("1810.04805").write_bytes(b"%PDF-1.4 truncated")
    lib.path("1910.10683").unlink()
    lib.fake.add_arxiv("2005.14165")
    lib.write(("1706.03762", "1810.04805", "1910.10683", "2005.14165"), web=False)

    result = lib.run("status")
    assert result.returncode == 0, result.stderr
    lines = status_lines(result)
    assert lines["1706.03762"].startswith("present") and " v1 " in lines["1706.03762"]
    assert lines["1810.04805"].startswith("damaged")
    assert lines["1910.10683"].startswith("missing")
    assert lines["2005.14165"].startswith("never synced")
    assert lines["webpaper"].startswith("not in manifest")
    assert "disagrees with the manifest" in result.stdout
    assert "not in the lock: 2005.14165" in result.stdout
    assert "in the lock only: webpaper" in result.stdout
    assert "4 entries: 1 present, 1 missing, 1 damaged, 1 never synced" in result.stdout

    data = json.loads(lib.run("status", "--json").stdout)
    states = {e["key"]: e["state"] for e in data["entries"]}
    assert states == {
        "1706.03762": "present",
        "1810.04805": "damaged",
        "1910.10683": "missing",
        "2005.14165": "never synced",
        "webpaper": "not in manifest",
    }
    assert data["lock"] == {
        "exists": True,
        "agrees": False,
        "not_in_lock": ["2005.14165"],
        "not_in_manifest": ["webpaper"],
    }
    present = next(e for e in data["entries"] if e["key"] == "1706.03762")
    assert present["version"] == 1 and present["size"] == SIZE and present["pinned"] is False
    assert lib.fake.requests == []


def test_status_of_a_library_never_synced_creates_nothing(
    tmp_path: Path, fake: FakeServer, cli: Cli
) -> None:
    library = Lib(tmp_path, fake, cli)
    result = library.run("status")
    assert result.returncode == 0, result.stderr
    assert [x.split()[2] for x in result.stdout.splitlines() if x.startswith("never synced")] == [
        *PAPERS,
        "webpaper",
    ]
    assert "no manifest.lock yet" in result.stdout
    assert not library.root.exists() and not library.lock.exists()


def test_check_updates_makes_one_request_and_upgrade_fetches_the_new_version(lib: Lib) -> None:
    lib.write(("1706.03762", "1810.04805v1", "1910.10683"))  # 1810.04805 pinned to v1
    v2 = make_pdf("1706.03762v2", SIZE + 1000)
    lib.fake.add_version("1706.03762", 2, v2)
    lib.fake.add_version("1810.04805", 2, make_pdf("1810.04805v2", SIZE))

    result = lib.run("status", "--check-updates")
    assert result.returncode == 0, result.stderr
    assert len(lib.api_requests()) == 1 and lib.pdf_requests() == []
    lines = status_lines(result)
    assert "newer: v2" in lines["1706.03762"]
    assert "v1 pinned" in lines["1810.04805"] and "newer: v2" in lines["1810.04805"]
    assert "newer" not in lines["1910.10683"] and "newer" not in lines["webpaper"]
    data = json.loads(lib.run("status", "--check-updates", "--json").stdout)
    assert data["updates"]["newer"] == {"1706.03762": 2, "1810.04805": 2}

    lib.fake.reset_log()
    result = lib.sync_ok("--upgrade", "1706.03762")
    assert len(lib.api_requests()) == 1
    assert lib.pdf_requests() == ["/pdf/1706.03762v2"]
    assert lib.path("1706.03762").read_bytes() == v2
    record = lib.lock_entries()["1706.03762"]
    assert record["version"] == 2 and record["size"] == len(v2)
    sidecar = json.loads((lib.root / "1706.03762.json").read_text())
    assert sidecar["version"] == 2 and sidecar["sha256"] == record["sha256"]

    lib.fake.reset_log()
    lib.sync_ok("--upgrade")  # the pin holds; nothing else is newer
    assert len(lib.api_requests()) == 1 and lib.pdf_requests() == []
    assert lib.lock_entries()["1810.04805"]["version"] == 1
    data = json.loads(lib.run("status", "--check-updates", "--json").stdout)
    assert data["updates"]["newer"] == {"1810.04805": 2}
    assert lib.run("verify").returncode == 0


def test_a_failed_upgrade_keeps_the_old_file_and_lock(lib: Lib) -> None:
    before = lib.path("1706.03762").read_bytes()
    lock_before = lib.lock.read_bytes()
    lib.fake.add_version("1706.03762", 2, make_pdf("1706.03762v2", SIZE))
    lib.fake.fault("/pdf/1706.03762v2", Fault.status(404))
    result = lib.run("sync", "--upgrade")
    assert result.returncode == 1
    assert "1706.03762" in result.stderr
    assert lib.path("1706.03762").read_bytes() == before
    assert lib.lock.read_bytes() == lock_before


def test_a_failed_update_check_is_reported_and_status_still_exits_0(lib: Lib) -> None:
    lib.fake.fault("/api/query", Fault.status(400))
    result = lib.run("status", "--check-updates")
    assert result.returncode == 0
    assert "could not check for updates" in result.stderr
    assert "present" in result.stdout


# --- upstream rebuilds, pins and --locked -------------------------------------------------------


def test_upstream_rebuild_fails_under_locked_and_is_accepted_with_a_warning(lib: Lib) -> None:
    rebuilt = make_pdf("1706.03762v1 rebuilt", SIZE + 10)
    lib.fake.replace_bytes("/pdf/1706.03762v1", rebuilt)
    lib.path("1706.03762").unlink()
    lock_before = lib.lock.read_bytes()

    result = lib.run("sync", "--locked")
    assert result.returncode == 1
    assert "--locked" in result.stderr and "1706.03762" in result.stderr
    assert lib.lock.read_bytes() == lock_before
    assert not lib.path("1706.03762").exists()

    result = lib.sync_ok()
    assert "warning: 1706.03762: upstream changed" in result.stderr
    assert lib.path("1706.03762").read_bytes() == rebuilt
    assert lib.lock_entries()["1706.03762"]["size"] == len(rebuilt)
    assert lib.run("verify").returncode == 0
    lib.sync_ok("--locked")  # the lock now agrees


def test_a_sha256_pin_binds_against_an_upstream_rebuild(lib: Lib) -> None:
    import hashlib

    pin = hashlib.sha256(lib.path("1706.03762").read_bytes()).hexdigest()
    lib.write(PAPERS, pins={"1706.03762": pin})
    lib.sync_ok()
    lib.fake.replace_bytes("/pdf/1706.03762v1", make_pdf("rebuilt", SIZE))
    lib.path("1706.03762").unlink()
    lock_before = lib.lock.read_bytes()
    result = lib.run("sync")
    assert result.returncode == 1
    assert "pins sha256" in result.stderr
    assert not lib.path("1706.03762").exists()
    assert lib.lock.read_bytes() == lock_before


def test_locked_refuses_a_lock_that_disagrees_with_the_manifest(lib: Lib) -> None:
    lock_before = lib.lock.read_bytes()
    result = lib.run("sync", "--locked")
    assert result.returncode == 0, result.stderr
    assert lib.fake.requests == [] and lib.lock.read_bytes() == lock_before

    lib.fake.add_arxiv("2005.14165")
    lib.write((*PAPERS, "2005.14165"))
    result = lib.run("sync", "--locked", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    failed = [e for e in report["entries"] if e["status"] == "failed"]
    assert [e["key"] for e in failed] == ["2005.14165"]
    assert "--locked" in failed[0]["error"]
    assert lib.fake.requests == [] and lib.lock.read_bytes() == lock_before
    assert not (lib.root / "2005.14165.pdf").exists()

    lib.write(PAPERS[:2])  # 1910.10683 and webpaper removed from the manifest
    result = lib.run("sync", "--locked")
    assert result.returncode == 1
    assert "1910.10683" in result.stderr and "not in the manifest" in result.stderr
    assert lib.lock.read_bytes() == lock_before
    assert (lib.root / "1910.10683.pdf").exists()


def test_locked_refuses_a_manifest_edit_without_a_request(lib: Lib) -> None:
    lock_before = lib.lock.read_bytes()
    lib.write(PAPERS, pins={"1706.03762": "0" * 64})  # a new pin the lock does not have
    result = lib.run("sync", "--locked")
    assert result.returncode == 1
    assert "FAILED     1706.03762" in result.stderr and "--locked" in result.stderr
    assert lib.fake.requests == [] and lib.lock.read_bytes() == lock_before


def test_locked_refuses_upgrade(lib: Lib) -> None:
    result = lib.run("sync", "--locked", "--upgrade")
    assert result.returncode == 2
    assert "--upgrade" in result.stderr and lib.fake.requests == []


def test_a_lost_lock_is_rebuilt_from_the_sidecars_without_downloading(lib: Lib) -> None:
    lock_before = lib.lock_entries()
    lib.lock.unlink()
    result = lib.run("sync", "--locked")
    assert result.returncode == 1 and not lib.lock.exists()
    lib.sync_ok()
    assert lib.pdf_requests() == [] and lib.api_requests() == []
    assert lib.lock_entries() == lock_before


# --- entries removed from the manifest, --prune -------------------------------------------------


def test_removed_entries_are_kept_until_prune_which_deletes_only_them(lib: Lib) -> None:
    notes = lib.root / "my-notes.txt"
    notes.write_text("mine, not fetcher's")
    lib.write(PAPERS[:2], web=False)

    lib.sync_ok()
    assert (lib.root / "1910.10683.pdf").exists() and (lib.root / "webpaper.pdf").exists()
    assert set(lib.lock_entries()) == set(PAPERS[:2])

    status = lib.run("status")
    gone = [x for x in status.stdout.splitlines() if x.startswith("not in manifest")]
    assert len(gone) == 2 and any("1910.10683" in x for x in gone)
    verify = lib.run("verify")
    assert verify.returncode == 1
    assert "1910.10683.pdf" in verify.stderr and "--prune" in verify.stderr
    assert "my-notes.txt" in verify.stderr

    result = lib.sync_ok("--prune")
    for name in ("1910.10683.pdf", "1910.10683.json", "webpaper.pdf", "webpaper.json"):
        assert name in result.stdout
        assert not (lib.root / name).exists()
    assert notes.read_text() == "mine, not fetcher's"
    for paper in PAPERS[:2]:
        assert lib.path(paper).exists() and (lib.root / f"{paper}.json").exists()
    assert lib.fake.requests == []
    assert "not in manifest" not in lib.run("status").stdout


# --- cron ---------------------------------------------------------------------------------------


def test_quiet_is_silent_when_all_is_well_even_with_a_short_interval(
    tmp_path: Path, fake: FakeServer, cli: Cli
) -> None:
    library = Lib(tmp_path, fake, cli)  # arxiv_interval 0.02: a warning without -q
    loud = library.run("sync", "--dry-run")
    assert loud.returncode == 0
    first = library.run("sync", "-q")
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    again = library.run("sync", "-q")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    check = library.run("verify", "-q")
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")

    library.path("1706.03762").unlink()
    library.path("1810.04805").unlink()
    fake.fault("/pdf/1706.03762v1", Fault.status(404))
    fake.fault("/pdf/1810.04805v1", Fault.status(404))
    failed = library.run("sync", "-q")
    assert failed.returncode == 1 and failed.stdout == ""
    lines = failed.stderr.splitlines()
    assert len(lines) == 2, failed.stderr
    assert all("1706.03762" in x or "1810.04805" in x for x in lines)
