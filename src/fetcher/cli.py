"""The command line: the only place that prints or exits.

Every command parses its arguments, calls the library, and turns the result or error
into lines (or one JSON document with --json) and an exit code. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from . import __version__
from .errors import Cancelled, FetcherError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUSY = 75
EXIT_CANCELLED = 130

EPILOG = """\
examples:
  fetcher sync                      download everything in ./manifest.toml
  fetcher sync --json -q            for scripts: one JSON report on stdout
  fetcher sync 1706.03762 gpt1      only these entries
  fetcher verify                    re-hash every file against manifest.lock
  fetcher add 1706.03762 https://example.org/paper.pdf --name example

exit codes: 0 ok; 1 some entries failed; 2 usage or manifest error; 75 library busy
(--no-wait); 130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"fetcher: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


class Output:
    """Where lines go: results to stdout, problems to stderr, nothing extra when quiet."""

    def __init__(self, *, json_mode: bool, quiet: bool, verbose: bool):
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.out: IO[str] = sys.stdout
        self.err: IO[str] = sys.stderr
        self._lock = threading.Lock()

    def info(self, line: str) -> None:
        if not self.quiet and not self.json_mode:
            self._write(self.out, line)

    def debug(self, line: str) -> None:
        if self.verbose and not self.json_mode:
            self._write(self.err, line)

    def warn(self, line: str) -> None:
        if not self.quiet:
            self._write(self.err, f"warning: {line}")

    def error(self, line: str) -> None:
        self._write(self.err, line)

    def json(self, data: Any) -> None:
        self.out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        self.out.flush()

    def _write(self, stream: IO[str], line: str) -> None:
        with self._lock:
            bars = _active_bars()
            if bars:
                from tqdm import tqdm

                tqdm.write(line, file=stream)
            else:
                stream.write(line + "\n")
                stream.flush()


_BARS: list[Any] = []


def _active_bars() -> bool:
    return bool(_BARS)


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


# --- shared options --------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every command takes, before or after the command name."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "-m",
        "--manifest",
        metavar="PATH",
        default=default,
        help="the manifest (default: ./manifest.toml)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default if not top else False,
        help="one JSON document on stdout instead of human lines",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default if not top else False,
        help="errors only (for cron)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default if not top else False,
        help="say more (retries, waits, skipped entries)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fetcher",
        description="Turn a reading list of papers (manifest.toml) into a local library: "
        "arXiv papers and direct URLs, fetched politely, resumably, sha256-verified.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fetcher {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p, top=False)
        return p

    p = command(
        "sync",
        "bring the library in line with the manifest: fetch what is missing or damaged",
        "fetcher sync --json        # or: fetcher sync 1706.03762 gpt1",
    )
    p.add_argument("keys", nargs="*", metavar="KEY", help="only these entries (keys or ids)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; no network, no writes")
    p.add_argument(
        "--locked",
        action="store_true",
        help="fail instead of changing manifest.lock (for CI)",
    )
    p.add_argument("--upgrade", action="store_true", help="fetch newer arXiv versions")
    p.add_argument(
        "--prune", action="store_true", help="delete library files no longer in the manifest"
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="exit 75 at once if another sync holds the library",
    )
    p.set_defaults(handler=cmd_sync)

    p = command(
        "verify",
        "re-hash every file against manifest.lock; name each missing or changed one",
        "fetcher verify",
    )
    p.set_defaults(handler=cmd_verify)
    return parser


# --- sync ---------------------------------------------------------------------------------------


