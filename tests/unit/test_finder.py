"""Finding papers in reading lists: every written form of an arXiv id, links, framing."""

from __future__ import annotations

import pytest

from fetcher.finder import (
    OUTSIDE_LIST,
    candidates,
    classify_url,
    line_shape,
    scan,
    suggest_name,
    trim_url,
)
from fetcher.manifest import check_name
from tests.conftest import SEED_TEXT as SEED


def values(text: str, **kw: bool) -> list[tuple[str, str]]:
    return [(f.kind, f.value) for f in scan(text, **kw)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://arxiv.org/abs/1706.03762 now", "1706.03762"),
        ("pdf: https://arxiv.org/pdf/1706.03762v5.pdf", "1706.03762v5"),
        ("pdf: https://arxiv.org/pdf/1706.03762v5", "1706.03762v5"),
        ("html: https://arxiv.org/html/2401.01335v2", "2401.01335v2"),
        ("export: http://export.arxiv.org/abs/hep-th/9901001", "hep-th/9901001"),
        ("no scheme arxiv.org/abs/2106.09685 here", "2106.09685"),
        ("cite arXiv:1810.04805 please", "1810.04805"),
        ("cite arXiv: 1810.04805v2, please", "1810.04805v2"),
        ("ARXIV:math.GT/0309136v2", "math.GT/0309136v2"),
        ("old style hep-th/9901001 alone", "hep-th/9901001"),
        ("bare new id 2203.02155.", "2203.02155"),
        ("versioned 2005.14165v4)", "2005.14165v4"),
        ("doi 10.48550/arXiv.2305.18290", "2305.18290"),
        ("https://doi.org/10.48550/arXiv.2305.18290", "2305.18290"),
        ("<https://arxiv.org/abs/1607.06450>", "1607.06450"),
    ],
)
def test_every_form_of_an_arxiv_id_is_found(text: str, expected: str) -> None:
    assert values(text) == [("arxiv", expected)]


@pytest.mark.parametrize(
    "text",
    [
        "version 3.14159 of pi",
        "the price rose 1234.5678 %",  # month 34 does not exist
        "page 0601.12345",  # before April 2007 there were no new-style ids
        "phone 2020.12345678",
        "file v1706.03762x",
        "and/1234567 is not an archive",
    ],
)
def test_numbers_that_are_not_arxiv_ids_are_ignored(text: str) -> None:
    assert values(text) == []


def test_an_id_inside_a_link_is_not_found_twice() -> None:
    assert values("https://arxiv.org/abs/1706.03762 and arXiv:1706.03762") == [
        ("arxiv", "1706.03762"),
        ("arxiv", "1706.03762"),
    ]
    merged = candidates(scan("https://arxiv.org/abs/1706.03762 and arXiv:1706.03762"))
    assert [(c.value, c.lines) for c in merged] == [("1706.03762", [1])]


@pytest.mark.parametrize(
    ("raw", "url", "cut"),
    [
        ("https://e.com/writing/reading-list/.", "https://e.com/writing/reading-list/", "."),
        ("https://x.org/a.pdf),", "https://x.org/a.pdf", "),"),
        ("https://w.org/wiki/Foo_(bar)", "https://w.org/wiki/Foo_(bar)", ""),
        ("https://w.org/wiki/Foo_(bar)).", "https://w.org/wiki/Foo_(bar)", ")."),
        ("https://x.org/p.pdf»", "https://x.org/p.pdf", "»"),
        ("https://x.org/p.pdf。", "https://x.org/p.pdf", "。"),
        ("https://x.org/p.pdf**", "https://x.org/p.pdf", "**"),
    ],
)  # fmt: skip
def test_punctuation_stuck_to_a_link_is_trimmed(raw: str, url: str, cut: str) -> None:
    assert trim_url(raw) == (url, cut)


