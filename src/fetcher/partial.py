"""Partial downloads at rest: the note beside each one, and the sweep of dead ones.

A partial file `<library>/.fetcher/partial/NAME.part` is the prefix of a body being
downloaded; its note `NAME.part.json` says of what (URL, validators, announced size, the
entry's key) and how much of it is known to be on disk (`durable`: the length at the
last fsync, and `boot`: the machine's boot id then). Bytes written and not fsynced
survive a killed process (they are in the page cache) but not a power cut: so the whole
partial is resumed on the same boot, and only its durable prefix after a reboot. Apart
from `download`, which writes them, so a sync with nothing to do can sweep them without
importing the download machinery.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PARTIAL_MAX_AGE = 14 * 86400.0  # a partial older than this is not worth resuming
TEMP_MAX_AGE = 3600.0  # an atomic write's temporary file lives milliseconds
_TEMP_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")  # `.NAME.XXXXXXXX.tmp`


@dataclass
class Note:
    """What a partial file is a prefix of: the URL, its validators, its announced size,
    the entry it belongs to (so a later sync can tell a stale partial from a live one)
    and its durable length (bytes fsynced; None in notes of older versions) on the boot
    `boot` (see `boot_id`)."""

    url: str
    etag: str | None
    last_modified: str | None
    key: str | None = None
    total: int | None = None
    durable: int | None = None
    boot: str | None = None

    def resumable_length(self, size: int) -> int:
        """How much of a partial of `size` bytes may be trusted: all of it on the boot
        that wrote it; after a reboot (or where boots cannot be told apart) only what was
        fsynced."""
        if self.durable is None:  # a note of fetcher 0.1: it knew no better
            return size
        now = boot_id()
        if now is not None and self.boot == now:
            return size
        return min(size, self.durable)

    @property
    def validator(self) -> str | None:
        """If-Range takes a strong ETag, else a Last-Modified date."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def continues(self, etag: str | None, last_modified: str | None, total: int | None) -> bool:
        """Can a 206 with these headers continue the bytes this note describes?

        The ETag decides when both sides have one; else Last-Modified; a different total
        size always means another file. What cannot be compared is not held against it
        (the server already checked If-Range).
        """
        if self.total is not None and total is not None and self.total != total:
            return False
        if self.etag and etag:
            return self.etag == etag
        if self.last_modified and last_modified:
            return self.last_modified == last_modified
        return True

    def to_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "key": self.key,
            "total": self.total,
            "durable": self.durable,
            "boot": self.boot,
        }


def read_note(note_path: Path) -> Note | None:
    """The note beside a partial file, or None if absent or unreadable."""
    try:
        data = json.loads(note_path.read_bytes())
        total, durable = data.get("total"), data.get("durable")
        return Note(
            str(data["url"]),
            data.get("etag"),
            data.get("last_modified"),
            data.get("key"),
            int(total) if isinstance(total, int) else None,
            int(durable) if isinstance(durable, int) and durable >= 0 else None,
            data.get("boot") if isinstance(data.get("boot"), str) else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@cache
def boot_id() -> str | None:
    """This boot of the machine (Linux); None where it cannot be known."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def write_note(note_path: Path, note: Note) -> None:
    """Replace the note. Not fsynced: a note lost with the power is a partial restarted,
    and a stale `durable` is smaller than the truth, never larger."""
    tmp = note_path.with_name(note_path.name + ".new")
    tmp.write_text(json.dumps(note.to_json()))
    os.replace(tmp, note_path)


def clean_partials(
    partial_dir: Path,
    keys: Collection[str],
    now: float,
    *,
    temps: Iterable[tuple[Path, str]] = (),
    max_age: float = PARTIAL_MAX_AGE,
    keep_key: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Remove what no later sync can resume; returns the paths removed.

    Call it under the library lock: then every partial file belongs to a process that
    is gone. Kept: a partial whose note names an entry still in the manifest (`keys`,
    or a key `keep_key` says another manifest of the library still has; a note without
    a key is kept too) and that is younger than `max_age`; the next fetch of that entry
    resumes it with `If-Range`, or restarts it if the URL or the server's version
    changed. Removed: partials without a readable note (never resumable), notes without
    a partial, partials of entries no longer in the manifest, old ones, and the
    temporary files an interrupted atomic write left (`temps`: folder and the file name
    its temporary files start with, e.g. `(library, "")` or `(folder, "manifest.lock")`;
    only names of the form `.NAME.XXXXXXXX.tmp`, older than an hour).
    Partial files live only under `.fetcher/partial/`, so none is ever taken for a
    complete file.
    """
    wanted = set(keys)
    removed: list[Path] = []

    def remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)

    def live(key: str | None) -> bool:
        if key is None or key in wanted:
            return True
        return keep_key is not None and keep_key(key)

    try:
        names = sorted(os.listdir(partial_dir))
    except OSError:
        names = []
    present = set(names)
    for name in names:
        path = partial_dir / name
        if name.endswith((".part.json", ".part.json.new")):
            if name.endswith(".new") or name[: -len(".json")] not in present:
                remove(path)  # a note whose partial is gone, or a torn note write
            continue
        if not name.endswith(".part"):
            continue
        note_path = partial_dir / (name + ".json")
        note = read_note(note_path)
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        if note is None or not live(note.key) or age > max_age:
            remove(path)
            remove(note_path)
    for folder, prefix in temps:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for item in entries:
            match = _TEMP_NAME.match(item.name)
            if match is None or not match.group(1).startswith(prefix):
                continue
            with contextlib.suppress(OSError):
                old = now - item.stat(follow_symlinks=False).st_mtime > TEMP_MAX_AGE
                if old and item.is_file(follow_symlinks=False):
                    remove(Path(item.path))
    return removed
