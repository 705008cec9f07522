"""Metadata sidecars: a missing or damaged one is found by verify and rewritten by sync,
without downloading the file again and, when the library still knows the metadata,
without any request (review findings F13, F14)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fetcher.manifest import load
from fetcher.status import status
from tests.fakeserver import FakeServer, make_pdf
from tests.integration.inproc import World

KEY = "1706.03762"
WEB = "https://example.org/files/gpt1.pdf"


@pytest.fixture
def world(tmp_path: Path, fake: FakeServer) -> World:
    w = World(tmp_path, fake)
    fake.add_arxiv(KEY, {1: make_pdf("a1", 5_000)})
    fake.add_file(WEB, make_pdf("gpt1", 5_000))
    w.write(f'[[paper]]\narxiv = "{KEY}"\n\n[[paper]]\nurl = "{WEB}"\nname = "gpt1"\n')
    assert w.sync().ok
    fake.reset_log()
    return w


def sidecar(world: World, stem: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((world.lib / f"{stem}.json").read_text())
    return data


def test_a_missing_url_sidecar_is_rebuilt_from_the_lock_without_a_request(world: World) -> None:
    before = sidecar(world, "gpt1")
    (world.lib / "gpt1.json").unlink()
    report = world.sync()
    assert report.ok
    assert world.fake.requests == []
    entry = {e.key: e for e in report.entries}["gpt1"]
    assert entry.status == "skipped"
    assert entry.warnings == ["metadata sidecar was missing; rewritten"]
    after = sidecar(world, "gpt1")
    body = (world.lib / "gpt1.pdf").read_bytes()
    assert after["sha256"] == hashlib.sha256(body).hexdigest() == before["sha256"]
    for field in ("key", "kind", "file", "url", "size", "source_url"):
        assert after[field] == before[field], field
    assert isinstance(after["fetched_at"], str)
    assert world.verify() == []


@pytest.mark.parametrize("stem", [KEY, "gpt1"])
@pytest.mark.parametrize(
    "damage",
    ["garbage", "other key", "other hash"],
)
def test_a_damaged_sidecar_is_found_by_verify_and_status_and_rewritten_by_sync(
    world: World, stem: str, damage: str
) -> None:
    path = world.lib / f"{stem}.json"
    good = sidecar(world, stem)
    if damage == "garbage":
        path.write_bytes(b"\x00\x17{not json")
    else:
        data = dict(good)
        if damage == "other key":
            data["key"] = "2001.00001"
        else:
            data["sha256"] = "0" * 64
        path.write_text(json.dumps(data))

    (problem,) = world.verify()
    assert (problem.kind, problem.file, problem.key) == ("damaged", path.name, stem)
    line = {e.key: e for e in status(load(world.path)).entries}[stem]
    assert line.state == "present" and any("sidecar damaged" in n for n in line.notes)

    report = world.sync()
    assert report.ok
    entry = {e.key: e for e in report.entries}[stem]
    assert entry.warnings == ["metadata sidecar was damaged; rewritten"]
    # never the file again; the API only when nothing local still has the metadata
    asked = world.paths()
    if stem == KEY and damage != "other hash":
        assert asked == ["/api/query"]
    else:
        assert asked == []
    after = sidecar(world, stem)
    # what the server said last time (ETag, …) is known only from a sidecar of this entry
    unknown = {"fetched_at"}
    if stem == "gpt1" and damage != "other hash":
        unknown |= {"final_url", "content_type", "etag", "last_modified"}
    assert {k: v for k, v in after.items() if k not in unknown} == {
        k: v for k, v in good.items() if k not in unknown
    }
    assert world.verify() == []
