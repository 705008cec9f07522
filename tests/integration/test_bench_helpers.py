"""The benchmark harness's own logic (bench/): what it counts must be right.

No timing here: the figures themselves come from `python bench/run.py`, never from tests.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

from fetcher.manifest import loads

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _load("run")


def req(path: str, start: float) -> object:
    return run.Request("GET", path, 200, start, start + 0.001)


def test_spacing_counts_arxiv_starts_closer_than_the_interval() -> None:
    log = [
        req("/api/query", 0.0),
        req("/pdf/1706.03762v1", 0.25),  # exactly the interval: fine
        req("/web/cdn.example/x.pdf", 0.26),  # another host: not counted, not a gap
        req("/pdf/1810.04805v1", 0.40),  # 0.15 after the previous arXiv start: a breach
        req("/pdf/1910.10683v1", 0.649),  # 0.249: within the 2 ms stamp jitter allowed
    ]
    breaches, gap = run.spacing(log, 0.25)
    assert breaches == 1
    assert abs(gap - 0.15) < 1e-9


def test_spacing_of_one_request_has_no_gap() -> None:
    assert run.spacing([req("/api/query", 1.0)], 0.25) == (0, None)


def test_point_at_moves_endpoints_and_urls_and_the_manifest_stays_valid(tmp_path: Path) -> None:
    text = (
        '[settings]\nlibrary = "downloads"\n\n[[paper]]\narxiv = "1706.03762"\n\n'
        '[[paper]]\nurl = "https://cdn.example.org/a/b.pdf"\nname = "b"\n'
    )
    moved = run.point_at(text, "http://127.0.0.1:1", arxiv_interval=0.25, web="http://127.0.0.1:2")
    manifest = loads(moved, tmp_path / "manifest.toml")
    assert manifest.settings.arxiv_api == "http://127.0.0.1:1/api/query"
    assert manifest.settings.arxiv_interval == 0.25
    url_entry = manifest.by_key()["b"]
    assert url_entry.url == "http://127.0.0.1:2/web/cdn.example.org/a/b.pdf"


def test_scale_manifest_has_n_distinct_valid_entries(tmp_path: Path) -> None:
    manifest = loads(run._scale_manifest("http://127.0.0.1:1", 1_500), tmp_path / "m.toml")
    keys = [e.key for e in manifest.entries]
    assert len(keys) == len(set(keys)) == 1_500
    assert manifest.settings.arxiv_interval == 0.0


def test_importtime_rows_keep_names_and_nesting() -> None:
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |     fetcher.ids\n"
        "import time:      2000 |       5000 |   fetcher.manifest\n"
        "import time:      1000 |       9000 | fetcher\n"
    )
    assert run._imports(stderr) == [
        ("fetcher.ids", 120, 2),
        ("fetcher.manifest", 5000, 1),
        ("fetcher", 9000, 0),
    ]


def test_bench_server_streams_an_exact_pdf_shaped_body_and_logs_it() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        hello = json.loads(proc.stdout.readline())
        size = 3 * (1 << 20) + 12_345  # not a multiple of the 1 MiB block
        with urllib.request.urlopen(f"{hello['big']}/{size}.pdf", timeout=30) as response:
            assert response.headers["Content-Length"] == str(size)
            body = response.read()
        assert len(body) == size
        assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF")
        proc.stdin.write('{"op": "big_log"}\n')
        proc.stdin.flush()
        rows = json.loads(proc.stdout.readline())["log"]
        assert [row[0] for row in rows] == [size]
        assert rows[0][2] >= rows[0][1]
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