def test_a_trimmed_link_says_what_was_cut() -> None:
    (found,) = scan("References:\n\nhttps://eugeneyan.com/writing/llm-reading-list/.")
    assert found.value == "https://eugeneyan.com/writing/llm-reading-list/"
    assert found.trimmed == "."
    assert found.line == 3


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://cdn.openai.com/x/language_understanding_paper.pdf", "pdf"),
        ("https://openreview.net/pdf?id=abc", "pdf"),
        ("https://huggingface.co/blog/moe", "page"),
        ("https://example.org/post.html", "page"),
        ("https://example.org/figure.png", "other"),
        ("https://github.com/openai/gpt-2", "other"),
        ("https://arxiv.org/list/cs.CL/recent", "other"),
        ("https://arxiv.org/abs/1706.03762", "arxiv"),
    ],
)
def test_links_are_classified(url: str, kind: str) -> None:
    assert classify_url(url)[0] == kind


def test_the_mangled_gpt1_link_is_taken_as_found() -> None:
    url = (
        "https://cdn.openai.com/research-covers/language-document_non_supervisé/"
        "compréhension_du_langage.pdf"
    )
    assert values(f"*original:{url}\n") == [("pdf", url)]


def test_markdown_links_keep_their_text_as_label() -> None:
    text = (
        '- [Attention Is All You Need](https://arxiv.org/abs/1706.03762 "paper")\n'
        "- [GPT-2 paper](<https://cdn.openai.com/gpt2/language_models.pdf>)\n"
        "- [Foo (bar)](https://en.wikipedia.org/wiki/Foo_(bar))\n"
        "[moe]: https://huggingface.co/blog/moe\n"
    )
    found = scan(text)
    assert [(f.kind, f.value, f.label) for f in found] == [
        ("arxiv", "1706.03762", "Attention Is All You Need"),
        ("pdf", "https://cdn.openai.com/gpt2/language_models.pdf", "GPT-2 paper"),
        ("page", "https://en.wikipedia.org/wiki/Foo_(bar)", "Foo (bar)"),
        ("page", "https://huggingface.co/blog/moe", None),
    ]


def test_html_anchors_text_and_base_href() -> None:
    page = """<!DOCTYPE html><html><head><base href="https://example.org/papers/">
<script>var u = "https://arxiv.org/abs/1111.11111";</script></head><body>
<nav><a href="/">Home</a> <a href="#top">top</a> <a href="mailto:a@b.c">mail</a></nav>
<p><a href="https://arxiv.org/abs/1706.03762v7">Attention <b>Is</b> All You Need</a></p>
<p>Also arXiv:1810.04805 in the text, and <a href="local.pdf">a local PDF</a>.</p>
</body></html>"""
    found = scan(page)
    assert [(f.kind, f.value, f.label) for f in found] == [
        ("page", "https://example.org/", "Home"),
        ("arxiv", "1706.03762v7", "Attention Is All You Need"),
        ("arxiv", "1810.04805", None),
        ("pdf", "https://example.org/papers/local.pdf", "a local PDF"),
    ]
    assert found[1].line == 4


def test_html_without_base_reports_relative_pdf_links() -> None:
    found = scan('<html><body><a href="papers/x.pdf">x</a> <a href="about">a</a></body></html>')
    assert [(f.kind, f.value) for f in found] == [("other", "papers/x.pdf")]
    assert "relative" in (found[0].reason or "")


def test_pages_outside_the_list_are_framing() -> None:
    text = (
        "Source: https://blog.example.org/reading-list/\n"
        "1. https://arxiv.org/abs/1706.03762\n"
        "2. https://huggingface.co/blog/moe\n"
        "3. https://cdn.example.org/paper.pdf\n"
        "References: https://blog.example.org/reading-list/ https://news.example.org/story\n"
    )
    by_value = {c.value: c for c in candidates(scan(text))}
    assert by_value["https://blog.example.org/reading-list/"].skip == OUTSIDE_LIST
    assert by_value["https://blog.example.org/reading-list/"].lines == [1, 5]
    assert by_value["https://news.example.org/story"].skip == OUTSIDE_LIST
    assert by_value["https://huggingface.co/blog/moe"].skip is None
    assert by_value["https://cdn.example.org/paper.pdf"].skip is None


def test_without_any_paper_every_page_is_part_of_the_list() -> None:
    text = "Good reads:\nhttps://a.example.org/post-one\nhttps://b.example.org/post-two\n"
    assert [c.skip for c in candidates(scan(text))] == [None, None]


