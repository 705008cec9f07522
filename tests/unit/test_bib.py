"""BibTeX from the sidecars: parseable, one entry per paper, stable unique keys, escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bibtexparser
import pytest

from fetcher.bib import bibliography, escape
from fetcher.cli import main
from fetcher.library import LockRecord, atomic_write_json, write_lock
from fetcher.manifest import load

MANIFEST = """\
[[paper]]
arxiv = "1706.03762"

[[paper]]
arxiv = "2302.13971"

[[paper]]
arxiv = "2307.09288"

[[paper]]
arxiv = "hep-th/9901001"

[[paper]]
url = "https://cdn.openai.com/gpt1.pdf"
name = "gpt1"
title = "Improving Language Understanding by Generative Pre-Training"

[[paper]]
url = "https://huggingface.co/blog/moe"
name = "moe-blog"
format = "html"

[[paper]]
arxiv = "2401.01335"
"""


def arxiv_meta(base: str, title: str, authors: list[str], **extra: Any) -> dict[str, Any]:
    data = {
        "id": base,
        "version": 2,
        "title": title,
        "authors": authors,
        "abstract": f"About {title}.",
        "categories": ["cs.CL", "cs.LG"],
        "primary_category": "cs.CL",
        "published": "2023-02-27T17:00:00Z",
        "updated": "2023-03-01T00:00:00Z",
        "doi": None,
        "journal_ref": None,
        "comment": None,
    }
    data.update(extra)
    return data


def build(tmp_path: Path, manifest_text: str = MANIFEST) -> Path:
    """A library as sync leaves it: files, sidecars and the lock (the last entry unsynced)."""
    path = tmp_path / "manifest.toml"
    path.write_text(manifest_text, encoding="utf-8")
    lib = tmp_path / "downloads"
    lib.mkdir()
    metas = {
        "1706.03762": arxiv_meta(
            "1706.03762",
            "Attention Is All You Need",
            ["Ashish Vaswani", "Noam Shazeer", "Łukasz Kaiser", "Illia Polosukhin"],
            published="2017-06-12T17:57:34Z",
            journal_ref="Advances in Neural Information Processing Systems 30 (2017)",
            doi="10.5555/3295222.3295349",
        ),
        "2302.13971": arxiv_meta(
            "2302.13971",
            "LLaMA: Open and Efficient Foundation Language Models",
            ["Hugo Touvron", "Thibaut Lavril"],
        ),
        "2307.09288": arxiv_meta(
            "2307.09288",
            "Llama 2: Open & Fine-Tuned Chat Models at 100% {speed} with $x^2$ #1 ~ok_",
            ["Hugo Touvron", "Louis Martin", "Kevin Stone"],
        ),
        "hep-th/9901001": arxiv_meta(
            "hep-th/9901001",
            'Théorie des cordes \\ et "guillemets"',
            ["Émilie du Châtelet"],
            published="1999-01-04T00:00:00Z",
            primary_category="hep-th",
        ),
    }
    records = {}
    for key, meta in metas.items():
        file = key.replace("/", "_") + ".pdf"
        (lib / file).write_bytes(b"%PDF-1.4 x %%EOF")
        atomic_write_json(lib / (file[:-4] + ".json"), {"key": key, "kind": "arxiv", **meta})
        records[key] = LockRecord(
            "arxiv", file, f"https://export.arxiv.org/pdf/{key}v2", "0" * 64, 16, 2
        )
    (lib / "gpt1.pdf").write_bytes(b"%PDF-1.4 y %%EOF")
    atomic_write_json(
        lib / "gpt1.json",
        {"key": "gpt1", "kind": "url", "url": "https://cdn.openai.com/gpt1.pdf",
         "title": "Improving Language Understanding by Generative Pre-Training",
         "fetched_at": "2024-05-01T10:00:00Z"},
    )  # fmt: skip
    records["gpt1"] = LockRecord("url", "gpt1.pdf", "https://cdn.openai.com/gpt1.pdf", "1" * 64, 16)
    (lib / "moe-blog.html").write_text(
        "<html><head><title>Mixture of Experts Explained</title></head></html>"
    )
    atomic_write_json(
        lib / "moe-blog.json",
        {"key": "moe-blog", "kind": "url", "url": "https://huggingface.co/blog/moe",
         "fetched_at": "2024-05-01T10:00:00Z"},
    )  # fmt: skip
    records["moe-blog"] = LockRecord(
        "url", "moe-blog.html", "https://huggingface.co/blog/moe", "2" * 64, 70
    )
    write_lock(tmp_path / "manifest.lock", records)
    return path


def parse(text: str) -> dict[str, Any]:
    library = bibtexparser.parse_string(text)
    assert not library.failed_blocks
    return {e.key: e for e in library.entries}


def test_one_parseable_entry_per_paper_with_readable_keys(tmp_path: Path) -> None:
    text, entries = bibliography(load(build(tmp_path)))
    parsed = parse(text)
    assert list(parsed) == [
        "vaswani2017attention",
        "touvron2023llama",
        "touvron2023llamab",
        "chatelet1999theorie",
        "gpt1",
        "moe-blog",
        "arxiv-2401.01335",
    ]
    assert [e.complete for e in entries] == [True] * 6 + [False]


def test_arxiv_fields(tmp_path: Path) -> None:
    parsed = parse(bibliography(load(build(tmp_path)))[0])
    vaswani = parsed["vaswani2017attention"]
    assert vaswani.entry_type == "article"
    assert vaswani.fields_dict["author"].value == (
        "Ashish Vaswani and Noam Shazeer and Łukasz Kaiser and Illia Polosukhin"
    )
    assert vaswani.fields_dict["journal"].value.startswith("Advances in Neural")
    assert vaswani.fields_dict["year"].value == "2017"
    assert vaswani.fields_dict["eprint"].value == "1706.03762"
    assert vaswani.fields_dict["archivePrefix"].value == "arXiv"
    assert vaswani.fields_dict["primaryClass"].value == "cs.CL"
    assert vaswani.fields_dict["doi"].value == "10.5555/3295222.3295349"
    assert vaswani.fields_dict["url"].value == "https://arxiv.org/abs/1706.03762v2"
    llama = parsed["touvron2023llama"]
    assert llama.entry_type == "misc"
    assert "journal" not in llama.fields_dict
    old = parsed["chatelet1999theorie"]
    assert old.fields_dict["eprint"].value == "hep-th/9901001"
    assert old.fields_dict["primaryClass"].value == "hep-th"


def test_special_characters_are_escaped_and_unicode_kept(tmp_path: Path) -> None:
    parsed = parse(bibliography(load(build(tmp_path)))[0])
    title = parsed["touvron2023llamab"].fields_dict["title"].value
    assert title == (
        r"Llama 2: Open \& Fine-Tuned Chat Models at 100\% \{speed\} with \$x\textasciicircum{}2\$"
        r" \#1 \textasciitilde{}ok\_"
    )
    old = parsed["chatelet1999theorie"].fields_dict
    assert old["author"].value == "Émilie du Châtelet"
    assert old["title"].value == 'Théorie des cordes \\textbackslash{} et "guillemets"'
    assert escape("a\n  b") == "a b"


def test_direct_links(tmp_path: Path) -> None:
    parsed = parse(bibliography(load(build(tmp_path)))[0])
    gpt1 = parsed["gpt1"].fields_dict
    assert parsed["gpt1"].entry_type == "misc"
    assert gpt1["title"].value == "Improving Language Understanding by Generative Pre-Training"
    assert gpt1["url"].value == "https://cdn.openai.com/gpt1.pdf"
    assert gpt1["urldate"].value == "2024-05-01"
    moe = parsed["moe-blog"].fields_dict
    assert moe["title"].value == "Mixture of Experts Explained"  # from the stored page
    assert moe["note"].value == "Web page"


def test_keys_are_stable_when_papers_are_appended(tmp_path: Path) -> None:
    path = build(tmp_path)
    first, _ = bibliography(load(path))
    assert bibliography(load(path))[0] == first
    with open(path, "a") as fh:
        fh.write('\n[[paper]]\narxiv = "2212.10560"\n')
    again = parse(bibliography(load(path))[0])
    assert list(again)[:7] == list(parse(first))
    assert list(again)[7] == "arxiv-2212.10560"


def test_cli_bib_stdout_out_and_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["bib"]) == 0
    captured = capsys.readouterr()
    assert len(parse(captured.out)) == 7
    assert "1 entries have no metadata yet (2401.01335)" in captured.err
    assert main(["bib", "--out", "refs.bib", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert len(parse((tmp_path / "refs.bib").read_text(encoding="utf-8"))) == 7
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert main(["bib", "-m", "missing.toml"]) == 2