class _Bars:
    """tqdm bars on a terminal: entries done/total, and bytes of the file in flight."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.entries: Any = None
        self.files: dict[str, Any] = {}
        self._lock = threading.Lock()

    def handle(self, event: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        with self._lock:
            if event.kind == "plan":
                self.entries = tqdm(
                    total=event.total,
                    unit="entry",
                    desc="entries",
                    file=sys.stderr,
                    position=0,
                    leave=False,
                )
                _BARS.append(self.entries)
            elif event.kind == "bytes" and event.key:
                bar = self.files.get(event.key)
                if bar is None:
                    bar = tqdm(
                        total=event.expected,
                        unit="B",
                        unit_scale=True,
                        desc=event.key,
                        file=sys.stderr,
                        leave=False,
                        position=1 + len(self.files),
                    )
                    self.files[event.key] = bar
                    _BARS.append(bar)
                if event.expected and bar.total != event.expected:
                    bar.total = event.expected
                bar.update(event.received - bar.n)
            elif event.kind == "done" and event.key:
                bar = self.files.pop(event.key, None)
                if bar is not None:
                    bar.close()
                    _BARS.remove(bar)
                if self.entries is not None:
                    self.entries.update(1)

    def close(self) -> None:
        for bar in list(_BARS):
            bar.close()
        _BARS.clear()


def _entry_line(report: Any) -> str:
    if report.status == "downloaded":
        version = f" v{report.version}" if report.version else ""
        return f"downloaded {report.key}{version} -> {report.path} ({human_size(report.size)})"
    if report.status == "skipped":
        return f"present    {report.key} ({report.path})"
    if report.status == "would-download":
        return f"would get  {report.key} ({report.reason})"
    return f"FAILED     {report.key}: {report.error}"


def cmd_sync(args: argparse.Namespace, out: Output) -> int:
    from .manifest import load
    from .sync import Event, Options, Syncer

    manifest = load(_manifest_path(args))
    options = Options(
        dry_run=args.dry_run,
        locked=args.locked,
        upgrade=args.upgrade,
        prune=args.prune,
        keys=tuple(args.keys),
        wait=not args.no_wait,
    )
    bars = _Bars(enabled=sys.stderr.isatty() and not out.quiet and not out.json_mode)

    def progress(event: Event) -> None:
        bars.handle(event)
        if event.kind == "done" and event.report is not None:
            report = event.report
            if report.status == "failed":
                out.error(_entry_line(report))
            elif report.status == "skipped":
                out.debug(_entry_line(report))
            else:
                out.info(_entry_line(report))
            for warning in report.warnings:
                out.warn(f"{report.key}: {warning}")
        elif event.kind in ("warning", "waiting") and event.message and not event.key:
            out.warn(event.message)
        elif event.kind == "retry" and event.message:
            out.debug(f"retry {event.key}: {event.message}")

    started = time.monotonic()
    cancel = threading.Event()
    syncer = Syncer(manifest, options, progress=progress, cancel=cancel)
    with _signals(cancel):
        try:
            report = syncer.run()
        finally:
            bars.close()
    elapsed = time.monotonic() - started
    if out.json_mode:
        out.json(report.to_json())
    else:
        for report_entry in report.entries:
            if report.dry_run:
                out.info(_entry_line(report_entry))
        counts = report.counts
        summary = (
            f"{len(report.entries)} entries: {counts['downloaded']} downloaded, "
            f"{counts['skipped']} present, {counts['failed']} failed"
        )
        if report.dry_run:
            summary = (
                f"dry run: {counts.get('would-download', 0)} to fetch, "
                f"{counts['skipped']} present; nothing was fetched"
            )
        else:
            summary += f" ({report.requests} requests, {elapsed:.1f}s)"
        if report.ok:
            out.info(summary)
        else:
            out.error(summary)
    return EXIT_OK if report.ok else EXIT_FAILED


class _signals:
    """SIGTERM acts like Ctrl-C: stop cleanly, keep partial files for resume."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.previous: Any = None

    def __enter__(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.cancel.set()
            raise KeyboardInterrupt

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, on_term)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


# --- verify -------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from .manifest import load
    from .verify import verify

    manifest = load(_manifest_path(args))
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not (sys.stderr.isatty() and not out.quiet and not out.json_mode):
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(
                total=total, unit="B", unit_scale=True, desc="verify", file=sys.stderr, leave=False
            )
        bar.update(done - bar.n)

    try:
        problems = verify(manifest, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if out.json_mode:
        out.json({"ok": not problems, "problems": [p.to_json() for p in problems]})
    else:
        for problem in problems:
            name = problem.file or problem.key
            out.error(f"{problem.kind:<10} {name}: {problem.detail}")
        if not problems:
            out.info(f"all files match {manifest.lock_path.name}")
    return EXIT_FAILED if problems else EXIT_OK


# --- main -----------------------------------------------------------------------------------------


def _manifest_path(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "manifest", None) or "manifest.toml")


Handler = Callable[[argparse.Namespace, Output], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    out = Output(json_mode=args.json, quiet=args.quiet, verbose=args.verbose)
    try:
        return handler(args, out)
    except Cancelled as exc:
        out.error(f"fetcher: {exc}")
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        out.error("fetcher: interrupted; partial downloads are kept and resume next time")
        return EXIT_CANCELLED
    except FetcherError as exc:
        out.error(f"fetcher: error: {exc}")
        return exc.exit_code
    except BrokenPipeError:
        return EXIT_FAILED
    except OSError as exc:
        out.error(f"fetcher: error: {exc.strerror or exc} ({getattr(exc, 'filename', '')})")
        return EXIT_FAILED


def run() -> NoReturn:  # pragma: no cover - console script convenience
    raise SystemExit(main())


__all__ = ["UsageError", "main"]