def test_an_unversioned_mention_wins_over_a_versioned_one() -> None:
    merged = candidates(scan("arXiv:1706.03762v5 then https://arxiv.org/abs/1706.03762"))
    assert [c.value for c in merged] == ["1706.03762"]
    merged = candidates(scan("arXiv:1706.03762v5 and again arXiv:1706.03762v5"))
    assert [c.value for c in merged] == ["1706.03762v5"]


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (
            "https://cdn.openai.com/research-covers/language-document_non_supervisé/"
            "compréhension_du_langage.pdf",
            "comprehension_du_langage",
        ),
        (
            "https://cdn.openai.com/better-language-models/"
            "language_models_are_unsupervised_multitask_learners.pdf",
            "language_models_are_unsupervised_multitask_learners",
        ),
        ("https://huggingface.co/blog/moe", "huggingface-moe"),
        ("https://openreview.net/pdf?id=abc", "openreview"),
        ("https://example.org/papers/Some%20Great%20Paper.pdf", "some-great-paper"),
        ("https://proceedings.neurips.cc/paper/2017/file/3f5ee243-Paper.pdf", "3f5ee243-paper"),
        ("https://www.bbc.co.uk/news/index.html", "news"),
        ("https://www.bbc.co.uk/", "bbc"),
        ("https://example.org/1706.03762.pdf", "example-1706.03762"),
        ("https://example.org/" + "a_very_long_file_name" * 6 + ".pdf", "a_very_long_file_namea"),
    ],
)
def test_readable_names_are_valid_manifest_names(url: str, name: str) -> None:
    got = suggest_name(url)
    assert got.startswith(name)
    assert len(got) <= 60
    check_name(got, AssertionError)  # raises if the manifest would refuse it


def test_the_seed_article() -> None:
    found = candidates(scan(SEED.read_text(encoding="utf-8")))
    kept = [c for c in found if c.skip is None]
    assert sum(c.kind == "arxiv" for c in kept) == 40
    assert sorted(c.value for c in kept if c.kind != "arxiv") == [
        "https://cdn.openai.com/better-language-models/"
        "language_models_are_unsupervised_multitask_learners.pdf",
        "https://cdn.openai.com/research-covers/language-document_non_supervisé/"
        "compréhension_du_langage.pdf",
        "https://huggingface.co/blog/moe",
    ]
    (skipped,) = [c for c in found if c.skip]
    assert skipped.value == "https://eugeneyan.com/writing/llm-reading-list/"
    assert skipped.trimmed == [(468, ".")]


def test_a_page_written_like_the_papers_is_an_item_even_at_the_end() -> None:
    text = (
        "Source: https://blog.example.org/reading-list/\n"
        "- [Attention](https://arxiv.org/abs/1706.03762)\n"
        "- [GPT-2](https://cdn.example.org/gpt2.pdf)\n"
        "- [Mixture of Experts Explained](https://huggingface.co/blog/moe)\n"
        "\n"
        "Thanks to https://friends.example.org/ for the list.\n"
    )
    skips = {c.value: c.skip for c in candidates(scan(text))}
    assert skips["https://huggingface.co/blog/moe"] is None
    assert skips["https://blog.example.org/reading-list/"] == OUTSIDE_LIST
    assert skips["https://friends.example.org/"] == OUTSIDE_LIST


def test_a_page_on_the_line_of_the_last_paper_is_inside() -> None:
    text = "Intro https://a.example.org/about\narXiv:1706.03762 and [a post](https://b.org/p).\n"
    skips = {c.value: c.skip for c in candidates(scan(text))}
    assert skips == {
        "https://a.example.org/about": OUTSIDE_LIST,
        "1706.03762": None,
        "https://b.org/p": None,
    }


@pytest.mark.parametrize(
    ("prefix", "shape"),
    [
        ("*original:", "*original:"),
        (
            "12. [A title](",
            "#. [](",
        ),
        ("  -  ", "-"),
        ("", ""),
    ],
)
def test_line_shapes(prefix: str, shape: str) -> None:
    assert line_shape(prefix) == shape
