"""verify: re-hash everything against manifest.lock, ignoring (and then refreshing) the
stat cache; name missing, damaged, unexpected and unsynced files; wait for a running sync.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from fetcher.errors import FetcherError
from fetcher.library import Library, LockRecord, atomic_write_json, write_lock
from fetcher.manifest import Manifest, loads
from fetcher.sync import plan_entry
from fetcher.verify import Problem, verify

IDS = ("1706.03762", "1810.04805", "1910.10683")


def body(key: str, size: int = 50_000) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (b"%PDF-1.4\n" + seed * (size // 32 + 1))[: size - 6] + b"%%EOF\n"


def build(
    tmp_path: Path, keys: tuple[str, ...] = IDS, *, in_manifest: tuple[str, ...] | None = None
) -> Manifest:
    """A synced library by hand: files, sidecars, lock; the manifest lists `in_manifest`."""
    root = tmp_path / "downloads"
    root.mkdir()
    (root / ".fetcher").mkdir()
    records = {}
    for key in keys:
        data = body(key)
        (root / f"{key}.pdf").write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        records[key] = LockRecord(
            "arxiv", f"{key}.pdf", f"https://x/pdf/{key}v1", sha, len(data), 1
        )
        atomic_write_json(
            root / f"{key}.json",
            {
                "key": key,
                "kind": "arxiv",
                "file": f"{key}.pdf",
                "id": key,
                "version": 1,
                "sha256": sha,
                "size": len(data),
            },
        )
    write_lock(tmp_path / "manifest.lock", records)
    listed = keys if in_manifest is None else in_manifest
    text = "".join(f'[[paper]]\narxiv = "{k}"\n' for k in listed)
    return loads(text, tmp_path / "manifest.toml")


def kinds(problems: list[Problem]) -> list[tuple[str, str | None, str]]:
    return sorted((p.kind, p.key, p.file) for p in problems)


def test_an_intact_library_has_no_problem(tmp_path: Path) -> None:
    assert verify(build(tmp_path)) == []


def test_missing_truncated_and_flipped_files_are_each_named(tmp_path: Path) -> None:
    manifest = build(tmp_path)
    root = manifest.library
    (root / "1706.03762.pdf").unlink()
    (root / "1810.04805.pdf").write_bytes(body("1810.04805")[:1000])
    flipped = bytearray(body("1910.10683"))
    flipped[-100] ^= 0x80
    (root / "1910.10683.pdf").write_bytes(bytes(flipped))
    problems = verify(manifest)
    assert kinds(problems) == [
        ("damaged", "1810.04805", "1810.04805.pdf"),
        ("damaged", "1910.10683", "1910.10683.pdf"),
        ("missing", "1706.03762", "1706.03762.pdf"),
    ]
    truncated = next(p for p in problems if p.key == "1810.04805")
    assert "size 1,000" in truncated.detail and "size 50,000" in truncated.detail


def test_a_bit_flip_the_stat_cache_hides_is_found_and_shown_to_the_next_sync(
    tmp_path: Path,
) -> None:
    manifest = build(tmp_path)
    path = manifest.library / "1706.03762.pdf"
    warm = Library(manifest.library)
    good = warm.current_hash("1706.03762.pdf")
    assert good is not None
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    # bit rot changes no stat field: the cache still maps this stat to the good hash
    warm.forget("1706.03762.pdf")
    warm.remember("1706.03762.pdf", good[0])
    warm.save_cache()

    entry = manifest.by_key()["1706.03762"]
    record = LockRecord.from_json(
        json.loads((tmp_path / "manifest.lock").read_text())["entries"]["1706.03762"]
    )
    before = plan_entry(entry, record, Library(manifest.library), "{key}")
    assert before.action == "skip", "the cache hides the flip from sync"

    assert kinds(verify(manifest)) == [("damaged", "1706.03762", "1706.03762.pdf")]

    after = plan_entry(entry, record, Library(manifest.library), "{key}")
    assert (after.action, after.reason) == ("fetch", "damaged")


def test_unexpected_files_unsynced_entries_and_missing_sidecars(tmp_path: Path) -> None:
    manifest = build(tmp_path, IDS[:2], in_manifest=(*IDS[:2], "2005.14165"))
    root = manifest.library
    (root / "notes.txt").write_text("mine")
    (root / "1810.04805.json").unlink()
    (root / ".hidden").write_text("dot files are not the library's")
    assert kinds(verify(manifest)) == [
        ("missing", "1810.04805", "1810.04805.json"),
        ("unexpected", None, "notes.txt"),
        ("unsynced", "2005.14165", ""),
    ]


def test_files_left_by_removed_entries_point_at_prune(tmp_path: Path) -> None:
    manifest = build(tmp_path)
    lock = json.loads((tmp_path / "manifest.lock").read_text())
    del lock["entries"]["1910.10683"]  # what sync does when the entry leaves the manifest
    (tmp_path / "manifest.lock").write_text(json.dumps(lock))
    manifest = loads(
        "".join(f'[[paper]]\narxiv = "{k}"\n' for k in IDS[:2]), tmp_path / "manifest.toml"
    )
    problems = verify(manifest)
    assert kinds(problems) == [
        ("unexpected", None, "1910.10683.json"),
        ("unexpected", None, "1910.10683.pdf"),
    ]
    assert all("left from 1910.10683" in p.detail and "--prune" in p.detail for p in problems)


def test_a_link_in_place_of_a_file_is_not_followed(tmp_path: Path) -> None:
    manifest = build(tmp_path)
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(body("1706.03762"))  # the right bytes, but not in the library
    (manifest.library / "1706.03762.pdf").unlink()
    (manifest.library / "1706.03762.pdf").symlink_to(outside)
    [problem] = verify(manifest)
    assert (problem.kind, problem.key) == ("damaged", "1706.03762")
    assert "not a plain file" in problem.detail


def test_an_unsafe_name_in_the_lock_is_refused_not_opened(tmp_path: Path) -> None:
    manifest = build(tmp_path, IDS[:1])
    lock = json.loads((tmp_path / "manifest.lock").read_text())
    lock["entries"]["1706.03762"]["file"] = "../manifest.toml"
    (tmp_path / "manifest.lock").write_text(json.dumps(lock))
    with pytest.raises(FetcherError, match="manifest.toml"):
        verify(manifest)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_progress_counts_every_byte_once(tmp_path: Path, workers: int) -> None:
    manifest = build(tmp_path)
    calls: list[tuple[int, int]] = []
    assert (
        verify(manifest, progress=lambda done, total: calls.append((done, total)), workers=workers)
        == []
    )
    total = sum(len(body(k)) for k in IDS)
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_library_never_synced_is_not_created(tmp_path: Path) -> None:
    manifest = loads('[[paper]]\narxiv = "1706.03762"\n', tmp_path / "manifest.toml")
    assert kinds(verify(manifest)) == [("unsynced", "1706.03762", "")]
    assert not (tmp_path / "downloads").exists()


def test_verify_waits_for_a_running_sync(tmp_path: Path) -> None:
    from fetcher.library import hold_library

    manifest = build(tmp_path)
    held = hold_library(Library(manifest.library))
    held.__enter__()
    waiting = threading.Event()
    result: list[list[Problem]] = []
    worker = threading.Thread(
        target=lambda: result.append(verify(manifest, on_wait=waiting.set)), daemon=True
    )
    worker.start()
    assert waiting.wait(5), "verify saw the sync's lock"
    assert result == []
    held.__exit__(None, None, None)
    worker.join(5)
    assert result == [[]]


def test_after_a_lost_lock_the_files_are_named_for_their_entries(tmp_path: Path) -> None:
    manifest = build(tmp_path, IDS[:1])
    (tmp_path / "manifest.lock").unlink()
    problems = verify(manifest)
    assert kinds(problems) == [
        ("unexpected", None, "1706.03762.json"),
        ("unexpected", None, "1706.03762.pdf"),
        ("unsynced", "1706.03762", ""),
    ]
    assert all(
        "stored for 1706.03762" in p.detail and "`fetcher sync` adds it" in p.detail
        for p in problems
        if p.kind == "unexpected"
    )
