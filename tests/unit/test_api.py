"""The Python API of the contract: `fetcher.load_manifest`, `fetcher.sync`, `fetcher.verify`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

import fetcher
from tests.conftest import FakeClock
from tests.mockarxiv import Arxiv, pdf_for


def test_every_exported_name_resolves() -> None:
    for name in fetcher.__all__:
        assert getattr(fetcher, name) is not None, name
    with pytest.raises(AttributeError):
        fetcher.no_such_name  # noqa: B018


def test_import_fetcher_loads_nothing_it_does_not_need() -> None:
    code = (
        "import sys, fetcher; "
        "print(sorted(m for m in sys.modules if m.startswith(('fetcher.', 'httpx', 'arxiv'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_contract_example_runs_with_a_progress_callback(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "manifest.toml"
    path.write_text(
        '[[paper]]\narxiv = "1706.03762"\n\n'
        '[[paper]]\nurl = "https://cdn.example/gpt1.pdf"\nname = "gpt1"\n'
    )
    manifest = fetcher.load_manifest(path)
    events: list[fetcher.Event] = []
    with respx.mock(assert_all_called=False) as router:
        Arxiv(router, {"1706.03762": 7})
        router.get("https://cdn.example/gpt1.pdf").mock(
            return_value=httpx.Response(200, content=pdf_for("gpt1"))
        )
        report = fetcher.sync(manifest, progress=events.append, clock=clock)
    assert isinstance(report, fetcher.Report)
    assert [(e.key, e.status) for e in report.entries] == [
        ("1706.03762", "downloaded"),
        ("gpt1", "downloaded"),
    ]
    assert {e.kind for e in events} >= {"plan", "start", "bytes", "done"}
    assert sorted(e.key for e in events if e.kind == "done" and e.key) == ["1706.03762", "gpt1"]
    assert fetcher.verify(manifest) == []
    (tmp_path / "downloads" / "gpt1.pdf").write_bytes(b"%PDF-tampered")
    problems = fetcher.verify(manifest)
    assert [(p.kind, p.key) for p in problems] == [("damaged", "gpt1")]


def test_errors_share_one_base() -> None:
    with pytest.raises(fetcher.FetcherError):
        fetcher.load_manifest("/nonexistent/manifest.toml")
    assert issubclass(fetcher.ManifestError, fetcher.FetcherError)
    assert issubclass(fetcher.NotFound, fetcher.EntryError)
