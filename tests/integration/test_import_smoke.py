"""The round trip with the real CLI: article -> manifest -> offline smoke -> library -> BibTeX."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import bibtexparser

from fetcher.manifest import load
from tests.conftest import SEED_MANIFEST, fetcher_command, run_fetcher
from tests.conftest import SEED_TEXT as SEED
from tests.fakeserver import FakeServer

GPT1_AS_FOUND = (
    "https://cdn.openai.com/research-covers/language-document_non_supervisé/"
    "compréhension_du_langage.pdf"
)
GPT2 = (
    "https://cdn.openai.com/better-language-models/"
    "language_models_are_unsupervised_multitask_learners.pdf"
)


def test_import_the_seed_article_then_smoke_it(tmp_path: Path) -> None:
    result = run_fetcher("import", str(SEED), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        "43 added to manifest.toml (new): 40 arXiv, 2 PDF link(s), 1 web page(s); 1 skipped" in out
    )
    assert (
        "skipped   https://eugeneyan.com/writing/llm-reading-list/ (lines 20, 468): "
        "a page outside the list of papers" in out
    )
    assert (
        "note      trimmed '.' that followed https://eugeneyan.com/writing/llm-reading-list/" in out
    )
    assert "not checked: 3 direct link(s)" in out
    assert f"  comprehension_du_langage  {GPT1_AS_FOUND}" in out

    manifest = load(tmp_path / "manifest.toml")
    repo = load(SEED_MANIFEST)
    arxiv = [e.key for e in manifest.entries if e.kind == "arxiv"]
    assert sorted(arxiv) == sorted(e.key for e in repo.entries if e.kind == "arxiv")
    urls = {e.key: (e.url, e.format) for e in manifest.entries if e.kind == "url"}
    assert urls == {
        "comprehension_du_langage": (GPT1_AS_FOUND, "pdf"),
        "language_models_are_unsupervised_multitask_learners": (GPT2, "pdf"),
        "huggingface-moe": ("https://huggingface.co/blog/moe", "html"),
    }

    again = run_fetcher("import", str(SEED), cwd=tmp_path)
    assert again.returncode == 0
    assert "nothing new for manifest.toml; 44 skipped" in again.stdout

    smoke = run_fetcher("smoke", cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    for stage in ("ids", "metadata", "files", "verify", "lock", "resync", "catalog"):
        assert f"\nok     {stage:<9} " in smoke.stdout
    assert "smoke passed: 7 stages" in smoke.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.toml"]  # nothing else


def test_import_markdown_from_stdin_and_html(tmp_path: Path) -> None:
    markdown = textwrap.dedent(
        """\
        # My list ([source](https://blog.example.org/list))
        - [Attention Is All You Need](https://arxiv.org/pdf/1706.03762v7.pdf)
        - arXiv:hep-th/9901001, and [a post](https://huggingface.co/blog/moe).
        """
    )
    proc = subprocess.run(
        [*fetcher_command(), "import", "-", "--json"],
        input=markdown,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [a["key"] for a in data["added"]] == ["1706.03762", "hep-th/9901001", "huggingface-moe"]
    assert data["added"][0]["arxiv"] == "1706.03762v7"
    assert [s["value"] for s in data["skipped"]] == ["https://blog.example.org/list"]
    assert "# Attention Is All You Need\n[[paper]]" in (tmp_path / "manifest.toml").read_text()

    page = tmp_path / "list.html"
    page.write_text(
        '<html><body><a href="https://arxiv.org/abs/1810.04805">BERT</a>'
        '<a href="https://cdn.openai.com/gpt2.pdf">Language Models are Unsupervised</a>'
        "</body></html>"
    )
    result = run_fetcher("import", str(page), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "would add 1810.04805" in result.stdout
    assert "(dry run: nothing written)" in result.stdout
    assert "1810.04805" not in (tmp_path / "manifest.toml").read_text()
    missing = run_fetcher("import", "nope.md", cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read nope.md" in missing.stderr


def test_add_keeps_the_commented_repo_manifest_byte_for_byte(tmp_path: Path) -> None:
    original = SEED_MANIFEST.read_bytes()
    path = tmp_path / "manifest.toml"
    path.write_bytes(original)
    result = run_fetcher(
        "add", "-m", str(path), "2106.09685", "2310.06825", "https://example.org/papers/Mamba.pdf"
    )
    assert result.returncode == 0, result.stderr
    assert "skipped   2106.09685: already in manifest.toml (line" in result.stdout
    data = path.read_bytes()
    assert data[: len(original)] == original
    assert data[len(original) :].decode() == (
        '\n[[paper]]\narxiv = "2310.06825"\n'
        '\n[[paper]]\nurl = "https://example.org/papers/Mamba.pdf"\nname = "mamba"\n'
    )


def test_smoke_fails_on_what_a_real_sync_would_refuse(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text('[settings]\nmax_size = 1000\n\n[[paper]]\narxiv = "1706.03762"\n')
    result = run_fetcher("smoke", cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED files" in result.stderr
    assert "over max_size 1,000" in result.stderr
    assert "smoke FAILED at files" in result.stderr
    as_json = run_fetcher("smoke", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    stages = {s["name"]: s["status"] for s in json.loads(as_json.stdout)["stages"]}
    assert stages["files"] == "failed" and stages["resync"] == "skipped"


def test_smoke_never_touches_the_real_library(tmp_path: Path) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text('[[paper]]\narxiv = "1706.03762"\nsha256 = "' + "a" * 64 + '"\n')
    refused = run_fetcher("smoke", "--library", "downloads", cwd=tmp_path)
    assert refused.returncode == 2
    assert "is the manifest's own library" in refused.stderr
    kept = run_fetcher("smoke", "--library", "scratch", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert "1 sha256 pin(s) not checked" in kept.stdout
    assert (tmp_path / "scratch" / "1706.03762.pdf").exists()
    assert (tmp_path / "scratch" / "index.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.toml", "scratch"]
    rerun = run_fetcher("smoke", "--library", "scratch", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.pdf").write_bytes(b"mine")
    foreign = run_fetcher("smoke", "--library", "other", cwd=tmp_path)
    assert foreign.returncode == 2
    assert "not made by fetcher smoke" in foreign.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[paper]]\narxiv = "1706.3762"\n')
    assert run_fetcher("smoke", "-m", str(bad)).returncode == 2


def test_the_pytest_plugin_fixture(tmp_path: Path) -> None:
    (tmp_path / "manifest.toml").write_bytes(SEED_MANIFEST.read_bytes())
    (tmp_path / "broken.toml").write_text(
        '[settings]\nmax_size = 100\n[[paper]]\narxiv = "1706.03762"\n'
    )
    (tmp_path / "test_manifest.py").write_text(
        textwrap.dedent(
            """\
            def test_repo_manifest(fetcher_smoke):
                report = fetcher_smoke("manifest.toml")
                assert report.requests == 44

            def test_broken_manifest(fetcher_smoke):
                fetcher_smoke("broken.toml")
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_manifest.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "fetcher smoke FAILED for" in proc.stdout
    assert "FAILED files" in proc.stdout


def test_bib_of_a_synced_seed_library_has_one_entry_per_paper(
    seed_library: Path, fake: FakeServer
) -> None:
    synced = run_fetcher("sync", "-m", str(seed_library))
    assert synced.returncode == 0, synced.stderr
    result = run_fetcher("bib", "-m", str(seed_library))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    library = bibtexparser.parse_string(result.stdout)
    assert not library.failed_blocks
    keys = [e.key for e in library.entries]
    assert len(keys) == len(load(seed_library).entries) == 43
    assert len({k.lower() for k in keys}) == 43
    eprints = {e.fields_dict["eprint"].value for e in library.entries if "eprint" in e.fields_dict}
    assert len(eprints) == 40
    index = seed_library.parent / "downloads" / "index.md"
    assert index.read_text(encoding="utf-8").count("\n## ") == 43
