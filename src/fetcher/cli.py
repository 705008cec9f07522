"""The command line: the only place that prints or exits.

Every command parses its arguments, calls the library, and turns the result or error
into lines (or one JSON document with --json) and an exit code. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

from . import __version__
from .errors import INTERRUPTED, Cancelled, FetcherError, LibraryBusy, UsageError

if TYPE_CHECKING:
    from .http import Policy

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
  fetcher import reading-list.md    add every paper a reading list links to
  fetcher bib --out refs.bib        BibTeX for the library
  fetcher smoke                     the whole sync offline, against mocks (for CI)

exit codes: 0 ok; 1 some entries failed (sync, verify, smoke); 2 usage or manifest error,
or status, bib, add, import could not do their job (e.g. a damaged manifest.lock);
75 library busy (--no-wait); 130 interrupted. With --json every exit prints one JSON
document; a failure is {"ok": false, "error": "...", "exit": N}.
"""

# Commands whose contract has no partial failure (exit 0 or 2): when one of them cannot
# do its job (a damaged manifest.lock, an unwritable --out, even a bug) it exits 2.
NO_PARTIAL_FAILURE = frozenset({"status", "bib", "add", "import"})


class _UsageExit(SystemExit):
    """argparse's exit on a bad command line, keeping its message for the --json error."""

    def __init__(self, message: str):
        super().__init__(EXIT_USAGE)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"fetcher: error: {message}\n")
        raise _UsageExit(message)


class Output:
    """Where lines go: results to stdout, problems to stderr, nothing extra when quiet."""

    def __init__(self, *, json_mode: bool, quiet: bool, verbose: bool):
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.out: IO[str] = sys.stdout
        self.err: IO[str] = sys.stderr
        self.emitted = False  # the JSON document is out: stdout takes nothing more
        self._lock = threading.Lock()

    def info(self, line: str) -> None:
        if not self.quiet and not self.json_mode:
            self._write(self.out, line)

    def attention(self, line: str) -> None:
        """A result line that needs the user's attention: on stdout even with -q (so cron
        mails it), never in --json mode."""
        if not self.json_mode:
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
        self.emitted = True
        _print_json(self.out, data)

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

    p = command(
        "status",
        "one line per entry: present, missing, damaged, never synced; version; size",
        "fetcher status --check-updates   # one API request: which papers have a newer version",
    )
    p.add_argument(
        "--check-updates",
        action="store_true",
        help="ask arXiv (one batched request) which papers have a newer version",
    )
    p.set_defaults(handler=cmd_status)
    _reading_list_commands(command)
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


def env_policy() -> Policy | None:
    """Retry and patience limits with the `FETCHER_*` tuning knobs of the environment
    applied (README, "When things go wrong"); the one place fetcher reads them. A bad
    value is a usage error (exit 2) naming the variable. None when no knob is set (the
    defaults): then a sync with nothing to do never imports the HTTP stack (httpx, ssl,
    tenacity: 0.1 s of a 0.1 s warm sync)."""
    if not any(var.startswith("FETCHER_") and value.strip() for var, value in os.environ.items()):
        return None
    from .http import Policy

    return Policy.from_env(os.environ)


