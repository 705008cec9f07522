"""Which manifests use a library folder, so the upkeep of one spares the files of another.

Two manifests may fill one library (two `.toml` files in one folder, or `library =
"../papers"` in both). Each keeps its own lock (`ml.toml` -> `ml.lock`), and every sync
records its manifest in `<library>/.fetcher/manifests.json`. `sync --prune`, the
cleaning of partial downloads, `status` and `verify` then leave alone every key and
file another manifest still has. A recorded manifest that is gone, or that now points
at another library, no longer counts; one that cannot be read blocks `--prune` (nothing
can be known about its files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from .errors import FetcherError
from .library import Library, atomic_write_json, sidecar_name
from .manifest import Manifest

REGISTRY = "manifests.json"


class OtherManifest(NamedTuple):
    """Another manifest that syncs into the same library, and what it has there."""

    path: Path
    keys: frozenset[str] = frozenset()  # its entries and the keys of its lock
    files: frozenset[str] = frozenset()  # the files its lock records, with their sidecars
    problem: str | None = None  # why it could not be read (then nothing is known)


class Others:
    """Every other manifest of a library, merged. (Plain classes, not dataclasses: this
    module is imported by every sync, and a dataclass costs a millisecond to build.)"""

    def __init__(self, manifests: Iterable[OtherManifest] = ()):
        self.manifests = tuple(manifests)
        self.keys = frozenset().union(*(m.keys for m in self.manifests))
        self.files = frozenset().union(*(m.files for m in self.manifests))
        self.unreadable = [m for m in self.manifests if m.problem is not None]


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _registry(library: Library) -> Path:
    return library.state / REGISTRY


def recorded(library: Library) -> list[Path]:
    """The manifests recorded as using the library (absolute; they may be gone)."""
    try:
        data = json.loads(_registry(library).read_bytes())
        names = data["manifests"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(names, list):
        return []
    # kept relative to the library, so moving the whole tree keeps the record valid
    return [Path(_real(library.root / str(name))) for name in names if isinstance(name, str)]


def register(library: Library, manifest: Manifest) -> None:
    """Record that `manifest` uses the library (a sync does, under the library lock).
    Costs one small read when it is recorded already; entries whose manifest is gone
    are dropped when the file is written."""
    own = Path(_real(manifest.path))
    known = recorded(library)
    if own in known:
        return
    keep = [p for p in known if p.exists()] + [own]
    root = _real(library.root)
    names = sorted({_relative(p, root) for p in keep})
    atomic_write_json(_registry(library), {"format": 1, "manifests": names})


def _relative(path: Path, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)


def others(library: Library, manifest: Manifest) -> Others:
    """The other manifests that use this library, with their keys and files."""
    own = Path(_real(manifest.path))
    candidates = [p for p in recorded(library) if p != own]
    if not candidates:
        return Others()
    from .library import read_lock
    from .manifest import load

    root = _real(library.root)
    found = []
    for path in candidates:
        if not path.exists():
            continue  # deleted or moved: it has nothing left to protect
        try:
            other = load(path)
            if _real(other.library) != root:
                continue  # it points at another library now
            lock = read_lock(other.lock_path)
        except FetcherError as exc:
            found.append(OtherManifest(path, problem=str(exc)))
            continue
        keys = {e.key for e in other.entries} | set(lock)
        files = {r.file for r in lock.values()} | {sidecar_name(r.file) for r in lock.values()}
        found.append(OtherManifest(path, frozenset(keys), frozenset(files)))
    return Others(found)
