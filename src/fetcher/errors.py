"""The exception tree of fetcher.

Subclasses are grouped by what the caller does next: fix the input (exit 2), wait for
another process (exit 75), or accept that one entry failed and carry on (exit 1).
Every message says what was expected, what was found and what to do.
"""

from __future__ import annotations

from pathlib import Path


class FetcherError(Exception):
    """Base of every error fetcher raises on purpose."""

    exit_code = 1


# --- the input is wrong: nothing was fetched -------------------------------------------


class UsageError(FetcherError):
    """The command line or its arguments are wrong."""

    exit_code = 2


class ManifestError(UsageError):
    """The manifest is missing, unreadable or invalid; names file and line when known."""

    def __init__(
        self,
        message: str,
        path: Path | str | None = None,
        line: int | None = None,
        column: int | None = None,
    ):
        self.path = Path(path) if path is not None else None
        self.line = line
        self.column = column
        self.detail = message
        where = ""
        if self.path is not None:
            where = f"{self.path}: "
            if line:
                where = f"{self.path}:{line}:{column}: " if column else f"{self.path}:{line}: "
        super().__init__(where + message)


class InvalidArxivId(UsageError):
    """A string is not an arXiv identifier in any accepted form."""


# --- somebody else holds the library ----------------------------------------------------


class LibraryBusy(FetcherError):
    """Another fetcher process holds the library and the caller chose not to wait."""

    exit_code = 75


# --- one entry failed; the run goes on --------------------------------------------------


class EntryError(FetcherError):
    """One entry could not be brought in; the other entries are still done."""


class NotFound(EntryError):
    """The server says the resource does not exist (404/410, or absent from the arXiv API)."""


class Unreachable(EntryError):
    """The URL cannot be requested at all: no such host (DNS), or not a valid URL."""


class HTTPStatusError(EntryError):
    """A status that retrying will not fix (400, 401, 403 from a non-arXiv host, ...)."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


class TransientError(EntryError):
    """A fault that may pass: 5xx, 429, timeouts, resets, a body cut short."""

    def __init__(self, message: str, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class RetryLater(EntryError):
    """The server asked us to come back later than we are willing to wait in this run."""


class Blocked(EntryError):
    """arXiv answered 403: we are being blocked, so all arXiv traffic of the run stops."""


class ContentError(EntryError):
    """The body is not what the entry expects: HTML instead of PDF, truncated, too large."""


class IntegrityError(EntryError):
    """The stored bytes do not hash to the pinned or locked sha256."""


class StorageError(EntryError):
    """The disk refused the write: full, read-only, permission denied."""


# What a sync stopped by Ctrl-C or SIGTERM says (the message of its `Cancelled`).
INTERRUPTED = "interrupted; partial downloads are kept and resume next time"


class Cancelled(FetcherError):
    """Ctrl-C or SIGTERM: the run stopped early; partial files are kept for resume."""

    exit_code = 130


class LockedError(EntryError):
    """`--locked` forbids the change to manifest.lock that this entry would need."""