def cmd_sync(args: argparse.Namespace, out: Output) -> int:
    from .manifest import load
    from .report import Event, Options
    from .sync import Syncer

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
    syncer = Syncer(manifest, options, progress=progress, cancel=cancel, policy=env_policy())
    with _signals(cancel):
        try:
            report = syncer.run()
        finally:
            bars.close()
    elapsed = time.monotonic() - started
    for error in report.errors:
        out.error(f"fetcher: {error}")
    if out.json_mode:
        out.json(report.to_json())
    else:
        for report_entry in report.entries:
            if report.dry_run:
                out.info(_entry_line(report_entry))
        for name in report.pruned:
            verb = "would prune" if report.dry_run else "pruned    "
            out.info(f"{verb} {name} (not in the manifest)")
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
        if report.pruned and not report.dry_run:
            summary += f"; {len(report.pruned)} files pruned"
        if report.ok:
            out.info(summary)
        elif not out.quiet:  # -q: one line per failure, nothing more (cron mails them)
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
    from .library import read_lock
    from .manifest import load
    from .verify import verify

    manifest = load(_manifest_path(args))
    show_bar = sys.stderr.isatty() and not out.quiet and not out.json_mode
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(
                total=total, unit="B", unit_scale=True, desc="verify", file=sys.stderr, leave=False
            )
        bar.update(done - bar.n)

    def on_wait() -> None:
        out.warn("another fetcher sync holds the library; verify waits for it")

    try:
        problems = verify(manifest, progress=progress if show_bar else None, on_wait=on_wait)
    finally:
        if bar is not None:
            bar.close()
    if out.json_mode:
        out.json({"ok": not problems, "problems": [p.to_json() for p in problems]})
        return EXIT_FAILED if problems else EXIT_OK
    for problem in problems:
        name = problem.file or problem.key
        out.error(f"{problem.kind:<10} {name}: {problem.detail}")
    if not problems:
        count = len(read_lock(manifest.lock_path))
        out.info(f"all {count} entries match {manifest.lock_path.name}")
    elif not out.quiet:
        kinds: dict[str, int] = {}
        for problem in problems:
            kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
        counted = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        hints = []
        if set(kinds) - {"unexpected"}:
            hints.append("`fetcher sync` repairs missing, damaged and unsynced entries")
        if "unexpected" in kinds:
            hints.append("`fetcher sync --prune` deletes files left from removed entries")
        out.error(f"{len(problems)} problems ({counted}); {'; '.join(hints)}")
    return EXIT_FAILED if problems else EXIT_OK


# --- status -------------------------------------------------------------------------------------


