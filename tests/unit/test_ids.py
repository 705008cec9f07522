"""The arXiv id parser: every accepted form, every rejection with its reason, and fuzzing.

arXiv rejects a whole `id_list` batch when one id is malformed, so the parser is the
gate: whatever it accepts must be a real id shape, and whatever it is given, it answers
with an `ArxivId` or an `InvalidArxivId`, never another exception.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fetcher import ids
from fetcher.errors import InvalidArxivId, UsageError
from fetcher.ids import ArxivId, parse

VALID = [
    ("1706.03762", "1706.03762", None),
    ("1706.03762v7", "1706.03762", 7),
    ("  1706.03762v7\n", "1706.03762", 7),
    ("arXiv:1706.03762", "1706.03762", None),
    ("ARXIV: 1706.03762v2", "1706.03762", 2),
    ("0704.0001", "0704.0001", None),  # the first new-style id
    ("1412.9999", "1412.9999", None),  # the last month with 4 digits
    ("1501.00001", "1501.00001", None),  # 5 digits from January 2015
    ("hep-th/9901001", "hep-th/9901001", None),
    ("hep-th/9901001v3", "hep-th/9901001", 3),
    ("math.GT/0309136v2", "math.GT/0309136", 2),
    ("cond-mat/9108001", "cond-mat/9108001", None),  # August 1991: the first month
    ("astro-ph/0703999", "astro-ph/0703999", None),  # March 2007: the last month
    ("https://arxiv.org/abs/1706.03762", "1706.03762", None),
    ("https://arxiv.org/abs/1706.03762v5?context=cs", "1706.03762", 5),
    ("https://arxiv.org/pdf/1706.03762v7.pdf", "1706.03762", 7),
    ("http://export.arxiv.org/pdf/1706.03762", "1706.03762", None),
    ("arxiv.org/abs/hep-th/9901001", "hep-th/9901001", None),
    ("https://www.arxiv.org/html/2310.06825v1", "2310.06825", 1),
    # matched by host name: port, userinfo, case and a trailing dot do not matter
    ("https://export.arxiv.org:443/abs/1706.03762v2", "1706.03762", 2),
    ("https://ARXIV.ORG./abs/1706.03762", "1706.03762", None),
    ("https://me@arxiv.org/pdf/1706.03762v7", "1706.03762", 7),
]


@pytest.mark.parametrize(("text", "base", "version"), VALID)
def test_accepted_forms(text: str, base: str, version: int | None) -> None:
    parsed = parse(text)
    assert (parsed.base, parsed.version) == (base, version)
    assert parsed.key == base
    assert parse(str(parsed)) == parsed


INVALID = [
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("hello", "accepted forms: 1706.03762, 1706.03762v7, arXiv:1706.03762, hep-th/9901001"),
    ("1706.0376", "ids of 1706 have 5 digits after the dot"),
    ("1412.12345", "ids of 1412 have 4 digits after the dot"),
    ("1501.0001", "ids of 1501 have 5 digits after the dot"),
    ("1713.03762", "month 13 does not exist"),
    ("1700.03762", "month 00 does not exist"),
    ("0703.1234", "new-style ids start in 0704"),
    ("hep-th/9107001", "old-style ids run from 9108 to 0703"),
    ("hep-th/0704001", "old-style ids run from 9108 to 0703"),
    ("hep-th/5001001", "old-style ids run from 9108 to 0703"),
    ("1706.03762v0", "accepted forms"),
    ("1706.03762v", "accepted forms"),
    ("1706.03762v7v7", "accepted forms"),
    ("1706.03762.pdf", "accepted forms"),
    ("hep-th/990100", "accepted forms"),
    ("HEP-TH/9901001", "accepted forms"),
    ("\u0661\u0667\u0660\u0666.\u0660\u0663\u0667\u0666\u0662", "accepted forms"),  # Arabic digits
    ("１７０６.０３７６２", "accepted forms"),  # full-width digits
    ("1706.03762\n1810.04805", "accepted forms"),
    ("https://example.org/abs/1706.03762", "host example.org is not arxiv.org"),
    ("https://arxiv.org/list/cs.LG/recent", "not of a paper"),
    ("https://arxiv.org/abs/", "accepted forms"),
    ("http://[::1/abs/1706.03762", "not a valid URL"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_rejections_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidArxivId) as info:
        parse(text)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message.replace(repr(text), "")  # one line (the input is quoted)
    assert info.value.exit_code == 2
    assert not ids.is_valid(text)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://export.arxiv.org:443/list/cs.CL/new", "export.arxiv.org"),
        ("https://User:pw@ARXIV.org./abs/x", "arxiv.org"),
        ("http://[::1]:8080/x", "::1"),
        ("https://[::1/x", ""),  # cannot be split
        ("no host", ""),
    ],
)
def test_hostname_is_what_the_request_goes_to(url: str, host: str) -> None:
    assert ids.hostname(url) == host


def test_one_arxiv_host_list_for_ids_manifest_and_the_gate() -> None:
    """ids recognises paper URLs on `ARXIV_HOSTS`; the manifest hands the same hosts (and
    the configured ones, by name) to the client; any *.arxiv.org host is arXiv (F6)."""
    from fetcher.manifest import loads

    settings = loads(
        '[settings]\narxiv_api = "https://Mirror.example:8443/api/query"\n'
        'arxiv_pdf = "https://pdf.mirror.example./pdf/{id}"\n'
    ).settings
    assert settings.arxiv_hosts == ids.ARXIV_HOSTS | {"mirror.example", "pdf.mirror.example"}
    for host in ids.ARXIV_HOSTS:
        assert parse(f"https://{host}/abs/1706.03762").base == "1706.03762"
        assert ids.is_arxiv_host(host)
    assert ids.is_arxiv_host("info.arxiv.org")
    assert not ids.is_arxiv_host("notarxiv.org")
    assert not ids.is_arxiv_host("arxiv.org.evil.example")


def test_a_non_string_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidArxivId, match="must be a string"):
        parse(1706.03762)  # type: ignore[arg-type]


def test_stem_of_old_style_ids_is_one_component() -> None:
    assert ids.stem_of("hep-th/9901001") == "hep-th_9901001"
    assert ids.stem_of("1706.03762") == "1706.03762"


# --- property-based ----------------------------------------------------------------------

PIECES = st.sampled_from(
    [
        "1706",
        "0704",
        "1412",
        "1501",
        "9108",
        "0703",
        ".",
        "/",
        "v",
        "v7",
        "v0",
        "0",
        "03762",
        "0376",
        "hep-th",
        "math.GT",
        "-",
        "arXiv:",
        "arxiv.org/abs/",
        "https://arxiv.org/pdf/",
        "https://",
        "http://[",
        ":",
        "?",
        "#",
        "%2F",
        ".pdf",
        " ",
        "\n",
        "\x00",
        "\u0661",
        "é",
    ]
)
ID_LIKE = st.lists(PIECES, max_size=8).map("".join)


def _check_outcome(text: str) -> None:
    try:
        parsed = parse(text)
    except InvalidArxivId as exc:
        assert str(exc)
        assert isinstance(exc, UsageError)
        return
    assert isinstance(parsed, ArxivId)
    assert parsed.base.isascii() and parsed.base == parsed.base.strip()
    assert parsed.version is None or parsed.version >= 1
    assert parse(str(parsed)) == parsed  # canonical form round-trips
    assert parse(parsed.base).version is None
    stem = ids.stem_of(parsed.base)
    assert "/" not in stem and not stem.startswith(".")


@settings(max_examples=400, deadline=None)
@given(st.text())
@example("1706.03762")
@example("http://[::1]:99999/abs/1706.03762")
@example("arxiv.org/abs/" + "9" * 5000)
def test_any_text_gives_an_id_or_our_error(text: str) -> None:
    _check_outcome(text)


@settings(max_examples=400, deadline=None)
@given(ID_LIKE)
def test_id_shaped_text_gives_an_id_or_our_error(text: str) -> None:
    _check_outcome(text)


@st.composite
def real_ids(draw: st.DrawFn) -> tuple[str, str, int | None]:
    """A well-formed id of either style, with an optional version, and its base."""
    if draw(st.booleans()):
        yy = draw(st.integers(7, 29))
        mm = draw(st.integers(4 if yy == 7 else 1, 12))
        digits = 4 if (yy, mm) < (15, 1) else 5
        num = draw(st.integers(1, 10**digits - 1))
        base = f"{yy:02d}{mm:02d}.{num:0{digits}d}"
    else:
        archive = draw(st.sampled_from(["hep-th", "math", "cond-mat", "astro-ph", "cs"]))
        yymm = draw(
            st.one_of(
                st.tuples(st.integers(92, 99), st.integers(1, 12)),
                st.tuples(st.just(91), st.integers(8, 12)),
                st.tuples(st.integers(0, 6), st.integers(1, 12)),
                st.tuples(st.just(7), st.integers(1, 3)),
            )
        )
        base = f"{archive}/{yymm[0]:02d}{yymm[1]:02d}{draw(st.integers(0, 999)):03d}"
    version = draw(st.none() | st.integers(1, 9999))
    return base, base if version is None else f"{base}v{version}", version


@settings(max_examples=300, deadline=None)
@given(real_ids(), st.sampled_from(["{}", "arXiv:{}", "https://arxiv.org/abs/{}", " {} "]))
def test_every_well_formed_id_is_accepted(case: tuple[str, str, int | None], form: str) -> None:
    base, text, version = case
    parsed = parse(form.format(text))
    assert parsed == ArxivId(base, version)
