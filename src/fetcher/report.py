"""What a sync takes and gives back: `Options` in, `Report`/`EntryReport` out, `Event`s
along the way.

Kept apart from `sync` so the CLI, `smoke`, tests and API users can name a run's inputs
and outputs without importing the machinery that performs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EntryReport", "Event", "Options", "ProgressCallback", "Report", "Status"]

Status = Literal["downloaded", "skipped", "failed", "would-download"]


@dataclass
class EntryReport:
    """The outcome of one entry, as `--json` shows it."""

    key: str
    kind: str
    status: Status
    version: int | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "kind": self.kind, "status": self.status}
        if self.version is not None:
            data["version"] = self.version
        for name in ("path", "sha256", "size", "error", "reason"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.warnings:
            data["warnings"] = list(self.warnings)
        return data


@dataclass
class Report:
    entries: list[EntryReport]
    requests: int = 0
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    # not tied to one entry: --locked, a lock file that could not be written, --prune
    errors: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # library files --prune deleted

    @property
    def ok(self) -> bool:
        return not self.errors and all(e.status != "failed" for e in self.entries)

    @property
    def counts(self) -> dict[str, int]:
        counts = {"downloaded": 0, "skipped": 0, "failed": 0}
        for e in self.entries:
            counts[e.status] = counts.get(e.status, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ok": self.ok,
            "entries": [e.to_json() for e in self.entries],
            "counts": self.counts,
        }
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if self.errors:
            data["errors"] = list(self.errors)
        if self.pruned:
            data["pruned"] = list(self.pruned)
        if self.dry_run:
            data["dry_run"] = True
        return data


@dataclass
class Event:
    """Progress reaches the caller through these, never through prints."""

    kind: Literal["plan", "start", "bytes", "done", "warning", "retry", "waiting"]
    key: str | None = None
    total: int | None = None
    received: int | None = None
    expected: int | None = None
    report: EntryReport | None = None
    message: str | None = None


ProgressCallback = Callable[[Event], None]


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    locked: bool = False
    upgrade: bool = False
    prune: bool = False
    keys: tuple[str, ...] = ()
    wait: bool = True
