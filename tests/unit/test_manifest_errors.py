"""Bad manifests: one clear line on stderr, exit 2, no request, nothing written.

Each case runs the real CLI (`fetcher sync`) against a manifest whose arXiv endpoints
point at the fake server, with one good entry the server knows: if validation let the
manifest through, a request would be made and `fake.requests` would show it.
The property-based tests feed the loader anything at all and accept only a `Manifest`
or a `ManifestError`.
"""

from __future__ import annotations

import json
import re
import string
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fetcher.errors import ManifestError
from fetcher.library import Library, is_plain_name
from fetcher.manifest import Manifest, load, loads
from fetcher.sync import default_file
from tests.conftest import run_fetcher
from tests.fakeserver import FakeServer

GOOD = '[[paper]]\narxiv = "1706.03762"\n'
MARK = "# <-"  # marks the line the message must name


@dataclass
class Case:
    id: str
    body: str  # TOML after the settings table and the good entry
    expect: str  # a substring of the one stderr line
    settings: dict[str, str] = field(default_factory=dict)  # raw TOML values, by key
    extra_settings: str = ""  # more lines inside [settings]
    column: bool = False  # a TOML syntax error names file:line:column
    good: bool = True  # include the good entry (a table that must not be redeclared)


CASES = [
    # TOML syntax
    Case(
        "syntax-table", '[[paper]  # <-\narxiv = "1810.04805"\n', "TOML syntax error", column=True
    ),
    Case(
        "syntax-string",
        '[[paper]]\narxiv = "1810.04805  # <-\n',
        "TOML syntax error: Illegal",
        column=True,
    ),
    Case("syntax-eof", "[[paper]]\narxiv =", "TOML syntax error: Invalid value", column=True),
    Case(
        "toml-duplicate-key",
        '[[paper]]\narxiv = "1810.04805"\narxiv = "1810.04805"  # <-\n',
        "a key is set twice in one table",
        column=True,
    ),
    Case("toml-nested-too-deep", "x = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    # wrong types
    Case(
        "paper-not-array",
        '[paper]\narxiv = "1706.03762"\n',
        "`paper` must be an array of tables: write [[paper]]",
        good=False,
    ),
    Case(
        "paper-declared-twice",
        '[paper]  # <-\narxiv = "1810.04805"\n',
        "Cannot declare [paper] twice (a table is declared twice)",
        column=True,
    ),
    Case(
        "settings-type",
        "",
        "max_size: expected a positive whole number of bytes, found 'big'",
        settings={"max_size": '"big"'},
    ),
    Case(
        "settings-bool-interval",
        "",
        "host_interval: expected a number of seconds, found True",
        settings={"host_interval": "true"},
    ),
    Case(
        "entry-type",
        "[[paper]]\narxiv = 1810.04805  # <-\n",
        "arxiv must be a string, found 1810.04805",
    ),
    Case(
        "tags-type",
        '[[paper]]\narxiv = "1810.04805"\ntags = "nlp"  # <-\n',
        'tags must be a list of non-empty strings, e.g. tags = ["nlp"]',
    ),
    # sources
    Case(
        "no-source",
        '[[paper]]  # <-\ntitle = "A paper"\n',
        'has no source: give `arxiv = "ID"` or `url = "https://..."`',
    ),
    Case(
        "both-sources",
        '[[paper]]  # <-\narxiv = "1810.04805"\nurl = "https://a.example/x.pdf"\nname = "x"\n',
        "has both `arxiv` and `url`",
    ),
    Case(
        "url-without-name",
        '[[paper]]  # <-\nurl = "https://a.example/x.pdf"\n',
        "a url entry needs a `name`",
    ),
    Case(
        "name-on-arxiv",
        '[[paper]]\narxiv = "1810.04805"\nname = "bert"  # <-\n',
        "`name` is for url entries",
    ),
    Case(
        "url-is-arxiv",
        '[[paper]]\nurl = "https://arxiv.org/abs/1810.04805"  # <-\nname = "b"\n',
        "is an arXiv paper: write arxiv = '1810.04805'",
    ),
    # unknown keys, with a suggestion
    Case(
        "unknown-paper-key",
        '[[paper]]\narxiv = "1810.04805"\nsha265 = "00"  # <-\n',
        "unknown key 'sha265' (did you mean 'sha256'?)",
    ),
    Case(
        "unknown-setting",
        "",
        "unknown setting (did you mean 'arxiv_interval'?)",
        extra_settings="arxiv_intervall = 3  # <-\n",
    ),
    Case(
        "unknown-table",
        "[setting]  # <-\n",
        "unknown table or key 'setting' (did you mean 'settings'?)",
    ),
    # arXiv ids
    Case(
        "id-digits",
        '[[paper]]\narxiv = "1706.0376"  # <-\n',
        "'1706.0376' is not an arXiv id: ids of 1706 have 5 digits after the dot",
    ),
    Case(
        "id-garbage",
        '[[paper]]\narxiv = "attention is all you need"  # <-\n',
        "accepted forms: 1706.03762, 1706.03762v7, arXiv:1706.03762, hep-th/9901001",
    ),
    Case("id-month", '[[paper]]\narxiv = "1713.03762"  # <-\n', "month 13 does not exist"),
    Case(
        "id-old-style-range",
        '[[paper]]\narxiv = "hep-th/0801001"  # <-\n',
        "old-style ids run from 9108 to 0703",
    ),
    # duplicates
    Case(
        "duplicate-id",
        '[[paper]]  # <-\narxiv = "arXiv:1706.03762v2"\n',
        "duplicate entry '1706.03762' (first at line",
    ),
    Case(
        "duplicate-name",
        '[[paper]]\nurl = "https://a.example/1.pdf"\nname = "x"\n'
        '[[paper]]  # <-\nurl = "https://a.example/2.pdf"\nname = "x"\n',
        "duplicate entry 'x'",
    ),
    Case(
        "duplicate-url",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "x"\n'
        '[[paper]]  # <-\nurl = "https://A.EXAMPLE/x.pdf#page=2"\nname = "y"\n',
        "the same URL twice (first at line",
    ),
    # sha256
    Case(
        "sha-short",
        '[[paper]]\narxiv = "1810.04805"\nsha256 = "abc123"  # <-\n',
        "sha256 must be 64 hex digits, found 'abc123'",
    ),
    Case(
        "sha-not-hex",
        f'[[paper]]\narxiv = "1810.04805"\nsha256 = "{"g" * 64}"  # <-\n',
        "sha256 must be 64 hex digits",
    ),
    # names that would leave the library
    Case(
        "name-separator",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "a/b"  # <-\n',
        "name 'a/b' must not contain a path separator",
    ),
    Case(
        "name-backslash",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "a\\\\b"  # <-\n',
        "must not contain a path separator",
    ),
    Case(
        "name-dotdot",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = ".."  # <-\n',
        "name '..' is not a file name",
    ),
    Case(
        "name-traversal",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "../../etc/passwd"  # <-\n',
        "must not contain a path separator",
    ),
    Case(
        "name-leading-dot",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = ".hidden"  # <-\n',
        "name '.hidden' must not start with a dot",
    ),
    Case(
        "name-absolute",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "/etc/passwd"  # <-\n',
        "name '/etc/passwd' must not contain a path separator",
    ),
    Case(
        "name-newline",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "x\\n"  # <-\n',
        "may only use letters, digits",
    ),
    Case(
        "name-reserved",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "CON"  # <-\n',
        "reserved on Windows",
    ),
    # URLs
    Case(
        "scheme-ftp",
        '[[paper]]\nurl = "ftp://a.example/x.pdf"  # <-\nname = "x"\n',
        "expected an http or https URL, found 'ftp://a.example/x.pdf'",
    ),
    Case(
        "scheme-file",
        '[[paper]]\nurl = "file:///etc/passwd"  # <-\nname = "x"\n',
        "expected an http or https URL",
    ),
    Case(
        "url-no-host",
        '[[paper]]\nurl = "https:///x.pdf"  # <-\nname = "x"\n',
        "expected a URL with a host",
    ),
    Case(
        "url-bad-port",
        '[[paper]]\nurl = "https://a.example:99999/x.pdf"  # <-\nname = "x"\n',
        "expected a valid URL",
    ),
    Case(
        "url-space",
        '[[paper]]\nurl = "https://a.example/my paper.pdf"  # <-\nname = "x"\n',
        "without spaces or control characters",
    ),
    # hosts httpx and the resolver cannot encode: they used to pass and crash the sync
    Case(
        "url-empty-label",
        '[[paper]]\nurl = "https://a..b/x.pdf"  # <-\nname = "x"\n',
        "expected a URL with a valid host name, found 'https://a..b/x.pdf': the host name "
        "has an empty label",
    ),
    Case(
        "url-leading-dot",
        '[[paper]]\nurl = "https://.a.com/x"  # <-\nname = "x"\n',
        "has an empty label (a leading dot or '..')",
    ),
    Case(
        "url-long-label",
        f'[[paper]]\nurl = "https://{"a" * 64}.example/x.pdf"  # <-\nname = "x"\n',
        "is 64 characters; at most 63",
    ),
    Case(
        "url-bad-punycode",
        '[[paper]]\nurl = "https://xn--a.com/x"  # <-\nname = "x"\n',
        "found 'https://xn--a.com/x': not a valid international host name",
    ),
    Case(
        "api-bad-host",
        "",
        "arxiv_api: expected a URL with a valid host name",
        settings={"arxiv_api": '"https://export..arxiv.org/api/query"'},
    ),
    Case(
        "api-scheme",
        "",
        "arxiv_api: expected an http or https URL",
        settings={"arxiv_api": '"export.arxiv.org/api/query"'},
    ),
    Case(
        "pdf-no-id",
        "",
        "arxiv_pdf: must contain {id}",
        settings={"arxiv_pdf": '"https://export.arxiv.org/pdf/"'},
    ),
    Case(
        "pdf-other-field",
        "",
        "the only field allowed is {id}",
        settings={"arxiv_pdf": '"https://export.arxiv.org/pdf/{id}/{title}"'},
    ),
    # empty strings
    Case("empty-id", '[[paper]]\narxiv = ""  # <-\n', "arxiv must not be empty"),
    Case(
        "empty-name",
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = " "  # <-\n',
        "name must not be empty",
    ),
    Case(
        "empty-tag",
        '[[paper]]\narxiv = "1810.04805"\ntags = [""]  # <-\n',
        "tags must be a list of non-empty strings",
    ),
    Case("empty-library", "", "library: must not be empty", settings={"library": '""'}),
    # numbers
    Case(
        "interval-negative",
        "",
        "arxiv_interval: expected 0 to 3600 seconds, found -1",
        settings={"arxiv_interval": "-1"},
    ),
    Case(
        "interval-absurd",
        "",
        "host_interval: expected 0 to 3600 seconds, found 86400",
        settings={"host_interval": "86400"},
    ),
    Case(
        "interval-nan",
        "",
        "arxiv_interval: expected 0 to 3600 seconds, found nan",
        settings={"arxiv_interval": "nan"},
    ),
    Case(
        "max-size-zero",
        "",
        "max_size: expected a positive whole number",
        settings={"max_size": "0"},
    ),
    # filename templates
    Case(
        "template-typo",
        "",
        "unknown field {titel} (did you mean 'title'?)",
        settings={"filename": '"{titel}"'},
    ),
    Case(
        "template-separator",
        "",
        "filename: must not contain a path separator",
        settings={"filename": '"{year}/{key}"'},
    ),
    Case(
        "template-constant",
        "",
        "has no field, so every file would get the same name",
        settings={"filename": '"paper"'},
    ),
    Case(
        "template-spec",
        "",
        "write {key} without a format spec or conversion",
        settings={"filename": '"{key:>9999999}"'},
    ),
    Case("template-brace", "", "filename: bad template", settings={"filename": '"{key"'}),
    # other values
    Case(
        "format-unknown",
        '[[paper]]\nurl = "https://a.example/x"\nname = "x"\nformat = "epub"  # <-\n',
        "format must be 'pdf' or 'html', found 'epub'",
    ),
    Case(
        "contact-not-ascii",
        "",
        "contact: expected a plain ASCII e-mail address",
        settings={"contact": '"jos\u00e9@example.org"'},
    ),
]


def _manifest_text(case: Case, srv: FakeServer) -> str:
    values = {
        "arxiv_api": f'"{srv.arxiv_api}"',
        "arxiv_pdf": f'"{srv.arxiv_pdf}"',
        "arxiv_interval": "0.02",
        "host_interval": "0.0",
    }
    values.update(case.settings)
    lines = "".join(f"{k} = {v}\n" for k, v in values.items())
    good = GOOD if case.good else ""
    return f"[settings]\n{lines}{case.extra_settings}\n{good}\n{case.body}"


def _marked_line(text: str) -> int | None:
    for number, line in enumerate(text.split("\n"), start=1):
        if MARK in line:
            return number
    return None


def assert_refused(  # type: ignore[no-untyped-def]
    result, srv: FakeServer, folder: Path, expect: str, *, json_mode: bool = False
) -> str:
    """Exit 2, one line on stderr containing `expect`, no request, no writes; no stdout,
    or under --json one document saying so."""
    assert result.returncode == 2, result.stderr
    if json_mode:
        doc = json.loads(result.stdout)
        assert doc["ok"] is False and doc["exit"] == 2, doc
        assert expect in doc["error"], doc
    else:
        assert result.stdout == ""
    lines = result.stderr.strip().split("\n")
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("fetcher: error: "), line
    assert expect in line, line
    assert "Traceback" not in result.stderr and "internal error" not in line
    assert srv.requests == []
    assert not (folder / "manifest.lock").exists()
    assert not (folder / "downloads" / ".fetcher").exists()
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_manifest_is_refused_before_any_request(
    case: Case, fake: FakeServer, tmp_path: Path
) -> None:
    fake.add_arxiv("1706.03762")
    text = _manifest_text(case, fake)
    path = tmp_path / "manifest.toml"
    path.write_text(text, encoding="utf-8")

    line = assert_refused(
        run_fetcher("sync", "-m", str(path), cwd=tmp_path), fake, tmp_path, case.expect
    )

    assert str(path) in line  # the file is named
    assert not (tmp_path / "downloads").exists()
    marked = _marked_line(text)
    if case.column:
        m = re.search(re.escape(str(path)) + r":(\d+):(\d+): ", line)
        assert m is not None, line
        if marked is not None:
            assert int(m.group(1)) == marked, line
    elif marked is not None:
        assert f"{path}:{marked}: " in line, line


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_a_good_manifest_does_make_requests(fake: FakeServer, tmp_path: Path) -> None:
    """The control: the same manifest without its fault reaches the server."""
    fake.add_arxiv("1706.03762")
    path = tmp_path / "manifest.toml"
    path.write_text(_manifest_text(Case("good", "", ""), fake))
    result = run_fetcher("sync", "-m", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert fake.requests
    assert (tmp_path / "downloads" / "1706.03762.pdf").is_file()


# --- the file itself: encoding, kind, absence -----------------------------------------------


def _good_bytes(srv: FakeServer) -> bytes:
    return _manifest_text(Case("good", "", ""), srv).encode()


@pytest.mark.parametrize(
    ("mangle", "expect"),
    [
        (
            lambda b: b + b'[[paper]]\narxiv = "1810.04805"\ntitle = "caf\xe9"\n',
            "is not UTF-8 text",
        ),
        (lambda b: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b, "is a binary file"),
        (lambda b: b.decode().encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
    ],
    ids=["latin-1", "binary", "utf-16"],
)
def test_a_file_that_is_not_utf8_text_is_refused(
    mangle,
    expect: str,
    fake: FakeServer,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    fake.add_arxiv("1706.03762")
    path = tmp_path / "manifest.toml"
    path.write_bytes(mangle(_good_bytes(fake)))
    assert_refused(run_fetcher("sync", "-m", str(path), cwd=tmp_path), fake, tmp_path, expect)


def test_a_utf8_bom_is_fine(fake: FakeServer, tmp_path: Path) -> None:
    fake.add_arxiv("1706.03762")
    path = tmp_path / "manifest.toml"
    path.write_bytes(b"\xef\xbb\xbf" + _good_bytes(fake))
    result = run_fetcher("sync", "-m", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_no_manifest_here(fake: FakeServer, tmp_path: Path) -> None:
    result = run_fetcher("sync", cwd=tmp_path)
    assert_refused(
        result,
        fake,
        tmp_path,
        "no manifest.toml here: create one with `fetcher add` or `fetcher import`, or pass -m PATH",
    )
    assert not (tmp_path / "downloads").exists()


def test_no_manifest_at_the_given_path(fake: FakeServer, tmp_path: Path) -> None:
    missing = tmp_path / "lists" / "papers.toml"
    result = run_fetcher("verify", "-m", str(missing), cwd=tmp_path)
    assert_refused(result, fake, tmp_path, f"no manifest at {missing}")


def test_a_folder_given_as_manifest(fake: FakeServer, tmp_path: Path) -> None:
    result = run_fetcher("sync", "-m", str(tmp_path), cwd=tmp_path)
    assert_refused(result, fake, tmp_path, f"pass -m {tmp_path / 'manifest.toml'}")


def test_a_library_path_that_is_a_file(fake: FakeServer, tmp_path: Path) -> None:
    fake.add_arxiv("1706.03762")
    (tmp_path / "downloads").write_text("not a folder")
    path = tmp_path / "manifest.toml"
    path.write_bytes(_good_bytes(fake))
    assert_refused(
        run_fetcher("sync", "-m", str(path), cwd=tmp_path),
        fake,
        tmp_path,
        "library: " + f"{tmp_path / 'downloads'} exists and is not a folder",
    )
    assert (tmp_path / "downloads").read_text() == "not a folder"


def test_a_library_path_below_a_file(fake: FakeServer, tmp_path: Path) -> None:
    fake.add_arxiv("1706.03762")
    (tmp_path / "notes.txt").write_text("a file")
    path = tmp_path / "manifest.toml"
    path.write_text(
        _manifest_text(Case("x", "", "", settings={"library": '"notes.txt/papers"'}), fake)
    )
    assert_refused(
        run_fetcher("sync", "-m", str(path), cwd=tmp_path),
        fake,
        tmp_path,
        f"{tmp_path / 'notes.txt'} is a file, so the folder",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["verify"],
        ["sync", "--dry-run"],
        ["sync", "--json"],
        ["--json", "sync", "-q"],
        ["status"],
        ["status", "--check-updates"],
        ["bib"],
        ["smoke"],
        ["add", "1810.04805"],
        ["import", "list.md"],
    ],
    ids=" ".join,
)
def test_every_command_refuses_a_bad_manifest(
    argv: list[str], fake: FakeServer, tmp_path: Path
) -> None:
    fake.add_arxiv("1706.03762")
    path = tmp_path / "manifest.toml"
    text = _manifest_text(CASES[0], fake)
    path.write_text(text)
    (tmp_path / "list.md").write_text("- https://arxiv.org/abs/1810.04805\n")
    assert_refused(
        run_fetcher(*argv, "-m", str(path), cwd=tmp_path),
        fake,
        tmp_path,
        "TOML syntax error",
        json_mode="--json" in argv,
    )
    assert path.read_text() == text  # add and import leave a broken manifest alone


# --- property-based: the loader answers anything with a Manifest or a ManifestError ----------

SETTING_KEYS = [
    "library",
    "arxiv_api",
    "arxiv_pdf",
    "arxiv_interval",
    "host_interval",
    "contact",
    "filename",
    "max_size",
    "sha265",
    "x",
]
PAPER_KEYS = ["arxiv", "url", "name", "format", "sha256", "title", "tags", "sha265", "nme"]
TRICKY = [
    "",
    " ",
    ".",
    "..",
    "../x",
    "/etc/passwd",
    "C:\\x",
    "a/b",
    "CON",
    "nul.txt",
    ".hidden",
    "x\n",
    "\x00",
    "\u202e",
    "\u00e9",
    "1706.03762",
    "1706.03762v7",
    "arXiv:1706.03762",
    "hep-th/9901001",
    "https://arxiv.org/abs/1706.03762",
    "https://a.example/x.pdf",
    "http://a.example",
    "ftp://a.example/x",
    "http://[::1",
    "https://a.example:99999/",
    "https://a.example/{id}",
    "{key}",
    "{title}-{year}",
    "{key!r}",
    "{key:>5}",
    "{",
    "}",
    "{0}",
    "{id}/{key}",
    "pdf",
    "html",
    "a" * 300,
    "0" * 64,
    "F" * 64,
]
SCALARS = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = "".join(
        c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in str(value)
    )
    return f'"{escaped}"'


def _table(data: dict[str, object]) -> str:
    return "".join(f'"{k}" = {_toml_value(v)}\n' for k, v in data.items())


DOCUMENTS = st.builds(
    lambda s, papers, junk: (
        (f"[settings]\n{_table(s)}\n" if s is not None else "")
        + "".join(f"[[paper]]\n{_table(p)}\n" for p in papers)
        + junk
    ),
    st.none() | st.dictionaries(st.sampled_from(SETTING_KEYS), VALUES, max_size=4),
    st.lists(st.dictionaries(st.sampled_from(PAPER_KEYS), VALUES, max_size=4), max_size=4),
    st.sampled_from(["", "\n", "[x]\n", "paper = 1\n", "[[paper]]\n", "[settings]\n", "= ="]),
)


IDS = st.sampled_from(
    [
        "1706.03762",
        "1706.03762v7",
        "hep-th/9901001",
        "math.GT/0309136v2",
        "arXiv:1810.04805",
        "https://arxiv.org/abs/2005.14165",
        "0704.0001",
    ]
)
NEAR_VALID_PAPERS = st.one_of(
    st.fixed_dictionaries(
        {"arxiv": IDS}, optional={"title": st.text(), "tags": st.lists(st.text())}
    ),
    st.fixed_dictionaries(
        {
            "url": st.sampled_from(
                [
                    "https://a.example/x.pdf",
                    "http://b.example/y?z=1",
                    "https://c.example/p/" + "q" * 200,
                ]
            ),
            "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,130}", fullmatch=True),
        },
        optional={
            "title": st.text(),
            "format": st.sampled_from(["pdf", "html", "epub"]),
            "sha256": st.sampled_from(["0" * 64, "A" * 64, "abc"]),
        },
    ),
)
TEMPLATES = st.lists(
    st.sampled_from(
        [
            "{key}",
            "{id}",
            "{version}",
            "{title}",
            "{first_author}",
            "{year}",
            "-",
            "_",
            " ",
            ".",
            "CON",
            "\u00e9",
            ":",
            "'",
            "{",
            "}}",
        ]
    ),
    min_size=1,
    max_size=5,
).map("".join)
NEAR_VALID = st.builds(
    lambda s, papers: (
        f"[settings]\n{_table(s)}\n" + "".join(f"[[paper]]\n{_table(p)}\n" for p in papers)
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "filename": TEMPLATES | st.text(),
            "library": st.text(max_size=20),
            "arxiv_interval": st.floats(-1, 4000),
            "max_size": st.integers(-1, 10**12),
        },
    ),
    st.lists(NEAR_VALID_PAPERS, max_size=5),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NEAR_VALID)
def test_nearly_valid_manifests_give_a_manifest_or_our_error(text: str) -> None:
    _outcome(text, Path(tempfile.gettempdir()) / "fetcher-prop" / "manifest.toml")


def _check(manifest: Manifest) -> None:
    """What a manifest that loads promises: unique keys, and safe file names."""
    keys = [e.key for e in manifest.entries]
    assert len(keys) == len(set(keys))
    library = Library(manifest.library)
    for entry in manifest.entries:
        name = default_file(entry, manifest.settings.filename)
        assert is_plain_name(name), name
        assert library.path_of(name).parent == manifest.library
        assert len(name.encode()) <= 160


def _outcome(text: str, path: Path) -> None:
    try:
        manifest = loads(text, path)
    except ManifestError as exc:
        assert str(exc).startswith(str(path))
        assert "\n" not in exc.detail
        return
    _check(manifest)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
@example(
    '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "x"\n'
    '[[paper]]\narxiv = "hep-th/9901001"\n[settings]\nfilename = "{title}"\n'
)
def test_structured_manifests_give_a_manifest_or_our_error(text: str) -> None:
    _outcome(text, Path(tempfile.gettempdir()) / "fetcher-prop" / "manifest.toml")


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
    | st.text(alphabet=string.printable, max_size=200)
)
def test_any_text_gives_a_manifest_or_our_error(text: str) -> None:
    _outcome(text, Path(tempfile.gettempdir()) / "fetcher-prop" / "manifest.toml")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
@example(b"\xff\xfe[\x00")
@example(b"\xef\xbb\xbf[settings]\n")
def test_any_bytes_on_disk_give_a_manifest_or_our_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "manifest.toml"
        path.write_bytes(data)
        try:
            manifest = load(path)
        except ManifestError as exc:
            assert str(exc)
            return
        _check(manifest)


# --- hosts: what loads can be requested -----------------------------------------------------

HOST_PARTS = [
    "a",
    "b",
    "example",
    "xn--",
    "xn--a",
    "xn--bcher-kva",
    "ü",
    "⒈",
    "-",
    ".",
    "..",
    "a" * 63,
    "a" * 64,
    "_",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(HOST_PARTS), min_size=1, max_size=6).map("".join))