def _listing(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    """Exit 0 once the manifest and the lock load: status reports, it does not judge.

    A manifest.lock that is not a fetcher lock (or cannot be read) is exit 2 with the
    lock's path and what to do (NO_PARTIAL_FAILURE): no status is better than one computed
    from a lock fetcher cannot read.
    """
    from .manifest import load
    from .status import status

    manifest = load(_manifest_path(args))
    report = status(manifest, check_updates=args.check_updates, policy=env_policy())
    if out.json_mode:
        out.json(report.to_json())
        if report.update_error:
            out.error(f"fetcher: could not check for updates: {report.update_error}")
        return EXIT_OK

    def show(line: str, attention: bool) -> None:
        # -q keeps only what needs attention, so `status -q --check-updates` in cron
        # mails you exactly when something is missing, damaged or newer
        if attention:
            out.attention(line)
        else:
            out.info(line)

    width = min(40, max((len(e.key) for e in report.entries), default=3))
    for item in report.entries:
        version = f"v{item.version}" if item.version is not None else "-"
        if item.pinned:
            version += " pinned"
        size = human_size(item.size) if item.size is not None else "-"
        line = f"{item.state:<15} {item.key:<{width}}  {version:<10} {size:>8}"
        if item.newer is not None:
            line += f"  newer: v{item.newer}"
        if item.notes:
            line += f"  ({'; '.join(item.notes)})"
        show(line, item.state != "present" or item.newer is not None or bool(item.notes))
    if not report.lock_exists:
        out.info(f"no {manifest.lock_path.name} yet: `fetcher sync` writes it")
    elif not report.lock_agrees:
        parts = []
        if report.not_in_lock:
            parts.append(f"not in the lock: {_listing(report.not_in_lock)}")
        if report.lock_only:
            parts.append(f"in the lock only: {_listing(report.lock_only)}")
        show(
            f"{manifest.lock_path.name} disagrees with the manifest ({'; '.join(parts)}); "
            "`fetcher sync` updates it, `fetcher sync --locked` refuses to",
            True,
        )
    counts = report.counts
    in_manifest = len(manifest.entries)
    summary = (
        f"{in_manifest} entries: {counts['present']} present, {counts['missing']} missing, "
        f"{counts['damaged']} damaged, {counts['never synced']} never synced"
    )
    if counts["not in manifest"]:
        summary += f"; {counts['not in manifest']} left from entries no longer in the manifest"
    if report.checked_updates and report.update_error is None:
        newer = len(report.newer)
        requests = f"{report.requests} request{'s' if report.requests != 1 else ''}"
        if newer:
            summary += f"; {newer} newer on arXiv ({requests}; `fetcher sync --upgrade` gets them)"
        else:
            summary += f"; no newer versions on arXiv ({requests})"
    out.info(summary)
    if report.update_error is not None:
        out.error(f"fetcher: could not check for updates: {report.update_error}")
    return EXIT_OK


# --- add, import, bib, smoke -------------------------------------------------------------------


def _reading_list_commands(command: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    """The commands that go from a reading list to a library and back."""
    p = command(
        "add",
        "append entries to the manifest, keeping its comments and layout",
        "fetcher add 1706.03762 https://huggingface.co/blog/moe --format html",
    )
    p.add_argument("items", nargs="+", metavar="ID-or-URL", help="arXiv ids or links to add")
    p.add_argument("--name", help="the entry name of a URL (default: from the link)")
    p.add_argument("--format", choices=("pdf", "html"), help="pdf or html (default: from the link)")
    p.add_argument("--sha256", help="pin the bytes of the one entry given")
    p.add_argument("--title", help="a title note for the one entry given")
    p.add_argument("--tag", action="append", default=[], help="a tag for every entry (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="show what would be added; write nothing")
    p.set_defaults(handler=cmd_add)

    p = command(
        "import",
        "find the papers of a reading list (text, Markdown, HTML) and add the new ones",
        "fetcher import reading-list.md      # or: curl -s URL | fetcher import -",
    )
    p.add_argument("file", metavar="FILE", help="the reading list; - for stdin")
    p.add_argument("--tag", action="append", default=[], help="a tag for every entry (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="show what would be added; write nothing")
    p.set_defaults(handler=cmd_import)

    p = command(
        "bib",
        "BibTeX for every entry, from the library's metadata",
        "fetcher bib --out references.bib",
    )
    p.add_argument("--out", metavar="FILE", help="write to FILE (atomically) instead of stdout")
    p.set_defaults(handler=cmd_bib)

    p = command(
        "smoke",
        "the whole sync of the manifest against mocked responses, offline, for CI",
        "fetcher smoke --json",
    )
    p.add_argument(
        "--library",
        metavar="DIR",
        help="build the synthetic library in DIR and keep it (default: a temporary folder)",
    )
    p.set_defaults(handler=cmd_smoke)


def _read_input(name: str, out: Output) -> tuple[str, str]:
    """The text of FILE or stdin, and a label for messages."""
    if name == "-":
        raw = sys.stdin.buffer.read()
        label = "stdin"
    else:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
        label = name
    try:
        return raw.decode("utf-8-sig"), label
    except UnicodeDecodeError:
        out.warn(f"{label} is not UTF-8; read as Latin-1")
        return raw.decode("latin-1"), label


def _lines_note(lines: Sequence[int]) -> str:
    if not lines:
        return ""
    word = "line" if len(lines) == 1 else "lines"
    return f" ({word} {', '.join(str(n) for n in lines[:5])}{', …' if len(lines) > 5 else ''})"


def _show_plan(plan: Any, out: Output, *, dry_run: bool, found: int | None = None) -> int:
    """Print what an add or import did (or would do); the same for both commands."""
    if out.json_mode:
        data = plan.to_json()
        data["dry_run"] = dry_run
        out.json(data)
        return EXIT_OK
    verb = "would add" if dry_run else "added"
    for entry in plan.added:
        if entry.kind == "arxiv":
            out.info(f"{verb:<9} {entry.value}{_lines_note(entry.lines)}")
        else:
            what = "web page" if entry.format == "html" else "PDF"
            out.info(f"{verb:<9} {entry.name} ({what}) {entry.value}{_lines_note(entry.lines)}")
    known = [s for s in plan.skipped if s.duplicate]
    for skip in plan.skipped:
        if not skip.duplicate or out.verbose or len(known) <= 3:
            out.info(f"{'skipped':<9} {skip.value}{_lines_note(skip.lines)}: {skip.reason}")
    if known and not out.verbose and len(known) > 3:
        out.info(f"{'skipped':<9} {len(known)} already in {plan.path.name} (-v lists them)")
    for note in plan.notes:
        out.info(f"{'note':<9} {note}")
    if plan.unchecked:
        out.info(
            f"not checked: {len(plan.unchecked)} direct link(s); fetcher makes no request "
            "while adding, so whether they answer (and are what they claim) is known only "
            "at `fetcher sync`:"
        )
        for entry in plan.unchecked:
            out.info(f"  {entry.name}  {entry.value}")
    arxiv = sum(1 for e in plan.added if e.kind == "arxiv")
    pages = sum(1 for e in plan.added if e.kind == "url" and e.format == "html")
    pdfs = len(plan.added) - arxiv - pages
    name = plan.path.name + (" (new)" if plan.created else "")
    if plan.added:
        summary = (
            f"{len(plan.added)} {'to add to' if dry_run else 'added to'} {name}: {arxiv} arXiv, "
            f"{pdfs} PDF link(s), {pages} web page(s); {len(plan.skipped)} skipped"
        )
    else:
        summary = f"nothing new for {plan.path.name}; {len(plan.skipped)} skipped"
        if found == 0:
            summary = "found no arXiv id or link in the input; nothing added"
    if dry_run:
        summary += " (dry run: nothing written)"
    out.info(summary)
    return EXIT_OK


def cmd_add(args: argparse.Namespace, out: Output) -> int:
    from . import edit

    sha = args.sha256.strip().lower() if args.sha256 else None
    plan = edit.plan_add(
        _manifest_path(args).absolute(),
        args.items,
        name=args.name,
        format=args.format,
        sha256=sha,
        title=args.title,
        tags=args.tag,
    )
    edit.apply(plan, dry_run=args.dry_run)
    return _show_plan(plan, out, dry_run=args.dry_run)


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    from . import edit, finder

    text, label = _read_input(args.file, out)
    suffix = Path(args.file).suffix.lower()
    html = True if suffix in (".html", ".htm") else False if suffix in (".md", ".txt") else None
    found = finder.scan(text, html=html)
    plan = edit.plan_import(
        _manifest_path(args).absolute(), finder.candidates(found), tags=args.tag
    )
    edit.apply(plan, dry_run=args.dry_run)
    out.debug(f"{label}: {len(found)} ids and links found")
    return _show_plan(plan, out, dry_run=args.dry_run, found=len(found))


def cmd_bib(args: argparse.Namespace, out: Output) -> int:
    from .bib import bibliography
    from .library import atomic_write_bytes
    from .manifest import load

    manifest = load(_manifest_path(args))
    text, entries = bibliography(manifest)
    bare = [e.key for e in entries if not e.complete]
    if bare:
        out.warn(
            f"{len(bare)} entries have no metadata yet ({_listing(bare)}): their BibTeX "
            "entries are minimal; run `fetcher sync` first for authors and titles"
        )
    if args.out:
        try:
            atomic_write_bytes(Path(args.out), text.encode("utf-8"), follow_symlinks=True)
        except OSError as exc:
            # name the target, never the temporary file the atomic write failed on
            reason = exc.strerror or str(exc)
            if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename:
                reason = f"{exc.filename} is not a folder"  # from creating its folder
            raise UsageError(
                f"cannot write {args.out}: {reason}; choose another --out file"
            ) from None
    if out.json_mode:
        data: dict[str, Any] = {
            "ok": True,
            "count": len(entries),
            "entries": [
                {"citekey": e.citekey, "key": e.key, "type": e.type, "complete": e.complete}
                for e in entries
            ],
            "out": args.out,
        }
        if not args.out:
            data["bibtex"] = text
        out.json(data)
    elif args.out:
        out.info(f"{len(entries)} BibTeX entries written to {args.out}")
    else:
        out.out.write(text)
        out.out.flush()
    return EXIT_OK


def cmd_smoke(args: argparse.Namespace, out: Output) -> int:
    from .manifest import load
    from .smoke import run

    manifest = load(_manifest_path(args))
    library = Path(args.library) if args.library else None
    where = f"in {library} (kept)" if library else "in a temporary folder (removed after)"
    out.info(
        f"smoke: {manifest.path.name}, {len(manifest.entries)} entries, offline against "
        f"mocked responses; library {where}"
    )
    report = run(manifest, library=library)
    if out.json_mode:
        out.json(report.to_json())
        return EXIT_OK if report.ok else EXIT_FAILED
    for line in report.lines():
        if line.startswith("FAILED") or line.startswith(" "):
            out.error(line)
        else:
            out.info(line)
    for note in report.notes:
        out.info(note)
    failed = [s.name for s in report.stages if not s.ok]
    if failed:
        out.error(f"smoke FAILED at {', '.join(failed)} ({report.seconds:.1f}s)")
        return EXIT_FAILED
    out.info(
        f"smoke passed: {len(report.stages)} stages in {report.seconds:.1f}s, "
        f"{report.requests} mocked requests, no network"
    )
    return EXIT_OK


# --- main -----------------------------------------------------------------------------------------


def _manifest_path(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "manifest", None) or "manifest.toml")


Handler = Callable[[argparse.Namespace, Output], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageExit as exc:
        if _json_requested(sys.argv[1:] if argv is None else argv):
            _print_json(sys.stdout, {"ok": False, "error": exc.message, "exit": EXIT_USAGE})
        raise
    out = Output(json_mode=args.json, quiet=args.quiet, verbose=args.verbose)
    handler: Handler | None = getattr(args, "handler", None)
    error: str | None
    if handler is None:
        parser.print_help(sys.stderr)
        code, error = EXIT_USAGE, "no command given; `fetcher --help` lists them"
    else:
        code, error = _run(handler, args, out)
    if code == EXIT_FAILED and args.command in NO_PARTIAL_FAILURE:
        code = EXIT_USAGE
    if error is not None and out.json_mode and not out.emitted:
        # --json promises one document on stdout, whatever the exit
        with contextlib.suppress(OSError):
            out.json({"ok": False, "error": error, "exit": code})
    return code


def _run(handler: Handler, args: argparse.Namespace, out: Output) -> tuple[int, str | None]:
    """Run one command. An error ends it as one line on stderr and an exit code; returns
    (exit code, that error without the `fetcher:` prefix, or None when the command
    finished on its own)."""
    try:
        return handler(args, out), None
    except Cancelled as exc:
        error, code = str(exc) or INTERRUPTED, EXIT_CANCELLED
        out.error(f"fetcher: {error}")
    except KeyboardInterrupt:
        error, code = INTERRUPTED, EXIT_CANCELLED
        out.error(f"fetcher: {error}")
    except LibraryBusy as exc:
        error, code = str(exc), EXIT_BUSY
        out.error(f"fetcher: error: {error}")
    except FetcherError as exc:
        error, code = str(exc), exc.exit_code
        out.error(f"fetcher: error: {error}")
    except BrokenPipeError:
        return EXIT_FAILED, None  # stdout is gone: nothing more can reach it
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        error, code = f"{exc.strerror or exc}{where}", EXIT_FAILED
        out.error(f"fetcher: error: {error}")
    except Exception as exc:  # a bug in fetcher: one line, the traceback only with -v
        if args.verbose:
            import traceback

            traceback.print_exc()
        error, code = f"internal error: {type(exc).__name__}: {exc}", EXIT_FAILED
        out.error(f"fetcher: {error}; please report it (rerun with -v for the traceback)")
    return code, error


def _json_requested(argv: Sequence[str]) -> bool:
    """Whether a command line argparse refused asked for --json (or a prefix of it)."""
    for arg in argv:
        if arg == "--":
            return False
        if len(arg) > 3 and "--json".startswith(arg):
            return True
    return False


def _print_json(stream: IO[str], data: Any) -> None:
    stream.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    stream.flush()


def run() -> NoReturn:  # pragma: no cover - console script convenience
    raise SystemExit(main())


__all__ = ["UsageError", "main"]
