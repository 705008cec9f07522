"""Atomic writes keep what the user set up: file permissions, and a symlinked manifest."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetcher.cli import main
from fetcher.library import atomic_write_bytes, atomic_write_json
from fetcher.manifest import load

MANIFEST = '[[paper]]\narxiv = "1706.03762"\n'
# the temporary names the library's clean-up removes when a write was cut short
TEMP_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=oct)
def test_a_new_file_gets_0666_less_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "new.txt", b"x")
        atomic_write_json(tmp_path / "new.json", {"a": 1})
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.txt") == 0o666 & ~umask
    assert mode(tmp_path / "new.json") == 0o666 & ~umask


@pytest.mark.parametrize("existing", [0o644, 0o640, 0o600, 0o664, 0o444], ids=oct)
def test_a_replaced_file_keeps_its_mode(tmp_path: Path, existing: int, umask_022: None) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(b"old")
    os.chmod(path, existing)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode(path) == existing


def test_the_temporary_name_is_one_clean_partials_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write cut short leaves `.NAME.XXXXXXXX.tmp`, the shape `clean_partials` removes."""
    seen: list[str] = []

    def fail(src: str, dst: object) -> None:
        seen.append(os.path.basename(src))
        assert os.path.exists(src)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "manifest.lock", b"{}")
    (name,) = seen
    match = TEMP_NAME.match(name)
    assert match is not None and match.group(1) == "manifest.lock"
    assert list(tmp_path.iterdir()) == []  # and the failed write removed it


def test_inside_the_library_a_link_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    library = tmp_path / "downloads"
    library.mkdir()
    (library / "x.json").symlink_to(outside)
    atomic_write_json(library / "x.json", {"key": "x"})
    assert not (library / "x.json").is_symlink()
    assert outside.read_text() == "{}"


# --- `fetcher add` and `bib --out` on the user's files ----------------------------------------


def test_add_keeps_the_manifest_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for wanted in (0o644, 0o664):
        path = tmp_path / "manifest.toml"
        path.write_text(MANIFEST)
        os.chmod(path, wanted)
        assert main(["add", "-q", "1810.04805"]) == 0
        assert "1810.04805" in path.read_text()
        assert mode(path) == wanted


def test_add_creates_a_manifest_readable_like_any_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["add", "-q", "1810.04805"]) == 0
    assert mode(tmp_path / "manifest.toml") == 0o644


@pytest.mark.parametrize("relative", [True, False])
def test_add_writes_a_symlinked_manifest_through_to_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool, umask_022: None
) -> None:
    dotfiles = tmp_path / "dotfiles" / "papers"
    dotfiles.mkdir(parents=True)
    target = dotfiles / "manifest.toml"
    target.write_text(MANIFEST)
    os.chmod(target, 0o640)
    work = tmp_path / "work"
    work.mkdir()
    link = work / "manifest.toml"
    link.symlink_to(os.path.relpath(target, work) if relative else target)
    monkeypatch.chdir(work)

    assert main(["add", "-q", "1810.04805"]) == 0
    assert link.is_symlink()
    assert os.readlink(link) == (os.path.relpath(target, work) if relative else str(target))
    assert [e.key for e in load(target).entries] == ["1706.03762", "1810.04805"]
    assert mode(target) == 0o640
    assert sorted(p.name for p in work.iterdir()) == ["manifest.toml"]
    assert sorted(p.name for p in dotfiles.iterdir()) == ["manifest.toml"]  # no temp left


def test_bib_out_writes_through_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    (tmp_path / "manifest.toml").write_text(MANIFEST)
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "refs.bib").write_text("% old\n")
    os.chmod(paper / "refs.bib", 0o664)
    (tmp_path / "refs.bib").symlink_to(paper / "refs.bib")
    monkeypatch.chdir(tmp_path)
    assert main(["bib", "-q", "--out", "refs.bib"]) == 0
    assert (tmp_path / "refs.bib").is_symlink()
    assert "arxiv-1706.03762" in (paper / "refs.bib").read_text()
    assert mode(paper / "refs.bib") == 0o664
