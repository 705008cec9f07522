"""Adding entries: the user's bytes untouched, new tables valid, duplicates skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fetcher import edit, finder
from fetcher.cli import main
from fetcher.errors import ManifestError, UsageError
from fetcher.manifest import load

COMMENTED = """\
# my reading list — keep this comment
[settings]
library = "papers"   # relative to this file
contact = "me@example.org"

# Attention Is All You Need
[[paper]]
arxiv = "1706.03762"
tags = ["transformers"]   # a trailing comment

[[paper]]
url = "https://cdn.openai.com/gpt1.pdf"
name = "gpt1"

# the end: a comment after the last table
"""


def add(path: Path, *items: str, **kw: object) -> edit.Plan:
    plan = edit.plan_add(path, list(items), **kw)  # type: ignore[arg-type]
    edit.apply(plan)
    return plan


def test_appending_keeps_every_existing_byte(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text(COMMENTED, encoding="utf-8")
    plan = add(path, "https://arxiv.org/abs/1810.04805", "https://huggingface.co/blog/moe")
    data = path.read_bytes()
    assert data.startswith(COMMENTED.encode())
    assert data[len(COMMENTED.encode()) :].decode() == (
        '\n[[paper]]\narxiv = "1810.04805"\n'
        '\n[[paper]]\nurl = "https://huggingface.co/blog/moe"\nname = "huggingface-moe"\n'
        'format = "html"\n'
    )
    assert [e.key for e in plan.added] == ["1810.04805", "huggingface-moe"]
    manifest = load(path)
    keys = [e.key for e in manifest.entries]
    assert keys == ["1706.03762", "gpt1", "1810.04805", "huggingface-moe"]
    assert manifest.entries[3].format == "html"


def test_crlf_bom_and_a_missing_final_newline_are_respected(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    original = ("\ufeff" + COMMENTED.rstrip("\n")).replace("\n", "\r\n").encode("utf-8")
    path.write_bytes(original)
    add(path, "1810.04805")
    data = path.read_bytes()
    assert data.startswith(original + b"\r\n")
    assert data[len(original) :] == b'\r\n\r\n[[paper]]\r\narxiv = "1810.04805"\r\n'
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert [e.key for e in load(path).entries][-1] == "1810.04805"


def test_a_missing_manifest_is_created(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    add(path, "arXiv:hep-th/9901001v2")
    text = path.read_text()
    assert text.startswith(edit.HEADER)
    assert 'arxiv = "hep-th/9901001v2"' in text
    assert load(path).entries[0].arxiv is not None


def test_duplicates_are_skipped_with_the_line_they_clash_with(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text(COMMENTED)
    before = path.read_bytes()
    plan = add(path, "1706.03762v7", "https://cdn.openai.com/gpt1.pdf", "1706.03762")
    assert plan.added == []
    assert [s.reason for s in plan.skipped] == [
        "already in manifest.toml (line 7)",
        "already in manifest.toml (line 11) as 'gpt1'",
        "already in manifest.toml (line 7)",
    ]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "variant",
    [
        "https://CDN.OpenAI.com/gpt1.pdf",  # the host's case
        "HTTPS://cdn.openai.com/gpt1.pdf",  # the scheme's case
        "https://cdn.openai.com/gpt1.pdf#page=2",  # a fragment
    ],
)
def test_a_url_the_manifest_holds_in_another_spelling_is_skipped(
    tmp_path: Path, variant: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Sameness is the manifest's own (`url_identity`): adding it would make the manifest
    invalid ("the same URL twice"), so it is a duplicate, skipped, never an exit 2."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "manifest.toml"
    path.write_text(COMMENTED)
    assert main(["add", variant]) == 0
    out = capsys.readouterr().out
    assert f"skipped   {variant}: already in manifest.toml (line 11) as 'gpt1'" in out
    assert path.read_text() == COMMENTED

    plan = add(path, "1810.04805", variant, "https://x.org/new.pdf", "https://X.ORG/new.pdf#a")
    assert [e.value for e in plan.added] == ["1810.04805", "https://x.org/new.pdf"]
    assert [(s.value, s.reason) for s in plan.skipped] == [
        (variant, "already in manifest.toml (line 11) as 'gpt1'"),
        ("https://X.ORG/new.pdf#a", "given twice (as 'x-new')"),
    ]
    assert len(load(path).entries) == 4


def test_import_skips_a_url_the_manifest_holds_in_another_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("manifest.toml").write_text(COMMENTED)
    Path("list.md").write_text(
        "- [GPT](https://CDN.openai.com/gpt1.pdf#intro)\n"
        "- [New](https://x.org/new.pdf)\n"
        "- [New again](https://X.org/new.pdf#p3)\n"
    )
    assert main(["import", "--json", "list.md"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [a["url"] for a in data["added"]] == ["https://x.org/new.pdf"]
    assert data["added"][0]["lines"] == [2, 3]  # one link, found twice
    assert data["skipped"] == [
        {
            "value": "https://CDN.openai.com/gpt1.pdf#intro",
            "reason": "already in manifest.toml (line 11) as 'gpt1'",
            "lines": [1],
        }
    ]
    assert len(load(Path("manifest.toml")).entries) == 3


def test_names_never_clash(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text('[[paper]]\nurl = "https://a.org/x/moe"\nname = "huggingface-moe"\n')
    plan = add(path, "https://huggingface.co/blog/moe", "https://mirror.huggingface.co/blog/moe")
    assert [e.name for e in plan.added] == ["huggingface-moe-2", "huggingface-moe-3"]


def test_values_are_escaped_the_toml_way(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    title = 'He said "hi" \\ and left\ttoday'
    add(path, "https://x.org/p.pdf", title=title, tags=["a b", "ü"])
    (entry,) = load(path).entries
    assert entry.title == title
    assert entry.tags == ("a b", "ü")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"name": "bad/name"}, "must not contain a path separator"),
        ({"name": ".hidden"}, "must not start with a dot"),
        ({"name": "con"}, "reserved on Windows"),
        ({"sha256": "abc"}, "sha256 must be 64 hex digits"),
    ],
)
def test_bad_values_are_refused_as_the_manifest_would(
    tmp_path: Path, kw: dict[str, str], message: str
) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text(COMMENTED)
    plan = edit.plan_add(path, ["https://x.org/p.pdf"], **kw)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=message):
        edit.apply(plan)
    assert path.read_text() == COMMENTED


def test_command_line_misuse_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    with pytest.raises(UsageError, match="neither an arXiv id nor"):
        edit.plan_add(path, ["1706.3762"])
    with pytest.raises(UsageError, match="--name names one URL entry"):
        edit.plan_add(path, ["https://a.org/a.pdf", "https://b.org/b.pdf"], name="x")
    with pytest.raises(UsageError, match="--format is for URL entries"):
        edit.plan_add(path, ["1706.03762"], format="html")
    with pytest.raises(UsageError, match="exactly one"):
        edit.plan_add(path, ["1706.03762", "1810.04805"], sha256="0" * 64)


def test_an_invalid_manifest_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text('[[paper]]\narxiv = "1706.03762"\nsha265 = "x"\n')
    with pytest.raises(ManifestError, match="sha256"):
        edit.plan_add(path, ["1810.04805"])


def test_an_inline_paper_array_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text('paper = [{arxiv = "1706.03762"}]\n')
    plan = edit.plan_add(path, ["1810.04805"])
    with pytest.raises(ManifestError, match="inline array"):
        edit.apply(plan)


def test_import_plan_names_titles_and_skips(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text(COMMENTED)
    text = (
        "Source: https://blog.example.org/list/\n"
        "- [Attention Is All You Need](https://arxiv.org/abs/1706.03762)\n"
        "- [BERT: Pre-training of Deep Bidirectional Transformers](https://arxiv.org/abs/1810.04805)\n"
        "- [Mixture of Experts Explained](https://huggingface.co/blog/moe)\n"
        "- https://github.com/google-research/bert\n"
        "- https://cdn.openai.com/gpt1.pdf.\n"
    )
    plan = edit.plan_import(path, finder.candidates(finder.scan(text)), tags=["llm"])
    edit.apply(plan)
    assert [(e.key, e.comment, e.title) for e in plan.added] == [
        ("1810.04805", "BERT: Pre-training of Deep Bidirectional Transformers", None),
        ("huggingface-moe", None, "Mixture of Experts Explained"),
    ]
    reasons = {s.value: s.reason for s in plan.skipped}
    assert reasons["1706.03762"].startswith("already in manifest.toml")
    assert reasons["https://cdn.openai.com/gpt1.pdf"].endswith("as 'gpt1'")
    assert "github.com" in reasons["https://github.com/google-research/bert"]
    assert reasons["https://blog.example.org/list/"] == finder.OUTSIDE_LIST
    assert "# BERT: Pre-training of Deep Bidirectional Transformers\n[[paper]]" in path.read_text()
    assert all(e.tags == ("llm",) for e in load(path).entries[2:])


def test_cli_add_json_and_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("manifest.toml").write_text(COMMENTED)
    assert main(["add", "1810.04805", "--dry-run"]) == 0
    assert "would add 1810.04805" in capsys.readouterr().out
    assert Path("manifest.toml").read_text() == COMMENTED
    assert main(["add", "--json", "1810.04805", "https://x.org/a/b/c.pdf", "--name", "c"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [a["key"] for a in data["added"]] == ["1810.04805", "c"]
    assert data["unchecked"] == ["https://x.org/a/b/c.pdf"]
    assert main(["add", "nonsense"]) == 2
    assert "neither an arXiv id nor an http(s) URL" in capsys.readouterr().err
