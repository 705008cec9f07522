"""Two manifests, one library: each keeps its own lock, and the upkeep of one (--prune,
partial cleaning, status, verify) never touches what the other has (review finding F4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fetcher.manifest import load
from fetcher.status import compute
from tests.fakeserver import FakeServer, Fault, make_pdf
from tests.integration.inproc import World

ML, NLP, OLD = "1706.03762", "1810.04805", "1910.10683"


@pytest.fixture
def pair(tmp_path: Path, fake: FakeServer) -> tuple[World, World]:
    for key in (ML, NLP, OLD):
        fake.add_arxiv(key, {1: make_pdf(key, 5_000)})
    ml, nlp = World(tmp_path, fake, "ml.toml"), World(tmp_path, fake, "nlp.toml")
    ml.write(f'[[paper]]\narxiv = "{ML}"\n\n[[paper]]\narxiv = "{OLD}"\n')
    nlp.write(f'[[paper]]\narxiv = "{NLP}"\n')
    assert ml.sync().ok
    assert nlp.sync().ok
    return ml, nlp


def test_each_manifest_keeps_a_lock_named_after_it(pair: tuple[World, World]) -> None:
    ml, nlp = pair
    assert load(ml.path).lock_path == ml.dir / "ml.lock"
    assert set(ml.lock()) == {ML, OLD} and set(nlp.lock()) == {NLP}
    assert not (ml.dir / "manifest.lock").exists()
    registry = json.loads((ml.lib / ".fetcher" / "manifests.json").read_text())
    assert registry["manifests"] == ["../ml.toml", "../nlp.toml"]


def test_prune_deletes_only_this_manifests_leftovers(pair: tuple[World, World]) -> None:
    ml, nlp = pair
    ml.write(f'[[paper]]\narxiv = "{ML}"\n')  # OLD leaves ml.toml
    assert ml.sync().ok and set(ml.lock()) == {ML}
    # status and verify of ml do not take nlp's paper for a leftover of ml
    rows = {(e.key, e.state) for e in compute(load(ml.path)).entries}
    assert rows == {(ML, "present"), (OLD, "not in manifest")}
    assert {p.file for p in ml.verify()} == {f"{OLD}.pdf", f"{OLD}.json"}

    report = ml.sync(prune=True)
    assert report.ok, report.to_json()
    assert sorted(Path(p).name for p in report.pruned) == [f"{OLD}.json", f"{OLD}.pdf"]
    kept = [f"{ML}.json", f"{ML}.pdf", f"{NLP}.json", f"{NLP}.pdf", "index.html", "index.md"]
    assert ml.files() == kept
    assert ml.verify() == [] and nlp.verify() == []
    assert set(nlp.lock()) == {NLP}


def test_prune_refuses_while_another_manifest_of_the_library_cannot_be_read(
    pair: tuple[World, World],
) -> None:
    ml, nlp = pair
    ml.write(f'[[paper]]\narxiv = "{ML}"\n')
    nlp.path.write_text("[[paper]\nbroken")
    report = ml.sync(prune=True)
    assert not report.ok and report.pruned == []
    (error,) = report.errors
    assert "nlp.toml" in error and "cannot be read" in error
    assert (ml.lib / f"{OLD}.pdf").exists() and (ml.lib / f"{NLP}.pdf").exists()


def test_a_deleted_manifest_no_longer_protects_its_files(pair: tuple[World, World]) -> None:
    ml, nlp = pair
    nlp.path.unlink()
    report = ml.sync(prune=True)
    assert report.ok
    assert sorted(Path(p).name for p in report.pruned) == [f"{NLP}.json", f"{NLP}.pdf"]


def test_a_sync_of_one_manifest_keeps_the_partial_downloads_of_the_other(
    pair: tuple[World, World], fake: FakeServer
) -> None:
    ml, nlp = pair
    new = "2005.14165"
    fake.add_arxiv(new, {1: make_pdf(new, 50_000)})
    nlp.write(f'[[paper]]\narxiv = "{NLP}"\n\n[[paper]]\narxiv = "{new}"\n')
    fake.fault(f"/pdf/{new}v1", Fault.cut_after(20_000))
    assert not nlp.sync().ok
    part = nlp.partial(f"{new}.pdf")
    assert part.stat().st_size == 20_000

    assert ml.sync().ok
    assert part.stat().st_size == 20_000, "ml's sync removed nlp's partial download"

    fake.reset_log()
    assert nlp.sync().ok
    (resumed,) = [r for r in fake.requests if r.path == f"/pdf/{new}v1"]
    assert resumed.headers.get("range") == "bytes=20000-"