@example("a..b")
@example(".a.com")
@example("xn--a.com")
@example("a.com.")
@example("bücher.de")
def test_a_url_host_that_loads_is_one_the_client_can_send(host: str) -> None:
    """httpx builds the request and the resolver's idna codec encodes the name, or the
    manifest is refused: an invalid host must never get past validation (F1)."""
    import httpx

    url = f"https://{host}/x.pdf"
    text = f'[[paper]]\nurl = "{url}"\nname = "x"\n'
    try:
        loads(text, Path(tempfile.gettempdir()) / "fetcher-prop" / "manifest.toml")
    except ManifestError as exc:
        assert "\n" not in str(exc)
        return
    parsed = httpx.URL(url)
    parsed.host  # noqa: B018 - decodes xn-- labels (idna), raises if they are bad
    parsed.raw_host.decode("ascii").encode("idna")  # what socket.getaddrinfo does


# --- loads is pure; load checks the library folder ------------------------------------------


def test_loads_does_not_touch_the_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "downloads").write_text("a file where the library should be")
    text = (
        '[settings]\nlibrary = "downloads"\n[[paper]]\narxiv = "1706.03762"\n'
        '[[paper]]\nurl = "https://a.example/x.pdf"\nname = "x"\n'
    )

    import os

    touched: list[tuple[str, object]] = []

    def spy(name: str) -> object:
        real = getattr(os, name)

        def call(*args: object, **kwargs: object) -> object:
            touched.append((name, args[0] if args else None))
            return real(*args, **kwargs)

        return call

    for name in ("stat", "lstat", "scandir", "listdir", "open", "access"):
        monkeypatch.setattr(os, name, spy(name))
    try:
        manifest = loads(text, tmp_path / "manifest.toml")
    finally:
        monkeypatch.undo()
    assert touched == []
    assert manifest.library == tmp_path / "downloads"
    with pytest.raises(ManifestError, match="exists and is not a folder") as info:
        load_path = tmp_path / "manifest.toml"
        load_path.write_text(text)
        load(load_path)
    assert f"{load_path}:2: [settings] library: " in str(info.value)


