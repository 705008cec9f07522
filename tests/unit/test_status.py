"""status: every entry's state from local state alone, the lock's disagreements, the files
of removed entries (only fetcher's own), and the one-request update check.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import respx

from fetcher.http import Policy
from fetcher.library import LockRecord, atomic_write_json, write_lock
from fetcher.manifest import Manifest, loads
from fetcher.status import compute, latest_versions, orphans, status
from tests.conftest import FakeClock

API = "https://export.arxiv.org/api/query"
POLICY = Policy(attempts=2, backoff_initial=0.01, backoff_max=0.01)


def store(root: Path, key: str, version: int = 1, *, sidecar: bool = True) -> LockRecord:
    data = b"%PDF-1.4\n" + key.encode() * 500 + b"\n%%EOF\n"
    root.mkdir(exist_ok=True)
    (root / f"{key}.pdf").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    if sidecar:
        atomic_write_json(
            root / f"{key}.json",
            {
                "key": key,
                "kind": "arxiv",
                "file": f"{key}.pdf",
                "id": key,
                "version": version,
                "sha256": sha,
                "size": len(data),
                "source_url": f"https://export.arxiv.org/pdf/{key}v{version}",
            },
        )
    return LockRecord(
        "arxiv",
        f"{key}.pdf",
        f"https://export.arxiv.org/pdf/{key}v{version}",
        sha,
        len(data),
        version,
    )


def manifest_of(tmp_path: Path, *ids: str) -> Manifest:
    text = "".join(f'[[paper]]\narxiv = "{i}"\n' for i in ids)
    return loads(text, tmp_path / "manifest.toml")


def states(report: object) -> dict[str, str]:
    return {e.key: e.state for e in report.entries}  # type: ignore[attr-defined]


def test_every_state_and_the_lock_disagreement(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    lock = {k: store(root, k) for k in ("1706.03762", "1810.04805", "1910.10683", "2001.08361")}
    write_lock(tmp_path / "manifest.lock", lock)
    (root / "1810.04805.pdf").write_bytes(b"%PDF-1.4 short %%EOF")
    (root / "1910.10683.pdf").unlink()
    (root / "notes.txt").write_text("the user's own file")
    manifest = manifest_of(tmp_path, "1706.03762", "1810.04805", "1910.10683", "2005.14165")

    report = compute(manifest)
    assert states(report) == {
        "1706.03762": "present",
        "1810.04805": "damaged",
        "1910.10683": "missing",
        "2005.14165": "never synced",
        "2001.08361": "not in manifest",
    }
    assert report.not_in_lock == ["2005.14165"] and report.lock_only == ["2001.08361"]
    assert not report.lock_agrees
    assert report.counts["present"] == 1 and report.counts["not in manifest"] == 1
    present = report.entries[0]
    assert (present.version, present.size, present.pinned) == (1, lock["1706.03762"].size, False)
    data = report.to_json()
    assert data["lock"] == {
        "exists": True,
        "agrees": False,
        "not_in_lock": ["2005.14165"],
        "not_in_manifest": ["2001.08361"],
    }
    assert "updates" not in data


def test_a_pinned_version_the_lock_does_not_have_is_noted(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    write_lock(tmp_path / "manifest.lock", {"1706.03762": store(root, "1706.03762", 1)})
    [entry] = compute(manifest_of(tmp_path, "1706.03762v3")).entries
    assert entry.state == "present" and entry.pinned and entry.version == 1
    assert any("pins v3" in note for note in entry.notes)


def test_a_lost_lock_is_read_back_from_the_sidecars(tmp_path: Path) -> None:
    store(tmp_path / "downloads", "1706.03762")
    [entry] = compute(manifest_of(tmp_path, "1706.03762")).entries
    assert entry.state == "present"
    assert any("not in manifest.lock" in note for note in entry.notes)


def test_a_missing_sidecar_is_noted(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    write_lock(tmp_path / "manifest.lock", {"1706.03762": store(root, "1706.03762")})
    (root / "1706.03762.json").unlink()
    [entry] = compute(manifest_of(tmp_path, "1706.03762")).entries
    assert entry.state == "present" and any("sidecar" in note for note in entry.notes)


def test_orphans_are_only_what_fetcher_stored_for_removed_entries(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    kept = store(root, "1706.03762")
    store(root, "1810.04805")  # removed from manifest and lock; its sidecar remembers it
    gone = store(root, "1910.10683", sidecar=False)  # removed, still in the lock
    (root / "notes.txt").write_text("mine")
    (root / "paper.pdf").write_bytes(b"%PDF- the user's own")
    # a stray sidecar that claims a file an entry of the manifest owns
    atomic_write_json(root / "stray.json", {"key": "9999.99999", "file": "1706.03762.pdf"})
    from fetcher.library import Library

    found = orphans(Library(root), ["1706.03762"], {"1706.03762": kept, "1910.10683": gone})
    assert [(o.key, o.files) for o in found] == [
        ("1810.04805", ("1810.04805.json", "1810.04805.pdf")),
        ("1910.10683", ("1910.10683.pdf",)),
    ]


def test_status_of_nothing_creates_nothing(tmp_path: Path) -> None:
    report = compute(manifest_of(tmp_path, "1706.03762"))
    assert states(report) == {"1706.03762": "never synced"}
    assert not report.lock_exists
    assert list(tmp_path.iterdir()) == []


# --- the update check --------------------------------------------------------------------------


def feed(*versioned: str) -> bytes:
    entries = "".join(
        f"""<entry><id>http://arxiv.org/abs/{v}</id>
        <updated>2020-01-01T00:00:00Z</updated><published>2019-01-01T00:00:00Z</published>
        <title>Paper {v}</title><summary>s</summary><author><name>A. Author</name></author>
        <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
        <arxiv:primary_category term="cs.LG"/></entry>"""
        for v in versioned
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom">' + entries + "</feed>"
    ).encode()


@respx.mock
def test_check_updates_is_one_request_and_names_the_newer_versions(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    write_lock(
        tmp_path / "manifest.lock",
        {
            "1706.03762": store(root, "1706.03762", 5),
            "1810.04805": store(root, "1810.04805", 2),
            "1910.10683": store(root, "1910.10683", 1),
        },
    )
    route = respx.get(API).mock(
        return_value=httpx.Response(
            200, content=feed("1706.03762v7", "1810.04805v2", "1910.10683v4")
        )
    )
    manifest = manifest_of(tmp_path, "1706.03762", "1810.04805", "1910.10683v1", "2005.14165")
    report = status(manifest, check_updates=True, clock=FakeClock(), policy=POLICY)
    assert route.call_count == 1 and report.requests == 1
    asked = route.calls[0].request.url.params["id_list"].split(",")
    assert sorted(asked) == ["1706.03762", "1810.04805", "1910.10683", "2005.14165"]
    newer = {e.key: e.newer for e in report.entries}
    assert newer == {"1706.03762": 7, "1810.04805": None, "1910.10683": 4, "2005.14165": None}
    pinned = next(e for e in report.entries if e.key == "1910.10683")
    assert any("keeps the pin" in note for note in pinned.notes)
    assert report.to_json()["updates"] == {
        "checked": True,
        "requests": 1,
        "newer": {"1706.03762": 7, "1910.10683": 4},
        "error": None,
    }


@respx.mock
def test_a_hundred_and_fifty_papers_take_two_requests() -> None:
    route = respx.get(API).mock(return_value=httpx.Response(200, content=feed()))
    ids = [f"2001.{n:05d}" for n in range(150)]
    manifest = loads("", "/nonexistent/manifest.toml")
    check = latest_versions(manifest, ids, clock=FakeClock(), policy=POLICY)
    assert (check.versions, check.requests, route.call_count) == ({}, 2, 2)


@respx.mock
def test_a_failed_check_keeps_the_local_status(tmp_path: Path) -> None:
    respx.get(API).mock(return_value=httpx.Response(503))
    root = tmp_path / "downloads"
    write_lock(tmp_path / "manifest.lock", {"1706.03762": store(root, "1706.03762")})
    report = status(
        manifest_of(tmp_path, "1706.03762"), check_updates=True, clock=FakeClock(), policy=POLICY
    )
    assert states(report) == {"1706.03762": "present"}
    assert report.update_error is not None and "503" in report.update_error
    assert report.to_json()["updates"]["checked"] is False


def test_no_arxiv_entry_means_no_request(tmp_path: Path) -> None:
    manifest = loads(
        '[[paper]]\nurl = "https://example.org/a.pdf"\nname = "a"\n', tmp_path / "manifest.toml"
    )
    with respx.mock(assert_all_called=False) as mock:
        report = status(manifest, check_updates=True, clock=FakeClock(), policy=POLICY)
        assert mock.calls.call_count == 0
    assert report.requests == 0 and report.update_error is None
