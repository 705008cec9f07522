"""Paths: every name fetcher writes is one safe component inside the library.

Titles become file names, the lock names files, the server sends headers: none of them
may steer a write out of the library, follow a link out of it, or make two entries
share a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fetcher
from fetcher.errors import FetcherError, StorageError
from fetcher.http import Policy
from fetcher.library import (
    MAX_STEM,
    Library,
    LockRecord,
    Names,
    disambiguate,
    is_plain_name,
    read_lock,
    render_stem,
    safe_component,
    write_lock,
)
from fetcher.manifest import loads
from tests.conftest import point_at, run_fetcher
from tests.fakeserver import FakeServer, make_pdf

FORBIDDEN = set('/\\:*?"<>|') | {"\x00", "\n", "\r", "\t"}
RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}
TINY = Policy(attempts=2, backoff_initial=0.01, backoff_max=0.02, connect_timeout=2, read_timeout=5)


def assert_safe_stem(stem: str) -> None:
    assert is_plain_name(stem), stem
    assert not FORBIDDEN & set(stem), stem
    assert not stem.startswith(("-", ".", " ")) and not stem.endswith((".", " ")), stem
    assert len(stem.encode("utf-8")) <= MAX_STEM, stem
    assert stem.split(".")[0].lower() not in RESERVED, stem
    assert unicodedata.is_normalized("NFC", stem)


# --- names from titles and templates ------------------------------------------------------


@pytest.mark.parametrize(
    "title",
    [
        'Attention/Is: All "You" Need',
        "../../etc/passwd",
        "C:\\Windows\\System32\\evil",
        "'quoted' and \"double\" and `back`",
        "ΑΒΓ δέλτα — 注意力就是你所需要的 — Ünïcödé",
        "Cafe\u0301 (decomposed)",  # NFD input, NFC output
        "x" * 300,
        "日本語" * 100,  # 900 bytes of UTF-8
        "CON",
        "nul.txt",
        "LPT1",
        ".hidden",
        "...",
        "   ",
        "",
        "\u202etxt.exe",  # right-to-left override
        "a\x00b\nc\td",
        "emoji 🚀🔥 title",
        "-leading-dash",
    ],
)
def test_a_title_becomes_one_safe_component(title: str) -> None:
    stem = render_stem("{title}", {"title": title})
    assert_safe_stem(stem)
    assert safe_component(stem) == stem  # already safe: stable across runs


def test_a_long_title_is_cut_on_a_character_boundary() -> None:
    stem = render_stem("{title}-{key}", {"title": "注意" * 200, "key": "1706.03762"})
    assert_safe_stem(stem)
    stem.encode("utf-8").decode("utf-8")  # no half character at the cut


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            "{key}",
            "{title}",
            "{title}-{year}",
            "{first_author}{year}{key}",
            "{id}",
            "paper {title} v{version}",
            "{year}",
        ]
    ),
    st.dictionaries(
        st.sampled_from(["key", "id", "version", "title", "first_author", "year"]),
        st.text(max_size=400),
    ),
)
def test_any_fields_render_a_safe_stem(template: str, given_fields: dict[str, str]) -> None:
    fields = {f: "" for f in ("key", "id", "version", "title", "first_author", "year")}
    fields.update(given_fields)
    assert_safe_stem(render_stem(template, fields))


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=400),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}", fullmatch=True),
    st.integers(1, 50),
)
def test_a_disambiguated_stem_is_safe_and_names_its_key(stem: str, key: str, n: int) -> None:
    out = disambiguate(safe_component(stem), key, n)
    assert_safe_stem(out)
    assert safe_component(key).lstrip("_") in out
    if n > 1:
        assert out.endswith(f"-{n}")


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x.pdf",
        "../../etc/passwd",
        "/etc/passwd",
        "a/b.pdf",
        "a\\b.pdf",
        ".fetcher",
        ".hidden.pdf",
        "x\x00.pdf",
        "x\n.pdf",
    ],
)
def test_path_of_refuses_anything_but_a_plain_name(name: str, tmp_path: Path) -> None:
    with pytest.raises(FetcherError, match="unsafe library file name"):
        Library(tmp_path).path_of(name)


def test_path_of_stays_inside(tmp_path: Path) -> None:
    path = Library(tmp_path).path_of("gpt1.pdf")
    assert path.parent == tmp_path


# --- collisions between entries -------------------------------------------------------------


def test_names_keep_a_stem_for_its_first_holder(tmp_path: Path) -> None:
    names = Names(Library(tmp_path))
    assert names.claim("a", "a", "Attention.pdf") == "Attention.pdf"
    assert names.claim("a", "a", "Attention.pdf") == "Attention.pdf"  # same key: same name
    assert names.claim("b", "b", "attention.pdf") == "attention-b.pdf"  # case-insensitive
    assert names.claim("c", "c", "Attention.html") == "Attention-c.html"  # would share .json
    nfd = unicodedata.normalize("NFD", "Café.pdf")
    assert names.claim("d", "d", "Café.pdf") == "Café.pdf"
    assert names.claim("e", "e", nfd) == "Café-e.pdf"  # and the new name is NFC
    # a third entry with the disambiguated name already taken gets a counter
    assert names.claim("b", "b", "attention-b.pdf") == "attention-b.pdf"
    assert names.claim("x", "b", "attention.pdf") == "attention-b-2.pdf"


def test_names_respect_a_sidecar_on_disk(tmp_path: Path) -> None:
    (tmp_path / "Attention.json").write_text(json.dumps({"key": "1706.03762"}))
    names = Names(Library(tmp_path))
    assert names.claim("gpt1", "gpt1", "Attention.pdf") == "Attention-gpt1.pdf"
    assert Names(Library(tmp_path)).claim("1706.03762", "1706.03762", "Attention.pdf") == (
        "Attention.pdf"
    )


# --- the lock and the library's own state ----------------------------------------------------


@pytest.mark.parametrize("file", ["../evil.pdf", "/etc/passwd", "sub/x.pdf", ".fetcher", ""])
def test_a_lock_that_points_outside_is_refused(file: str, tmp_path: Path) -> None:
    lock = tmp_path / "manifest.lock"
    lock.write_text(
        json.dumps(
            {
                "format": 1,
                "entries": {
                    "x": {
                        "kind": "url",
                        "file": file,
                        "url": "https://a.example/x.pdf",
                        "sha256": "0" * 64,
                        "size": 1,
                    }
                },
            }
        )
    )
    with pytest.raises(FetcherError) as info:
        read_lock(lock)
    message = str(info.value)
    assert str(lock) in message and "not a plain file name inside the library" in message
    assert "delete it and run `fetcher sync`" in message


def test_a_symlinked_state_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    library = tmp_path / "downloads"
    library.mkdir()
    (library / ".fetcher").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match=r"\.fetcher is a symbolic link"):
        Library(library).ensure()
    assert list(outside.iterdir()) == []


def test_links_inside_the_state_folder_are_removed_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    library = Library(tmp_path / "downloads")
    library.ensure()
    for name in ("arxiv.gate", "sync.lock", "stat-cache.json"):
        (library.state / name).symlink_to(victim)
    (library.partial_dir / "x.pdf.part").symlink_to(victim)
    library.ensure()
    assert not any(p.is_symlink() for p in library.state.rglob("*"))
    assert victim.read_text() == "precious"


def test_a_symlinked_sidecar_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"key": "x", "sha256": "0" * 64}))
    library = Library(tmp_path / "lib")
    library.root.mkdir()
    (library.root / "x.json").symlink_to(secret)
    assert library.read_sidecar("x.pdf") is None


# --- whole syncs -----------------------------------------------------------------------------


def _manifest(tmp_path: Path, srv: FakeServer, text: str, extra: str = "") -> fetcher.Manifest:
    path = tmp_path / "manifest.toml"
    path.write_text(point_at(text, srv, extra=extra))
    return fetcher.load_manifest(path)


def _sync(manifest: fetcher.Manifest) -> fetcher.Report:
    return fetcher.sync(manifest, policy=TINY)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_equal_titles_get_distinct_files_deterministically(
    tmp_path: Path, fake: FakeServer
) -> None:
    bodies = {n: make_pdf(n, 2000) for n in ("one", "two", "three")}
    for n, body in bodies.items():
        fake.add_file(f"https://a.example/{n}.pdf", body)
    fake.add_arxiv("1706.03762", title="Attention")
    fake.add_arxiv("1810.04805", title="attention")
    text = (
        "".join(
            f'[[paper]]\nurl = "https://a.example/{n}.pdf"\nname = "{n}"\ntitle = "Attention"\n'
            for n in bodies
        )
        + '[[paper]]\narxiv = "1706.03762"\n[[paper]]\narxiv = "1810.04805"\n'
    )
    manifest = _manifest(tmp_path, fake, text, extra='filename = "{title}"\n')
    report = _sync(manifest)
    assert report.ok, [e.error for e in report.entries]
    files = {e.key: Path(e.path or "").name for e in report.entries}
    assert files == {
        "one": "Attention.pdf",
        "two": "Attention-two.pdf",
        "three": "Attention-three.pdf",
        "1706.03762": "Attention-1706.03762.pdf",
        "1810.04805": "attention-1810.04805.pdf",
    }
    library = manifest.library
    for n, body in bodies.items():
        assert (library / files[n]).read_bytes() == body
        assert json.loads((library / files[n]).with_suffix(".json").read_text())["key"] == n
    for key in ("1706.03762", "1810.04805"):
        sidecar = json.loads((library / files[key]).with_suffix(".json").read_text())
        assert sidecar["key"] == key
    # a second sync keeps every name and fetches nothing
    fake.reset_log()
    again = _sync(fetcher.load_manifest(manifest.path))
    assert [e.status for e in again.entries] == ["skipped"] * 5
    assert {e.key: Path(e.path or "").name for e in again.entries} == files
    assert fake.requests == []
    # even with the lock lost, the sidecars give every url entry its own file back
    (tmp_path / "manifest.lock").unlink()
    third = _sync(fetcher.load_manifest(manifest.path))
    assert {e.key: e.status for e in third.entries if e.kind == "url"} == {
        "one": "skipped",
        "two": "skipped",
        "three": "skipped",
    }
    assert {e.key: Path(e.path or "").name for e in third.entries} == files


def test_a_year_template_does_not_overwrite(tmp_path: Path, fake: FakeServer) -> None:
    for paper in ("1706.03762", "1706.05098", "1810.04805"):
        fake.add_arxiv(paper)
    text = "".join(
        f'[[paper]]\narxiv = "{p}"\n' for p in ("1706.03762", "1706.05098", "1810.04805")
    )
    manifest = _manifest(tmp_path, fake, text, extra='filename = "{year}"\n')
    report = _sync(manifest)
    assert report.ok
    names = [Path(e.path or "").name for e in report.entries]
    assert names == ["2017.pdf", "2017-1706.05098.pdf", "2018.pdf"]
    assert len({_sha((manifest.library / n).read_bytes()) for n in names}) == 3


def test_an_old_style_id_and_a_name_with_the_same_stem(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_arxiv("hep-th/9901001")
    fake.add_file("https://a.example/x.pdf", make_pdf("x", 2000))
    text = (
        '[[paper]]\narxiv = "hep-th/9901001"\n'
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "hep-th_9901001"\n'
    )
    report = _sync(_manifest(tmp_path, fake, text))
    assert report.ok
    assert sorted(Path(e.path or "").name for e in report.entries) == [
        "hep-th_9901001-hep-th_9901001.pdf",
        "hep-th_9901001.pdf",
    ]


def test_a_symlink_at_a_file_name_is_replaced_not_followed(
    tmp_path: Path, fake: FakeServer
) -> None:
    fake.add_arxiv("1706.03762")
    victim = tmp_path / "victim.pdf"
    victim.write_bytes(b"precious")
    victim_json = tmp_path / "victim.json"
    victim_json.write_text('{"precious": true}')
    manifest = _manifest(tmp_path, fake, '[[paper]]\narxiv = "1706.03762"\n')
    manifest.library.mkdir()
    (manifest.library / "1706.03762.pdf").symlink_to(victim)
    (manifest.library / "1706.03762.json").symlink_to(victim_json)
    report = _sync(manifest)
    assert report.ok
    stored = manifest.library / "1706.03762.pdf"
    assert not stored.is_symlink() and stored.read_bytes().startswith(b"%PDF-")
    assert not (manifest.library / "1706.03762.json").is_symlink()
    assert victim.read_bytes() == b"precious"
    assert victim_json.read_text() == '{"precious": true}'


def test_every_file_written_resolves_inside_the_library(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_arxiv("1706.03762", title="../../../etc/passwd")
    fake.add_file("https://a.example/x.pdf", make_pdf("x", 2000))
    text = (
        '[[paper]]\narxiv = "1706.03762"\n'
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "x"\ntitle = "/etc/shadow"\n'
    )
    manifest = _manifest(tmp_path, fake, text, extra='filename = "{title}"\n')
    before = set(tmp_path.rglob("*"))
    report = _sync(manifest)
    assert report.ok
    library = manifest.library.resolve()
    new = set(tmp_path.rglob("*")) - before
    for path in new:
        if path.name == "manifest.lock":
            assert path.parent == tmp_path
            continue
        assert library in path.resolve().parents or path.resolve() == library, path


def test_a_symlinked_partial_folder_stops_the_sync(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_arxiv("1706.03762")
    outside = tmp_path / "outside"
    outside.mkdir()
    path = tmp_path / "manifest.toml"
    path.write_text(point_at('[[paper]]\narxiv = "1706.03762"\n', fake))
    (tmp_path / "downloads" / ".fetcher").mkdir(parents=True)
    (tmp_path / "downloads" / ".fetcher" / "partial").symlink_to(outside)
    result = run_fetcher("sync", "-m", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "partial is a symbolic link" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(outside.iterdir()) == []
    assert fake.requests == []


def test_a_lock_pointing_outside_stops_the_sync(tmp_path: Path, fake: FakeServer) -> None:
    fake.add_arxiv("1706.03762")
    victim = tmp_path / "victim.pdf"
    victim.write_bytes(b"precious")
    path = tmp_path / "manifest.toml"
    path.write_text(point_at('[[paper]]\narxiv = "1706.03762"\n', fake))
    (tmp_path / "manifest.lock").write_text(
        json.dumps(
            {
                "format": 1,
                "entries": {
                    "1706.03762": {
                        "kind": "arxiv",
                        "file": "../victim.pdf",
                        "url": "x",
                        "sha256": "0" * 64,
                        "size": 8,
                        "version": 1,
                    }
                },
            }
        )
    )
    for argv in (["sync"], ["verify"]):
        result = run_fetcher(*argv, "-m", str(path), cwd=tmp_path)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "'../victim.pdf' is not a plain file name" in lines[0]
    assert victim.read_bytes() == b"precious"
    assert fake.requests == []


def test_content_disposition_is_never_trusted(tmp_path: Path) -> None:
    body = make_pdf("cd", 3000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=body,
            headers={
                "Content-Type": "application/pdf",
                "Content-Disposition": 'attachment; filename="../../evil.pdf"; '
                "filename*=UTF-8''..%2F..%2Fevil.pdf",
            },
        )

    path = tmp_path / "proj" / "manifest.toml"
    path.parent.mkdir()
    path.write_text(
        "[settings]\nhost_interval = 0\n"
        '[[paper]]\nurl = "https://a.example/download?id=7"\nname = "paper7"\n'
    )
    report = fetcher.sync(
        fetcher.load_manifest(path), policy=TINY, transport=httpx.MockTransport(handler)
    )
    assert report.ok
    library = path.parent / "downloads"
    assert (library / "paper7.pdf").read_bytes() == body
    assert {p.name for p in library.iterdir()} <= {
        ".fetcher",
        "paper7.json",
        "paper7.pdf",
        "index.md",
        "index.html",
    }
    assert not list(tmp_path.rglob("evil*"))


def test_lock_records_write_back_only_plain_names(tmp_path: Path) -> None:
    lock = tmp_path / "manifest.lock"
    write_lock(lock, {"x": LockRecord("url", "x.pdf", "https://a.example/x", "0" * 64, 1)})
    assert read_lock(lock)["x"].file == "x.pdf"


def test_a_loaded_manifest_never_yields_an_unsafe_default_name(tmp_path: Path) -> None:
    manifest = loads(
        '[settings]\nfilename = "{title}"\n'
        '[[paper]]\nurl = "https://a.example/1"\nname = "a"\ntitle = "../../x"\n'
        '[[paper]]\nurl = "https://a.example/2"\nname = "b"\ntitle = "CON"\n'
        '[[paper]]\narxiv = "hep-th/9901001"\n',
        tmp_path / "manifest.toml",
    )
    from fetcher.sync import default_file

    for entry in manifest.entries:
        name = default_file(entry, manifest.settings.filename)
        assert is_plain_name(name) and os.sep not in name
