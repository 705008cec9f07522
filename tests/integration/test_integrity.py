"""What the library holds stays true across crashes, damaged partials, pins and upgrades:
bytes on disk, lock contents and the fake server's request log, with `fetcher.sync`
running in-process against the loopback server (review findings F2, F3, F15, F16).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import fetcher
from fetcher.manifest import load
from fetcher.status import status
from tests.fakeserver import FakeServer, Fault, make_pdf
from tests.integration.inproc import ONE_SHOT, World

KEY = "1706.03762"
PDF_PATH = f"/pdf/{KEY}v1"


@pytest.fixture
def world(tmp_path: Path, fake: FakeServer) -> World:
    return World(tmp_path, fake)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cut_partial(world: World, cut: int) -> Path:
    """A sync whose download breaks after `cut` bytes: the partial file stays."""
    world.fake.fault(PDF_PATH, Fault.cut_after(cut))
    report = world.sync()
    assert report.counts["failed"] == 1
    part = world.partial(f"{KEY}.pdf")
    assert part.stat().st_size == cut
    return part


def zero(part: Path, start: int, end: int) -> None:
    """Writes lost in a power cut: a stretch of the kept bytes is zeros."""
    data = bytearray(part.read_bytes())
    data[start:end] = bytes(end - start)
    part.write_bytes(bytes(data))


# --- F2: a damaged partial never becomes "upstream changed" --------------------------------


def test_a_damaged_resumed_partial_is_fetched_again_not_accepted_as_an_upstream_change(
    world: World,
) -> None:
    body = make_pdf("a1", 50_000)
    world.fake.add_arxiv(KEY, {1: body})
    world.write(f'[[paper]]\narxiv = "{KEY}"\n')
    assert world.sync().ok
    locked = world.lock()[KEY]["sha256"]
    assert locked == sha(body)

    (world.lib / f"{KEY}.pdf").unlink()  # a repair: the lock knows the right hash
    part = cut_partial(world, 30_000)
    zero(part, 20_000, 30_000)
    world.fake.reset_log()

    report = world.sync()
    assert report.ok, report.to_json()
    (entry,) = report.entries
    assert entry.status == "downloaded" and entry.warnings == []  # no "upstream changed"
    assert (world.lib / f"{KEY}.pdf").read_bytes() == body
    assert world.lock()[KEY]["sha256"] == locked
    # the resume, then the whole file once more from zero, in the same (only) attempt
    resumed, whole = [r for r in world.fake.requests if r.path == PDF_PATH]
    assert resumed.headers.get("range") == "bytes=30000-"
    assert "range" not in whole.headers
    assert fetcher.verify(load(world.path)) == []


def test_a_damaged_resumed_partial_of_a_pinned_entry_is_fetched_again_and_stored(
    world: World,
) -> None:
    body = make_pdf("a1", 50_000)
    world.fake.add_arxiv(KEY, {1: body})
    world.write(f'[[paper]]\narxiv = "{KEY}v1"\nsha256 = "{sha(body)}"\n')
    part = cut_partial(world, 30_000)
    zero(part, 1_000, 9_000)

    report = world.sync()
    assert report.ok, report.to_json()  # not "hashes to …, but the manifest pins …"
    assert (world.lib / f"{KEY}.pdf").read_bytes() == body


def test_after_a_reboot_only_the_fsynced_part_of_a_partial_is_resumed(world: World) -> None:
    body = make_pdf("a1", 50_000)
    world.fake.add_arxiv(KEY, {1: body})
    world.write(f'[[paper]]\narxiv = "{KEY}"\n')
    part = cut_partial(world, 30_000)
    note_path = part.with_name(part.name + ".json")
    note = json.loads(note_path.read_text())
    assert note["durable"] == 30_000  # fsynced when the connection broke
    # as if the machine rebooted after only 12,000 bytes had been fsynced
    note.update(durable=12_000, boot="another-boot")
    note_path.write_text(json.dumps(note))
    zero(part, 12_000, 30_000)  # what the power cut lost
    world.fake.reset_log()

    assert world.sync().ok
    (resumed,) = [r for r in world.fake.requests if r.path == PDF_PATH]
    assert resumed.headers.get("range") == "bytes=12000-"
    assert (world.lib / f"{KEY}.pdf").read_bytes() == body


# --- F15: a crash between storing a file and writing its lock line ----------------------------


def test_a_file_newer_than_the_lock_is_adopted_from_its_sidecar_not_rolled_back(
    world: World,
) -> None:
    v1, v2 = make_pdf("a1", 5_000), make_pdf("a2", 5_000)
    world.fake.add_arxiv(KEY, {1: v1})
    world.write(f'[[paper]]\narxiv = "{KEY}"\n')
    assert world.sync().ok
    lock = world.dir / "manifest.lock"
    shutil.copy(lock, world.dir / "lock.v1")
    world.fake.add_version(KEY, 2, v2)
    assert world.sync(upgrade=True).ok
    # killed after the file and its sidecar, before the (throttled) lock write
    shutil.copy(world.dir / "lock.v1", lock)
    assert world.lock()[KEY]["version"] == 1
    world.fake.reset_log()

    report = world.sync()
    assert report.ok and report.entries[0].status == "skipped"
    assert world.fake.requests == []
    assert (world.lib / f"{KEY}.pdf").read_bytes() == v2
    assert world.lock()[KEY] == {
        "kind": "arxiv",
        "file": f"{KEY}.pdf",
        "url": f"{world.fake.url}/pdf/{KEY}v2",
        "sha256": sha(v2),
        "size": len(v2),
        "version": 2,
    }
    assert fetcher.verify(load(world.path)) == []


# --- F3: old files of a changed pin or an upgrade go --------------------------------------------


def test_changing_the_pinned_version_removes_the_old_file_and_sidecar(world: World) -> None:
    world.fake.add_arxiv(KEY, {1: make_pdf("a1", 5_000), 2: make_pdf("a2", 5_000)})
    settings = '[settings]\nfilename = "{id}"\n'
    world.write(settings + f'[[paper]]\narxiv = "{KEY}v1"\n')
    assert world.sync().ok
    assert world.files() == [f"{KEY}v1.json", f"{KEY}v1.pdf", "index.html", "index.md"]

    world.write(settings + f'[[paper]]\narxiv = "{KEY}v2"\n')
    assert world.sync().ok
    assert world.files() == [f"{KEY}v2.json", f"{KEY}v2.pdf", "index.html", "index.md"]
    assert fetcher.verify(load(world.path)) == []


def test_an_upgrade_after_the_old_file_was_deleted_leaves_no_sidecar_behind(
    world: World,
) -> None:
    world.fake.add_arxiv(KEY, {1: make_pdf("a1", 5_000)})
    world.write(f'[settings]\nfilename = "{{id}}"\n[[paper]]\narxiv = "{KEY}"\n')
    assert world.sync().ok
    (world.lib / f"{KEY}v1.pdf").unlink()
    world.fake.add_version(KEY, 2, make_pdf("a2", 5_000))
    assert world.sync(upgrade=True).ok
    assert world.files() == [f"{KEY}v2.json", f"{KEY}v2.pdf", "index.html", "index.md"]
    assert fetcher.verify(load(world.path)) == []


def test_older_files_of_an_entry_still_in_the_manifest_are_shown_and_pruned(
    world: World,
) -> None:
    world.fake.add_arxiv(KEY, {1: make_pdf("a2", 5_000)})
    world.write(f'[settings]\nfilename = "{{id}}"\n[[paper]]\narxiv = "{KEY}"\n')
    assert world.sync().ok
    # what an older fetcher left behind after an upgrade: v0's file and its sidecar
    old = world.lib / f"{KEY}v0.pdf"
    old.write_bytes(make_pdf("a0", 5_000))
    sidecar = json.loads((world.lib / f"{KEY}v1.json").read_text())
    sidecar.update(file=old.name, version=0)
    (world.lib / f"{KEY}v0.json").write_text(json.dumps(sidecar))
    (world.lib / "notes.txt").write_text("mine")

    problems = {p.file: p for p in fetcher.verify(load(world.path))}
    assert set(problems) == {old.name, f"{KEY}v0.json", "notes.txt"}
    assert "an older file of 1706.03762" in problems[old.name].detail
    rows = [e for e in status(load(world.path)).entries if e.state == "not in manifest"]
    assert [(r.key, r.file) for r in rows] == [(KEY, old.name)]

    report = world.sync(prune=True)
    assert report.ok
    assert sorted(Path(p).name for p in report.pruned) == [f"{KEY}v0.json", old.name]
    assert world.files() == [f"{KEY}v1.json", f"{KEY}v1.pdf", "index.html", "index.md", "notes.txt"]


# --- F16: a sha256 pin fixes the version ------------------------------------------------------


def test_upgrade_leaves_an_entry_with_a_sha256_pin_alone(world: World) -> None:
    v1 = make_pdf("a1", 5_000)
    world.fake.add_arxiv(KEY, {1: v1})
    world.write(f'[[paper]]\narxiv = "{KEY}"\nsha256 = "{sha(v1)}"\n')
    assert world.sync().ok
    world.fake.add_version(KEY, 2, make_pdf("a2", 5_000))
    world.fake.reset_log()

    for _ in range(2):
        report = world.sync(upgrade=True)
        assert report.ok, report.to_json()
        assert report.entries[0].status == "skipped"
    assert world.fake.requests == []
    assert (world.lib / f"{KEY}.pdf").read_bytes() == v1

    checked = status(load(world.path), check_updates=True, policy=ONE_SHOT)
    (line,) = checked.entries
    assert line.newer == 2 and any("sha256 pin" in note for note in line.notes)
