"""The stat cache: a hash is reused only for a file whose stat did not move (size, mtime,
inode, ctime), is stored only if the file did not change while it was hashed, and two
lanes remembering at once lose nothing (review finding F17)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

import fetcher.library as library_mod
from fetcher.library import Library, LockRecord


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def lib(tmp_path: Path) -> Library:
    library = Library(tmp_path / "downloads")
    library.ensure()
    return library


def test_a_rewrite_that_restores_size_and_mtime_is_hashed_again(lib: Library) -> None:
    path = lib.root / "a.pdf"
    path.write_bytes(b"%PDF-one")
    assert lib.current_hash("a.pdf") == (sha(b"%PDF-one"), 8)
    lib.save_cache()
    st = path.stat()
    path.write_bytes(b"%PDF-two")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    assert Library(lib.root).current_hash("a.pdf") == (sha(b"%PDF-two"), 8)


def test_a_file_replaced_by_another_with_the_same_size_and_mtime_is_hashed_again(
    lib: Library,
) -> None:
    path = lib.root / "a.pdf"
    path.write_bytes(b"%PDF-one")
    assert lib.current_hash("a.pdf") == (sha(b"%PDF-one"), 8)
    st = path.stat()
    other = lib.root / "b.tmp"
    other.write_bytes(b"%PDF-two")
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)  # another inode
    assert lib.current_hash("a.pdf") == (sha(b"%PDF-two"), 8)


def test_a_file_that_changes_while_it_is_hashed_is_not_cached(
    lib: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lib.root / "a.pdf"
    path.write_bytes(b"%PDF-old")
    real = library_mod.hash_file

    def hash_then_writer_appends(p: Path, progress: object = None) -> tuple[str, int]:
        digest = real(p)
        with open(p, "ab") as fh:  # another process writes meanwhile
            fh.write(b" and more")
        return digest

    monkeypatch.setattr(library_mod, "hash_file", hash_then_writer_appends)
    assert lib.current_hash("a.pdf") == (sha(b"%PDF-old"), 8)
    monkeypatch.undo()
    lib.save_cache()
    # the old digest must not stand for the new bytes
    assert Library(lib.root).current_hash("a.pdf") == (sha(b"%PDF-old and more"), 17)


def test_hashes_remembered_by_two_threads_at_once_are_all_kept(lib: Library) -> None:
    # a large cache file makes the first load slow enough for the threads to meet there
    big = {f"old{i}.pdf": [1, 2, 3, 4, "0" * 64] for i in range(60_000)}
    (lib.state / "stat-cache.json").write_text(json.dumps(big))
    names = [f"f{i}.pdf" for i in range(64)]
    for name in names:
        (lib.root / name).write_bytes(name.encode())
    fresh = Library(lib.root)
    start = threading.Barrier(len(names))

    def remember(name: str) -> None:
        start.wait()
        fresh.remember(name, sha(name.encode()))

    threads = [threading.Thread(target=remember, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh.save_cache()
    saved = json.loads((lib.state / "stat-cache.json").read_text())
    assert all(saved[name][-1] == sha(name.encode()) for name in names)
    assert len(saved) == len(big) + len(names)


def test_an_entry_of_the_old_cache_format_is_trusted_once_and_upgraded(lib: Library) -> None:
    path = lib.root / "a.pdf"
    path.write_bytes(b"%PDF-one")
    st = path.stat()
    old = {"a.pdf": [st.st_size, st.st_mtime_ns, "f" * 64]}  # fetcher 0.1: (size, mtime)
    (lib.state / "stat-cache.json").write_text(json.dumps(old))
    cached = Library(lib.root)
    assert cached.current_hash("a.pdf") == ("f" * 64, 8)  # not re-hashed: a large library
    cached.save_cache()
    saved = json.loads((lib.state / "stat-cache.json").read_text())
    assert saved["a.pdf"] == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, "f" * 64]


def test_a_sidecar_found_good_is_not_read_again_until_it_changes(lib: Library) -> None:
    (lib.root / "a.pdf").write_bytes(b"%PDF-one")
    record = LockRecord("url", "a.pdf", "https://x.example/a.pdf", sha(b"%PDF-one"), 8)
    side = {"key": "a", "file": "a.pdf", "sha256": record.sha256, "size": 8}
    sidecar = lib.root / "a.json"
    sidecar.write_text(json.dumps(side))
    assert lib.sidecar_problem("a.pdf", "a", record) is None
    lib.save_cache()
    assert Library(lib.root).sidecar_problem("a.pdf", "a", record) is None
    sidecar.write_text(json.dumps({**side, "sha256": "0" * 64}))
    problem = Library(lib.root).sidecar_problem("a.pdf", "a", record)
    assert problem is not None and "records sha256 000000000000" in problem
    other = LockRecord("url", "a.pdf", record.url, "1" * 64, 8)  # the lock changed
    sidecar.write_text(json.dumps(side))
    assert Library(lib.root).sidecar_problem("a.pdf", "a", other) is not None
