"""`fetcher smoke`: the whole sync of a real manifest, offline, against mocked responses.

Every request the pipeline makes is answered by a respx router: a synthetic Atom feed
for the arXiv API, a synthetic PDF (or web page) for every entry, a 404 for anything
else (reported as unexpected). Time is a fake clock, so arXiv's 3-second spacing costs
nothing and the run takes about a second. The library and lock live in a temporary
folder: the user's own library and `manifest.lock` are never touched.

Each stage is checked on what is on disk, not on what the code says it did:
ids valid, metadata parsed into sidecars, files stored and hashing to the bytes served,
`verify` clean, the lock written and consistent, a second sync a no-op, the catalog
complete.
"""

from __future__ import annotations

import hashlib
import html
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from .errors import FetcherError, UsageError
from .library import STATE_DIR, hash_file, read_lock
from .manifest import Entry, Manifest

if TYPE_CHECKING:
    import httpx

    from .report import Event, Report

STAGES = ("ids", "metadata", "files", "verify", "lock", "resync", "catalog")
SMOKE_DIR = "smoke"  # <library>/.fetcher/smoke/ marks a library made by `fetcher smoke`
AUTHORS = ("Ada Lovelace", "Émilie du Châtelet", "Alan Turing")
_ATOM = "http://arxiv.org/schemas/atom"


@dataclass
class Stage:
    name: str
    status: Literal["ok", "failed", "skipped"]
    detail: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @staticmethod
    def of(name: str, detail: str, problems: list[str]) -> Stage:
        return Stage(name, "failed" if problems else "ok", detail, problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "problems": self.problems,
        }


