"""CI smoke: the real manifest.toml through the whole sync against respx-mocked HTTP."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
import respx

from fetcher import manifest as manifest_mod
from fetcher.library import read_lock
from fetcher.sync import Options, Syncer
from tests.conftest import SEED_MANIFEST, FakeClock
from tests.mockarxiv import Arxiv, pdf_for


def test_real_manifest_syncs_offline(tmp_path: Path, clock: FakeClock) -> None:
    shutil.copy(SEED_MANIFEST, tmp_path / "manifest.toml")
    manifest = manifest_mod.load(tmp_path / "manifest.toml")
    arxiv_keys = [e.key for e in manifest.entries if e.kind == "arxiv"]
    with respx.mock(assert_all_called=False) as router:
        arxiv = Arxiv(router, {key: 1 + i % 3 for i, key in enumerate(arxiv_keys)})
        bodies: dict[str, bytes] = {}
        for entry in manifest.entries:
            if entry.kind != "url":
                continue
            assert entry.url is not None
            if entry.format == "html":
                body = b"<!doctype html><title>" + entry.key.encode() + b"</title>"
                ctype = "text/html; charset=utf-8"
            else:
                body, ctype = pdf_for(entry.key), "application/pdf"
            bodies[entry.key] = body
            router.get(entry.url).mock(
                return_value=httpx.Response(200, content=body, headers={"Content-Type": ctype})
            )
        report = Syncer(manifest, Options(), clock=clock).run()
        requests = len(router.calls)

    assert report.ok, [e.error for e in report.entries if e.error]
    assert report.counts == {"downloaded": 43, "skipped": 0, "failed": 0}
    assert arxiv.api_calls == 1
    assert requests == 44
    lock = read_lock(tmp_path / "manifest.lock")
    library = tmp_path / "downloads"
    for entry in manifest.entries:
        record = lock[entry.key]
        data = (library / record.file).read_bytes()
        if entry.kind == "arxiv":
            assert data == pdf_for(f"{entry.key}v{record.version}")
        else:
            assert data == bodies[entry.key]
        assert hashlib.sha256(data).hexdigest() == record.sha256
        sidecar = json.loads((library / (Path(record.file).stem + ".json")).read_text())
        assert sidecar["key"] == entry.key and sidecar["sha256"] == record.sha256
    # the real endpoints were used, with versioned PDF URLs
    assert lock["1706.03762"].url.startswith("https://export.arxiv.org/pdf/1706.03762v")
    assert lock["gpt1"].url == manifest.by_key()["gpt1"].url
