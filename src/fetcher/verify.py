"""`fetcher verify`: re-hash every library file against `manifest.lock`.

Unlike sync, verify ignores the stat cache: it catches a flipped bit that left size and
mtime alone. Fresh hashes go back into the cache so the next sync repairs what it found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .library import Library, hash_file, read_lock
from .manifest import Manifest

ProblemKind = Literal["missing", "damaged", "unexpected", "unsynced"]


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    file: str
    key: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "key": self.key, "detail": self.detail}


def verify(
    manifest: Manifest,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[Problem]:
    """Every missing, damaged, unexpected or never-synced file of the library.

    `progress(done_bytes, total_bytes)` is called as files are hashed.
    """
    library = Library(manifest.library)
    lock = read_lock(manifest.lock_path)
    problems: list[Problem] = []
    for entry in manifest.entries:
        if entry.key not in lock:
            problems.append(
                Problem("unsynced", "", entry.key, "in the manifest but not in manifest.lock")
            )
    total = 0
    present: list[tuple[str, Path]] = []
    for key, record in sorted(lock.items()):
        path = library.path_of(record.file)
        if not library.is_safe_file(record.file):
            problems.append(Problem("missing", record.file, key, "not in the library"))
            continue
        present.append((key, path))
        total += path.stat().st_size
    done = 0
    for key, path in present:
        record = lock[key]
        digest, size = hash_file(path)
        library.remember(record.file, digest)
        done += size
        if progress is not None:
            progress(done, total)
        if (digest, size) != (record.sha256, record.size):
            problems.append(
                Problem(
                    "damaged",
                    record.file,
                    key,
                    f"sha256 {digest[:12]}… size {size:,}, locked {record.sha256[:12]}… "
                    f"size {record.size:,}",
                )
            )
    library.save_cache()
    known = {r.file for r in lock.values()} | {Path(r.file).stem + ".json" for r in lock.values()}
    known |= {"index.md", "index.html"}
    for name in library.files():
        if name not in known:
            problems.append(Problem("unexpected", name, None, "not described by manifest.lock"))
    return problems