@dataclass
class SmokeReport:
    """The outcome of one smoke run, stage by stage."""

    manifest: Path
    library: Path
    kept: bool
    stages: list[Stage] = field(default_factory=list)
    requests: int = 0
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.stages) and all(s.ok for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "manifest": str(self.manifest),
            "library": str(self.library) if self.kept else None,
            "stages": [s.to_json() for s in self.stages],
            "requests": self.requests,
            "unexpected": list(self.unexpected),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """The human report: one line per stage, then each problem indented."""
        out = []
        for stage in self.stages:
            mark = {"ok": "ok", "failed": "FAILED", "skipped": "skip"}[stage.status]
            out.append(f"{mark:<6} {stage.name:<9} {stage.detail}")
            out += [f"         - {p}" for p in stage.problems]
        return out

    def describe(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        return "\n".join(
            [f"fetcher smoke {verdict} for {self.manifest}", *self.lines(), *self.notes]
        )


class FakeClock:
    """Time that jumps forward when slept on; shared by the two lanes of a sync."""

    def __init__(self) -> None:
        self.now = time.time()
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self.now += seconds


# --- what the mock serves ----------------------------------------------------------------------


def _year_month(base: str) -> tuple[int, int]:
    digits = base.split("/")[-1]
    yy, mm = int(digits[:2]), int(digits[2:4])
    return (1900 + yy if yy >= 91 else 2000 + yy), mm


def synthetic_pdf(label: str, size: int = 2048) -> bytes:
    """A small PDF-shaped body (magic, a comment naming `label`, filler, %%EOF)."""
    head = f"%PDF-1.4\n% fetcher smoke: {label}\n".encode()
    tail = b"\n%%EOF\n"
    seed = hashlib.sha256(label.encode()).digest()
    filler = (seed * (size // len(seed) + 1))[: max(0, size - len(head) - len(tail))]
    return head + filler + tail


def synthetic_page(title: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>\n<body><h1>{escape(title)}</h1>\n"
        "<p>A synthetic page served by fetcher smoke.</p></body></html>\n"
    ).encode()


@dataclass(frozen=True)
class Paper:
    """The metadata the mock arXiv knows for one entry."""

    base: str
    version: int
    title: str
    authors: tuple[str, ...]
    published: str

    def entry_xml(self) -> str:
        vid = f"{self.base}v{self.version}"
        authors = "".join(f"<author><name>{escape(a)}</name></author>" for a in self.authors)
        return (
            f"<entry><id>http://arxiv.org/abs/{vid}</id>"
            f"<updated>{self.published}</updated><published>{self.published}</published>"
            f"<title>{escape(self.title)}</title>"
            f"<summary>Synthetic abstract of {vid}, served by fetcher smoke.</summary>"
            f"{authors}"
            f'<category term="cs.CL" scheme="{_ATOM}"/>'
            '<arxiv:primary_category term="cs.CL"/></entry>'
        )


class Mock:
    """The respx router of a smoke run and what it served."""

    def __init__(self, manifest: Manifest):
        import respx

        self.settings = manifest.settings
        self.papers: dict[str, Paper] = {}
        self.bodies: dict[str, bytes] = {}  # normalised URL -> body served
        self.pages: dict[str, bytes] = {}  # html entries, same keys
        self.api_batches: list[int] = []
        self.unexpected: list[str] = []
        self.router = respx.Router(assert_all_called=False, assert_all_mocked=True)
        for entry in manifest.entries:
            if entry.kind == "arxiv":
                self._add_paper(entry)
        self.router.get(url__startswith=self.settings.arxiv_api, name="arxiv-api").mock(
            side_effect=self._api
        )
        for entry in manifest.entries:
            if entry.kind == "url" and entry.url:
                self._add_url(entry)
        self.router.get(name="arxiv-pdf").mock(side_effect=self._pdf)
        self.router.route(name="unexpected").mock(side_effect=self._unexpected)

    @property
    def transport(self) -> httpx.MockTransport:
        import httpx

        return httpx.MockTransport(self.router.handler)

    @property
    def requests(self) -> int:
        return len(self.router.calls)

    def _add_paper(self, entry: Entry) -> None:
        assert entry.arxiv is not None
        year, month = _year_month(entry.arxiv.base)
        self.papers[entry.arxiv.base] = Paper(
            base=entry.arxiv.base,
            version=entry.arxiv.version or 1,
            title=entry.title or f"Synthetic paper {entry.arxiv.base}: offline & checked",
            authors=AUTHORS,
            published=f"{year:04d}-{month:02d}-01T00:00:00Z",
        )

    def _add_url(self, entry: Entry) -> None:
        import httpx

        assert entry.url is not None
        if entry.format == "html":
            body = synthetic_page(entry.title or entry.key)
            ctype = "text/html; charset=utf-8"
        else:
            body = synthetic_pdf(entry.key)
            ctype = "application/pdf"
        self.bodies[normalise(entry.url)] = body
        self.router.get(url=entry.url, name=entry.key).mock(
            return_value=httpx.Response(200, content=body, headers=_headers(body, ctype))
        )

    def pdf_url(self, paper: Paper) -> str:
        return self.settings.arxiv_pdf.format(id=f"{paper.base}v{paper.version}")

    def _api(self, request: httpx.Request) -> httpx.Response:
        import httpx

        query = parse_qs(urlsplit(str(request.url)).query)
        asked = [i for i in ",".join(query.get("id_list", [])).split(",") if i]
        self.api_batches.append(len(asked))
        entries = []
        for raw in asked:
            base, _, version = raw.partition("v") if "/" not in raw else _split_old(raw)
            paper = self.papers.get(base)
            if paper is not None and (not version or int(version) == paper.version):
                entries.append(paper.entry_xml())
        feed = (
            "<?xml version='1.0' encoding='UTF-8'?>\n"
            f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="{_ATOM}">'
            + "".join(entries)
            + "</feed>\n"
        ).encode()
        return httpx.Response(200, content=feed, headers={"Content-Type": "application/atom+xml"})

    def _pdf(self, request: httpx.Request) -> httpx.Response | None:
        import httpx

        prefix, _, suffix = self.settings.arxiv_pdf.partition("{id}")
        url = unquote(str(request.url))
        if not (url.startswith(prefix) and url.endswith(suffix)):
            return None
        vid = url[len(prefix) : len(url) - len(suffix)]
        base, _, version = vid.partition("v") if "/" not in vid else _split_old(vid)
        paper = self.papers.get(base)
        if paper is None or not version or int(version) != paper.version:
            return None
        body = synthetic_pdf(vid)
        self.bodies[normalise(str(request.url))] = body
        return httpx.Response(200, content=body, headers=_headers(body, "application/pdf"))

    def _unexpected(self, request: httpx.Request) -> httpx.Response:
        import httpx

        self.unexpected.append(f"{request.method} {request.url}")
        return httpx.Response(404, content=b"not mocked by fetcher smoke")


def _split_old(vid: str) -> tuple[str, str, str]:
    """`hep-th/9901001v2` -> ('hep-th/9901001', 'v', '2')."""
    archive, _, number = vid.rpartition("/")
    digits, sep, version = number.partition("v")
    return f"{archive}/{digits}", sep, version


def _headers(body: bytes, ctype: str) -> dict[str, str]:
    return {
        "Content-Type": ctype,
        "Content-Length": str(len(body)),
        "ETag": '"' + hashlib.sha256(body).hexdigest()[:16] + '"',
        "Last-Modified": formatdate(1_700_000_000, usegmt=True),
    }


def normalise(url: str) -> str:
    """One spelling per URL (httpx percent-encodes non-ASCII paths on the wire)."""
    import httpx

    return str(httpx.URL(url))


# --- the run ---------------------------------------------------------------------------------


def prepare(manifest: Manifest, library: Path | None) -> tuple[Manifest, Path, bool]:
    """A copy of the manifest whose library and lock live in a scratch folder.

    With `library`, that folder is used and kept (to look at the result); it must not be
    the manifest's real library, and must be empty or a previous smoke library (which is
    emptied first).
    """
    keep = library is not None
    if library is None:
        root = Path(tempfile.mkdtemp(prefix="fetcher-smoke-"))
        lib = root / "downloads"
        home = root
    else:
        lib = library.absolute()
        if lib.resolve() == manifest.library.resolve():
            raise UsageError(
                f"--library {library} is the manifest's own library; smoke fills a library "
                "with synthetic files, so give it another folder"
            )
        marker = lib / STATE_DIR / SMOKE_DIR
        if lib.exists() and any(lib.iterdir()):
            if not marker.is_dir():
                raise UsageError(
                    f"--library {library} is not empty and was not made by fetcher smoke; "
                    "give an empty or new folder"
                )
            shutil.rmtree(lib)  # a previous smoke library: every run starts from nothing
        home = marker
    home.mkdir(parents=True, exist_ok=True)
    (lib / STATE_DIR / SMOKE_DIR).mkdir(parents=True, exist_ok=True)
    path = home / "manifest.toml"
    with open(path, "wb") as fh:  # the user's text, for humans looking at the result
        fh.write(manifest.path.read_bytes() if manifest.path.exists() else b"")
    entries = tuple(replace(e, sha256=None) for e in manifest.entries)
    settings = replace(manifest.settings, library=lib)
    return replace(manifest, path=path, settings=settings, entries=entries), home, keep


def run(
    manifest: Manifest,
    *,
    library: Path | None = None,
    progress: Callable[[Event], None] | None = None,
) -> SmokeReport:
    """Sync `manifest` offline against synthetic responses and check every stage."""
    from .http import Policy
    from .report import Options
    from .sync import Syncer

    started = time.monotonic()
    copy, home, keep = prepare(manifest, library)
    report = SmokeReport(manifest.path, copy.library, keep)
    pins = sum(1 for e in manifest.entries if e.sha256)
    if pins:
        report.notes.append(
            f"note: {pins} sha256 pin(s) not checked (synthetic bytes cannot match them; "
            "a real `fetcher sync` enforces them)"
        )
    try:
        report.stages.append(_ids(manifest))
        mock = Mock(copy)
        policy = Policy(attempts=2, backoff_initial=0.0, backoff_max=0.0, min_rate=0.0)

        def syncer() -> Syncer:
            return Syncer(
                copy,
                Options(),
                progress=progress,
                clock=FakeClock(),
                policy=policy,
                transport=mock.transport,
            )

        try:
            first = syncer().run()
        except FetcherError as exc:
            report.stages.append(Stage("metadata", "failed", f"the sync stopped: {exc}"))
            return report
        failed = {e.key for e in first.entries if e.status == "failed"}
        report.stages.append(_metadata(copy, mock, failed))
        report.stages.append(_files(copy, mock, first))
        report.stages.append(_verify(copy, failed))
        report.stages.append(_lock(copy, mock, failed))
        if failed:
            detail = f"not run: {len(failed)} entries failed in the first sync"
            report.stages.append(Stage("resync", "skipped", detail))
        else:
            before = mock.requests
            second = syncer().run()
            report.stages.append(_resync(second, mock.requests - before))
        report.stages.append(_catalog(copy))
        report.requests = mock.requests
        report.unexpected = list(mock.unexpected)
        if mock.unexpected:
            report.stages.append(
                Stage("requests", "failed", "requests nobody expected", list(mock.unexpected))
            )
        return report
    finally:
        report.seconds = time.monotonic() - started
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


# --- the checks ------------------------------------------------------------------------------


def _ids(manifest: Manifest) -> Stage:
    arxiv = [e for e in manifest.entries if e.kind == "arxiv"]
    urls = [e for e in manifest.entries if e.kind == "url"]
    old = sum(1 for e in arxiv if e.arxiv and e.arxiv.is_old_style)
    pinned = sum(1 for e in arxiv if e.arxiv and e.arxiv.version)
    html = sum(1 for e in urls if e.format == "html")
    detail = (
        f"{len(arxiv)} arXiv ids valid ({old} old-style, {pinned} with a pinned version); "
        f"{len(urls)} URLs ({len(urls) - html} pdf, {html} html)"
    )
    return Stage("ids", "ok", detail)


def _metadata(copy: Manifest, mock: Mock, failed: set[str]) -> Stage:
    from .library import Library

    problems = []
    library = Library(copy.library)
    lock = read_lock(copy.lock_path)
    arxiv = [e for e in copy.entries if e.kind == "arxiv"]
    for entry in arxiv:
        assert entry.arxiv is not None
        if entry.key in failed:
            continue  # the files stage says why
        paper = mock.papers[entry.arxiv.base]
        record = lock.get(entry.key)
        sidecar = library.read_sidecar(record.file) if record else None
        if sidecar is None:
            problems.append(f"{entry.key}: no metadata sidecar")
            continue
        got = (sidecar.get("title"), tuple(sidecar.get("authors") or ()), sidecar.get("version"))
        want = (paper.title, paper.authors, paper.version)
        if got != want:
            problems.append(f"{entry.key}: sidecar has {got!r}, the feed said {want!r}")
    batches = mock.api_batches
    if any(n > 100 for n in batches):
        problems.append(f"an API request asked for more than 100 ids: {batches}")
    checked = len([e for e in arxiv if e.key not in failed])
    detail = (
        f"{len(batches)} API request(s) for {len(arxiv)} ids; "
        f"{checked - len(problems)} sidecars with title, authors and version"
    )
    return Stage.of("metadata", detail, problems)


def _files(copy: Manifest, mock: Mock, report: Report) -> Stage:
    problems = []
    lock = read_lock(copy.lock_path)
    owners: dict[str, str] = {}
    for entry_report in report.entries:
        if entry_report.status == "failed":
            problems.append(f"{entry_report.key}: {entry_report.error}")
    for entry in copy.entries:
        record = lock.get(entry.key)
        if record is None:
            continue
        if record.file in owners:
            problems.append(f"{entry.key} and {owners[record.file]} share the file {record.file}")
        owners[record.file] = entry.key
        path = copy.library / record.file
        served = mock.bodies.get(normalise(record.url))
        if not path.is_file():
            problems.append(f"{entry.key}: {record.file} is not in the library")
        elif served is None:
            problems.append(f"{entry.key}: {record.url} was never served")
        elif hash_file(path)[0] != hashlib.sha256(served).hexdigest():
            problems.append(f"{entry.key}: {record.file} differs from the bytes served")
    stored = len(owners) - sum(1 for p in problems if "differs" in p or "not in" in p)
    detail = f"{stored} of {len(copy.entries)} files stored, each identical to the bytes served"
    return Stage.of("files", detail, problems)


def _verify(copy: Manifest, failed: set[str]) -> Stage:
    from .verify import verify

    problems = [
        f"{p.kind} {p.file or p.key}: {p.detail}" for p in verify(copy) if p.key not in failed
    ]
    return Stage.of("verify", "fetcher verify: every stored file matches the lock", problems)


def _lock(copy: Manifest, mock: Mock, failed: set[str]) -> Stage:
    problems = []
    lock = read_lock(copy.lock_path)
    if not copy.lock_path.exists():
        problems.append("manifest.lock was not written")
    keys = {e.key for e in copy.entries}
    for key in sorted(keys - set(lock) - failed):
        problems.append(f"{key}: not in manifest.lock")
    for key in sorted(set(lock) - keys):
        problems.append(f"{key}: in manifest.lock but not in the manifest")
    for entry in copy.entries:
        record = lock.get(entry.key)
        if record is None:
            continue
        if entry.arxiv is not None:
            want = mock.papers[entry.arxiv.base].version
            if record.version != want:
                problems.append(f"{entry.key}: locked version {record.version}, served {want}")
        served = mock.bodies.get(normalise(record.url))
        if served is not None and record.sha256 != hashlib.sha256(served).hexdigest():
            problems.append(f"{entry.key}: the locked sha256 is not that of the bytes served")
    detail = f"manifest.lock: {len(lock)} entries; versions and hashes agree with what was served"
    return Stage.of("lock", detail, problems)


def _resync(report: Report, requests: int) -> Stage:
    problems = [
        f"{e.key}: {e.status}" + (f" ({e.error})" if e.error else "")
        for e in report.entries
        if e.status != "skipped"
    ]
    if requests:
        problems.append(f"{requests} request(s) made; a complete library needs none")
    detail = f"a second sync skipped all {len(report.entries)} entries with {requests} requests"
    return Stage.of("resync", detail, problems)


def _catalog(copy: Manifest) -> Stage:
    from .catalog import INDEX_HTML, INDEX_MD

    problems = []
    index = copy.library / INDEX_HTML
    for name in (INDEX_MD, INDEX_HTML):
        if not (copy.library / name).is_file():
            problems.append(f"{name} was not written")
    if index.is_file():
        text = index.read_text(encoding="utf-8")
        for entry in copy.entries:
            if f'data-key="{html.escape(entry.key)}"' not in text:
                problems.append(f"{entry.key}: not in {INDEX_HTML}")
    detail = f"{INDEX_MD} and {INDEX_HTML} list all {len(copy.entries)} entries"
    return Stage.of("catalog", detail, problems)
