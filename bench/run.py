"""fetcher's benchmarks: every figure against a loopback fake server, printed with its target.

    python bench/run.py                      # all four: cold warm scale large
    python bench/run.py warm scale           # some of them
    python bench/run.py --json results.json  # also write the figures as JSON

The real `fetcher` CLI runs as a subprocess, as users run it; the server runs in its own
process (bench/server.py) so its GIL never slows the client. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SEED = REPO / "manifest.toml"

COLD_INTERVAL = 0.25
COLD_PDF_SIZE = 1_000_000  # bytes per synthetic paper; real arXiv PDFs are ~0.2-10 MB
WARM_RUNS = 10
SCALE_ENTRIES = 10_000
SCALE_PDF_SIZE = 2048
SCALE_RUNS = 3
LARGE_BYTES = 1 << 30
SMALL_BYTES = 10 << 20
LARGE_RUNS = 2
HEAVY = (
    "httpx",
    "httpcore",
    "h11",
    "arxiv",
    "requests",
    "urllib3",
    "lxml",
    "feedparser",
    "tenacity",
    "tqdm",
    "tomlkit",
    "ssl",
    "certifi",
    "idna",
)
BENCHMARKS = ("cold", "warm", "scale", "large")


# --- running things ------------------------------------------------------------------------


@dataclass
class Run:
    """One finished subprocess: exit code, wall seconds, peak RSS (KiB), output."""

    returncode: int
    wall: float
    maxrss_kib: int
    stdout: str
    stderr: str
    started_at: float = 0.0  # time.time() at spawn, comparable with the server's log

    def check(self, what: str) -> Run:
        if self.returncode != 0:
            raise SystemExit(
                f"bench: {what} exited {self.returncode}\n--- stdout\n{self.stdout[-2000:]}"
                f"\n--- stderr\n{self.stderr[-2000:]}"
            )
        return self


def run(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 600) -> Run:
    """Run `cmd`; wall time from spawn to exit, peak RSS of that process from wait4()."""
    env = dict(os.environ)
    env.pop("FORCE_COLOR", None)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started_at = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        maxrss = usage.ru_maxrss // (1024 if sys.platform == "darwin" else 1)
        out.seek(0)
        err.seek(0)
        return Run(
            proc.returncode,
            wall,
            maxrss,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            started_at,
        )


def fetcher_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m fetcher`."""
    script = Path(sys.executable).parent / "fetcher"
    if script.exists():
        return [str(script)]
    found = shutil.which("fetcher")
    return [found] if found else [sys.executable, "-m", "fetcher"]


def fetcher_python() -> str:
    """The interpreter that runs the `fetcher` command (its shebang), for fair baselines."""
    first = fetcher_command()[0]
    if first == sys.executable:
        return first
    try:
        line = Path(first).read_bytes().split(b"\n", 1)[0].decode()
    except OSError:
        return sys.executable
    if line.startswith("#!") and "python" in line and " " not in line[2:].strip():
        return line[2:].strip()
    return sys.executable


def fetcher(*args: str, cwd: Path | None = None, timeout: float = 600) -> Run:
    return run([*fetcher_command(), *args], cwd=cwd, timeout=timeout)