def test_error_hints_import_difflib_only_when_needed(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fetcher.manifest import loads\n"
        "from fetcher.errors import ManifestError\n"
        'loads(\'[[paper]]\\narxiv = "1706.03762"\\n[settings]\\nlibrary = "d"\\n\')\n'
        "print('difflib' in sys.modules)\n"
        "try:\n"
        '    loads(\'[[paper]]\\narxiv = "1706.03762"\\nsha265 = "0"\\n\')\n'
        "except ManifestError as exc:\n"
        "    print('difflib' in sys.modules, 'did you mean' in str(exc))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout.split("\n")
    assert out[:2] == ["False", "True True"]


def test_windows_reserved_names_are_one_set() -> None:
    import fetcher.library
    import fetcher.manifest

    assert fetcher.manifest.RESERVED_NAMES is fetcher.library.RESERVED_NAMES
    assert not hasattr(fetcher.manifest, "_RESERVED")
    assert not hasattr(fetcher.library, "_RESERVED")
    with pytest.raises(ManifestError, match="reserved on Windows"):
        loads('[[paper]]\nurl = "https://a.example/x.pdf"\nname = "lpt3.notes"\n')


def test_url_identity_is_public_and_ignores_case_and_fragment() -> None:
    from fetcher.manifest import url_identity

    assert url_identity("HTTPS://A.Example/x.pdf#page=2") == url_identity("https://a.example/x.pdf")
    assert url_identity("https://a.example/x.pdf?v=1") != url_identity("https://a.example/x.pdf")
    assert url_identity("https://a.example/X.pdf") != url_identity("https://a.example/x.pdf")