class Server:
    """bench/server.py in its own process; orders go over its stdin, not over HTTP."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[str] = self.proc.stdin
        self._out: IO[str] = self.proc.stdout
        hello = json.loads(self._out.readline())
        self.url: str = hello["url"]
        self.web: str = hello["web"]
        self.big: str = hello["big"]

    def ask(self, **order: Any) -> dict[str, Any]:
        self._in.write(json.dumps(order) + "\n")
        self._in.flush()
        answer: dict[str, Any] = json.loads(self._out.readline())
        if not answer.get("ok"):
            raise SystemExit(f"bench: the server refused {order}: {answer.get('error')}")
        return answer

    def load(self, manifest: Path, pdf_size: int) -> int:
        return int(self.ask(op="load", manifest=str(manifest), pdf_size=pdf_size)["entries"])

    def log(self) -> list[Request]:
        return [Request(*row) for row in self.ask(op="log")["log"]]

    def reset(self) -> None:
        self.ask(op="reset")

    def close(self) -> None:
        try:
            self._in.write(json.dumps({"op": "quit"}) + "\n")
            self._in.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@contextmanager
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


@dataclass
class Request:
    method: str
    path: str
    status: int
    start: float
    end: float | None

    @property
    def arxiv(self) -> bool:
        return self.path.startswith(("/api/", "/pdf/"))


def spacing(requests: list[Request], interval: float) -> tuple[int, float | None]:
    """(breaches, smallest gap) among consecutive arXiv request starts.

    A breach is a gap under the interval by more than 2 ms: the server stamps a start
    once it has parsed the request head, so a correctly spaced client shows gaps a hair
    under the interval now and then."""
    starts = sorted(r.start for r in requests if r.arxiv)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    return sum(1 for g in gaps if g < interval - 0.002), (min(gaps) if gaps else None)


def point_at(
    text: str,
    url: str,
    *,
    arxiv_interval: float,
    host_interval: float = 0.0,
    extra: str = "",
    web: str | None = None,
) -> str:
    """A manifest text with its endpoints moved to the fake server at `url` and its direct
    URLs to `web` (another port of it, so they are not on arXiv's host)."""
    settings = (
        f'arxiv_api = "{url}/api/query"\narxiv_pdf = "{url}/pdf/{{id}}"\n'
        f"arxiv_interval = {arxiv_interval}\nhost_interval = {host_interval}\n{extra}"
    )
    if re.search(r"^\[settings\]", text, re.MULTILINE):
        text = re.sub(
            r"^\[settings\]\n", "[settings]\n" + settings, text, count=1, flags=re.MULTILINE
        )
    else:
        text = "[settings]\n" + settings + "\n" + text

    def rewrite(m: re.Match[str]) -> str:
        parts = urlsplit(m.group(1))
        return f'url = "{web or url}/web/{parts.netloc}{parts.path}"'

    return re.sub(r'url = "(https?://[^"]+)"', rewrite, text)


# --- reporting -----------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: str
    target: str = ""
    met: bool | None = None  # None: informational


@dataclass
class Results:
    figures: dict[str, list[Figure]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    current: str = ""

    def section(self, name: str, title: str) -> None:
        self.current = name
        self.figures.setdefault(name, [])
        print(f"\n== {name}: {title}", flush=True)

    def fig(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.figures[self.current].append(Figure(name, value, target, met))
        verdict = "" if met is None else ("  ok" if met else "  MISSED")
        tgt = f"   target {target}" if target else ""
        print(f"  {name:<44} {value:>18}{tgt}{verdict}", flush=True)

    def note(self, text: str) -> None:
        self.notes.setdefault(self.current, []).append(text)
        print(f"  {text}", flush=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "figures": {k: [f.__dict__ for f in v] for k, v in self.figures.items()},
            "notes": self.notes,
        }


def machine() -> dict[str, str]:
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def secs(x: float) -> str:
    return f"{x:.3f} s"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


# --- 1. cold sync of the seed manifest -------------------------------------------------------


def bench_cold(res: Results, srv: Server, work: Path, state: dict[str, Any]) -> None:
    interval = COLD_INTERVAL
    res.section(
        "cold",
        f"cold sync of the seed manifest (arXiv interval {interval} s, "
        f"{COLD_PDF_SIZE:,}-byte PDFs)",
    )
    folder = work / "cold"
    folder.mkdir()
    manifest = folder / "manifest.toml"
    manifest.write_text(
        point_at(SEED.read_text(encoding="utf-8"), srv.url, arxiv_interval=interval, web=srv.web)
    )
    entries = srv.load(manifest, COLD_PDF_SIZE)

    rows: list[tuple[str, float, int, int, int, float | None]] = []

    def measure(label: str, cmd: list[str], cwd: Path) -> Run:
        srv.reset()
        result = run(cmd, cwd=cwd).check(label)
        log = srv.log()
        breaches, gap = spacing(log, interval)
        rows.append((label, result.wall, len(log), sum(r.arxiv for r in log), breaches, gap))
        return result

    ours = measure("fetcher sync", [*fetcher_command(), "sync", "-q"], folder)
    fetcher_log = srv.log()
    arxiv_requests = sum(r.arxiv for r in fetcher_log)
    starts = sorted(r.start for r in fetcher_log if r.arxiv)
    last_end = max(r.end or r.start for r in fetcher_log)
    for style, label in (
        ("readme", "arxiv pkg, README style"),
        ("batched", "arxiv pkg, batched query"),
    ):
        out = work / f"peer-{style}"
        measure(
            label,
            [
                sys.executable,
                str(BENCH / "peers.py"),
                style,
                "--manifest",
                str(manifest),
                "--server",
                srv.url,
                "--interval",
                str(interval),
                "--out",
                str(out),
            ],
            work,
        )
        shutil.rmtree(out, ignore_errors=True)

    res.note(f"{entries} entries; wall time of the whole process, start-up included")
    res.note(f"{'':<26}{'wall':>10}{'requests':>10}{'arXiv':>7}{'breaches':>10}{'min gap':>10}")
    for label, wall, total, arx, breaches, gap in rows:
        gap_text = f"{gap:.3f}" if gap is not None else "-"
        res.note(f"{label:<26}{wall:>9.2f}s{total:>10}{arx:>7}{breaches:>10}{gap_text:>10}")
    bound = (arxiv_requests - 1) * interval
    wall = rows[0][1]
    res.fig("fetcher arXiv requests", str(arxiv_requests))
    res.fig("lower bound (arXiv requests - 1) x interval", secs(bound))
    res.fig("fetcher wall time", secs(wall))
    res.note("where fetcher's time over the lower bound goes:")
    res.note(f"  spawn to first request      {starts[0] - ours.started_at:7.3f} s")
    overhead = starts[-1] - starts[0] - bound
    over = sorted((b - a - interval) * 1000 for a, b in itertools.pairwise(starts))
    res.note(
        f"  spacing over the interval   {overhead:7.3f} s (a gap: median"
        f" {statistics.median(over):.1f} ms over, largest {over[-1]:.1f} ms; the next start"
        " is spaced from the moment the answer began)"
    )
    res.note(f"  last request to exit        {ours.started_at + ours.wall - last_end:7.3f} s")
    res.fig("fetcher wall / lower bound", f"{wall / bound:.3f}", "<= 1.05", wall / bound <= 1.05)
    res.fig("fetcher spacing breaches", str(rows[0][4]), "0", rows[0][4] == 0)
    for label, wall_peer, *_ in rows[1:]:
        res.fig(f"{label}: wall / fetcher wall", f"{wall_peer / wall:.3f}")
    state["seed"] = manifest


# --- 2. warm sync ------------------------------------------------------------------------------


def _seed_library(srv: Server, work: Path, state: dict[str, Any]) -> Path:
    """The seed library from the cold benchmark, or a quick sync at interval 0."""
    if "seed" in state:
        return Path(state["seed"])
    folder = work / "warm"
    folder.mkdir()
    manifest = folder / "manifest.toml"
    manifest.write_text(
        point_at(SEED.read_text(encoding="utf-8"), srv.url, arxiv_interval=0.0, web=srv.web)
    )
    srv.load(manifest, 20_000)
    fetcher("sync", "-q", cwd=folder).check("building the seed library")
    return manifest


def _imports(stderr: str) -> list[tuple[str, int, int]]:
    """(module, cumulative microseconds, nesting depth) rows of `-X importtime`."""
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            rows.append((m.group(4), int(m.group(2)), len(m.group(3)) // 2))
    return rows


def bench_warm(res: Results, srv: Server, work: Path, state: dict[str, Any]) -> None:
    res.section("warm", "warm sync of the seed manifest (nothing to do)")
    manifest = _seed_library(srv, work, state)
    folder = manifest.parent
    python = fetcher_python()
    fetcher("sync", "-q", cwd=folder).check("warm-up sync")
    startup = [run([python, "-c", "pass"]).wall for _ in range(WARM_RUNS)]
    srv.reset()
    warm = [fetcher("sync", "-q", cwd=folder).check("warm sync").wall for _ in range(WARM_RUNS)]
    requests = len(srv.log())
    base = statistics.median(startup)
    median = statistics.median(warm)
    res.fig("python start-up (median of 10)", secs(base))
    res.fig(
        "warm sync (median of 10)", secs(median), f"<= {base + 0.25:.3f} s", median <= base + 0.25
    )
    res.fig("warm sync - start-up", secs(median - base), "<= 0.250 s")
    res.fig("requests during warm syncs", str(requests), "0", requests == 0)

    trace = run([python, "-X", "importtime", "-m", "fetcher", "sync", "-q"], cwd=folder)
    trace.check("warm sync under -X importtime")
    rows = _imports(trace.stderr)
    names = {name.split(".")[0] for name, _, _ in rows}
    heavy = sorted(names & set(HEAVY))
    total = sum(c for _, c, depth in rows if depth == 0)
    res.fig("imports on the warm path (cumulative)", f"{total / 1000:.1f} ms")
    res.fig("heavy modules imported", ", ".join(heavy) or "none", "none", not heavy)
    top = sorted((r for r in rows if r[2] <= 1), key=lambda r: -r[1])[:10]
    res.note("largest imports, cumulative (python -X importtime -m fetcher sync -q):")
    for name, cum, depth in top:
        res.note(f"  {cum / 1000:7.1f} ms  {'  ' * depth}{name}")
    res.note(f"not imported: {', '.join(h for h in HEAVY if h not in names)}")


# --- 3. scale: 10,000 entries -------------------------------------------------------------------


def _scale_manifest(url: str, n: int) -> str:
    head = point_at("", url, arxiv_interval=0.0)
    ids = (f"{2301 + i // 99_999}.{i % 99_999 + 1:05d}" for i in range(n))
    return head + "".join(f'\n[[paper]]\narxiv = "{i}"\n' for i in ids)


def bench_scale(res: Results, srv: Server, work: Path, n: int) -> None:
    res.section("scale", f"{n:,}-entry manifest, complete library ({SCALE_PDF_SIZE:,}-byte PDFs)")
    folder = work / "scale"
    folder.mkdir()
    manifest = folder / "manifest.toml"
    manifest.write_text(_scale_manifest(srv.url, n))
    started = time.perf_counter()
    srv.load(manifest, SCALE_PDF_SIZE)
    res.note(f"fake server loaded {n:,} papers in {time.perf_counter() - started:.1f} s")

    srv.reset()
    cold = fetcher("sync", "-q", cwd=folder, timeout=1800).check("cold sync at scale")
    log = srv.log()
    api = sum(1 for r in log if r.path.startswith("/api/"))
    res.note("the library is built by a real cold sync (arxiv_interval = 0) and reused below")
    res.fig("cold sync wall (library build)", secs(cold.wall))
    res.fig("cold sync requests", f"{len(log):,}")
    res.fig(
        "cold sync API requests",
        str(api),
        f"= ceil(N/100) = {math.ceil(n / 100)}",
        api == math.ceil(n / 100),
    )

    srv.reset()
    warm = [
        fetcher("sync", "-q", cwd=folder).check("warm sync at scale").wall
        for _ in range(SCALE_RUNS)
    ]
    requests = len(srv.log())
    res.fig(
        f"warm sync (median of {SCALE_RUNS})",
        secs(statistics.median(warm)),
        "<= 2 s",
        statistics.median(warm) <= 2.0,
    )
    res.fig("requests during warm syncs", str(requests), "0", requests == 0)

    if fetcher("status", "--help").returncode == 0:
        status = [
            fetcher("status", cwd=folder).check("status at scale").wall for _ in range(SCALE_RUNS)
        ]
        res.fig(
            f"status (median of {SCALE_RUNS})",
            secs(statistics.median(status)),
            "<= 2 s",
            statistics.median(status) <= 2.0,
        )
    else:
        res.fig("status", "no `fetcher status`", "<= 2 s", False)

    library = folder / "downloads"
    files = sorted(p.name for p in library.glob("*.pdf"))
    size = sum((library / f).stat().st_size for f in files)
    sha = shutil.which("sha256sum")
    if sha is None:
        res.note("sha256sum not found: verify throughput has no reference here")
        return
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(SCALE_RUNS):  # alternate, so both see the same page cache state
        theirs.append(run([sha, *files], cwd=library).check("sha256sum").wall)
        ours.append(fetcher("verify", "-q", cwd=folder).check("verify at scale").wall)
    ours_tp = size / min(ours) / 1e6
    theirs_tp = size / min(theirs) / 1e6
    res.fig(f"verify {len(files):,} files ({size / 1e6:.1f} MB), best", secs(min(ours)))
    res.fig("sha256sum on the same files, best", secs(min(theirs)))
    res.fig("verify throughput", f"{ours_tp:.1f} MB/s")
    res.fig("sha256sum throughput", f"{theirs_tp:.1f} MB/s")
    res.fig(
        "verify / sha256sum throughput",
        f"{ours_tp / theirs_tp:.2f}",
        ">= 0.8",
        ours_tp / theirs_tp >= 0.8,
    )
    shutil.rmtree(folder, ignore_errors=True)


# --- 4. one large file ----------------------------------------------------------------------------


def bench_large(res: Results, srv: Server, work: Path, size: int) -> None:
    res.section("large", f"one large file ({size / (1 << 20):,.0f} MiB) from the loopback server")
    free = shutil.disk_usage(work).free
    if free < 2.5 * size:
        res.fig("disk space", f"{free / 1e9:.1f} GB free", f">= {2.5 * size / 1e9:.1f} GB", False)
        return
    curl = shutil.which("curl")

    def transfer() -> float:
        """Seconds the server spent sending the last body (head parsed -> last byte out)."""
        rows = srv.ask(op="big_log")["log"]
        return float(rows[-1][2] - rows[-1][1]) if rows else float("nan")

    def sync_once(nbytes: int, then: Callable[[Path], None] | None = None) -> tuple[Run, float]:
        folder = work / f"large-{nbytes}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        settings = point_at("", srv.url, arxiv_interval=0.0, extra=f"max_size = {2 * nbytes}\n")
        paper = f'[[paper]]\nurl = "{srv.big}/{nbytes}.pdf"\nname = "big"\n'
        (folder / "manifest.toml").write_text(settings + paper)
        result = fetcher("sync", "-q", cwd=folder).check(f"sync of a {nbytes}-byte file")
        got = (folder / "downloads" / "big.pdf").stat().st_size
        if got != nbytes:
            raise SystemExit(f"bench: synced {got} bytes, expected {nbytes}")
        sent = transfer()
        if then is not None:
            then(folder)
        shutil.rmtree(folder, ignore_errors=True)
        return result, sent

    def curl_once(nbytes: int) -> tuple[Run, float]:
        assert curl is not None
        dest = work / "curl.out"
        result = run([curl, "-s", "-o", str(dest), f"{srv.big}/{nbytes}.pdf"]).check("curl")
        dest.unlink()
        return result, transfer()

    sha = shutil.which("sha256sum")
    hashing: dict[str, list[float]] = {"fetcher verify": [], "sha256sum": []}

    def hash_both(folder: Path) -> None:
        """Hashing throughput on a file that is big enough to measure hashing."""
        for _ in range(LARGE_RUNS):
            if sha:
                hashing["sha256sum"].append(
                    run([sha, "downloads/big.pdf"], cwd=folder).check("sha256sum").wall
                )
            hashing["fetcher verify"].append(
                fetcher("verify", "-q", cwd=folder).check("verify of the large file").wall
            )

    ours: list[tuple[Run, float]] = []
    theirs: list[tuple[Run, float]] = []
    for i in range(LARGE_RUNS):  # alternate, so both see the same machine state
        if curl:
            theirs.append(curl_once(size))
        ours.append(sync_once(size, hash_both if i == 0 else None))
    small = [sync_once(SMALL_BYTES)[0] for _ in range(LARGE_RUNS)]
    res.note(f"best of {LARGE_RUNS}, alternating; end to end = process wall time (fetcher:")
    res.note("start-up, transfer, sha256, fsync, rename); transfer = the server's send time")
    res.note(f"{'':<16}{'end to end':>12}{'MB/s':>8}{'transfer':>12}{'MB/s':>8}")
    best: dict[str, tuple[float, float]] = {}
    for label, runs in (("curl -o", theirs), ("fetcher sync", ours)):
        if not runs:
            continue
        wall = min(r.wall for r, _ in runs)
        sent = min(t for _, t in runs)
        best[label] = (wall, sent)
        res.note(
            f"{label:<16}{wall:>11.3f}s{size / wall / 1e6:>8.0f}{sent:>11.3f}s"
            f"{size / sent / 1e6:>8.0f}"
        )
    wall, sent = best["fetcher sync"]
    res.fig("fetcher throughput, end to end", f"{size / wall / 1e6:,.0f} MB/s")
    if "curl -o" in best:
        curl_wall, curl_sent = best["curl -o"]
        res.fig("curl -o throughput, end to end", f"{size / curl_wall / 1e6:,.0f} MB/s")
        res.fig(
            "fetcher / curl, end to end",
            f"{curl_wall / wall:.2f}",
            ">= 0.8",
            curl_wall / wall >= 0.8,
        )
        res.fig("fetcher / curl, transfer only", f"{curl_sent / sent:.2f}")
    else:
        res.note("curl not found: no reference throughput")
    steps = json.loads(
        run(
            [
                sys.executable,
                str(BENCH / "anatomy.py"),
                f"{srv.big}/{size}.pdf",
                str(work / "anatomy.out"),
            ]
        )
        .check("bench/anatomy.py")
        .stdout
    )
    res.note("fetcher's body loop, one step at a time (bench/anatomy.py, httpx, in-process):")
    for name, seconds in steps.items():
        res.note(f"  {name:<10}{seconds:>8.3f} s {size / seconds / 1e6:>7.0f} MB/s")
    if hashing["sha256sum"]:
        ours_hash, theirs_hash = min(hashing["fetcher verify"]), min(hashing["sha256sum"])
        res.fig("verify of this file, best", secs(ours_hash))
        res.fig("sha256sum of this file, best", secs(theirs_hash))
        res.fig(
            "verify / sha256sum throughput, large file",
            f"{theirs_hash / ours_hash:.2f}",
            ">= 0.8",
            theirs_hash / ours_hash >= 0.8,
        )
    peak = max(r.maxrss_kib for r, _ in ours)
    peak_small = max(r.maxrss_kib for r in small)
    res.fig(f"peak RSS, {size >> 20} MiB file", mib(peak), "<= 80 MiB", peak <= 80 * 1024)
    res.fig(f"peak RSS, {SMALL_BYTES >> 20} MiB file", mib(peak_small))
    res.fig(
        "peak RSS large / small", f"{peak / peak_small:.3f}", "<= 1.10", peak <= 1.10 * peak_small
    )


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="NAME",
        help=f"which to run: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument(
        "--entries",
        type=int,
        default=SCALE_ENTRIES,
        help="manifest size for `scale` (default %(default)s)",
    )
    parser.add_argument(
        "--large-bytes",
        type=int,
        default=LARGE_BYTES,
        help="file size for `large` (default %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    chosen = args.benchmarks or list(BENCHMARKS)
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    info = machine()
    print(f"fetcher benchmarks, {info['date']}")
    print(
        f"machine: {info['cores']} cores, {info['memory']}, {info['cpu']}, {info['os']}, "
        f"Python {info['python']}"
    )
    print(f"fetcher: {' '.join(fetcher_command())}")
    res = Results()
    state: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="fetcher-bench-"))
    started = time.perf_counter()
    steps: dict[str, Callable[[Server], None]] = {
        "cold": lambda srv: bench_cold(res, srv, work, state),
        "warm": lambda srv: bench_warm(res, srv, work, state),
        "scale": lambda srv: bench_scale(res, srv, work, args.entries),
        "large": lambda srv: bench_large(res, srv, work, args.large_bytes),
    }
    try:
        with server() as srv:
            for name in BENCHMARKS:
                if name in chosen:
                    steps[name](srv)
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    figures = [f for fs in res.figures.values() for f in fs if f.met is not None]
    missed = [f.name for f in figures if not f.met]
    print(
        f"\n{len(figures) - len(missed)}/{len(figures)} targets met in {elapsed:.0f} s"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )
    if args.json:
        data = {
            "machine": info,
            "command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
            "seconds": round(elapsed, 1),
            **res.to_json(),
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
