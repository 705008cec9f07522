"""The library on disk: layout, `manifest.lock`, sidecars, the stat cache, atomic writes.

Everything fetcher keeps for itself lives under `<library>/.fetcher/`; files appear under
their final names only by `os.replace` from a temporary file in the same folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import FetcherError, StorageError

STATE_DIR = ".fetcher"
SIDECAR_MISSING = "missing"
LOCK_FORMAT = 1
HASH_BLOCK = 1 << 20


# --- atomic writes ---------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes, *, follow_symlinks: bool = False) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never a mix.

    The file keeps the permissions of the one it replaces; a new file gets 0o666 less the
    umask, as `open()` would give it (not mkstemp's 0600: `fetcher add` must not make a
    shared manifest private). `follow_symlinks` is for the user's own files (the manifest,
    `bib --out`): a link there is written through to its target and stays a link. Inside
    the library a link is replaced by a regular file instead, so it never steers a write
    out of the library.
    """
    if follow_symlinks:
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode) & 0o777 if stat.S_ISREG(st.st_mode) else None
    except FileNotFoundError:
        mode = None
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.chmod(tmp, mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temp(path: Path) -> tuple[int, str]:
    """A new `.NAME.XXXXXXXX.tmp` beside `path` (the names `clean_partials`
    sweeps), created with mode 0o666 so the kernel applies the umask, as for any new file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover


def atomic_write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


_BUFFERS = threading.local()


def block_buffer() -> bytearray:
    """This thread's reusable `HASH_BLOCK` read buffer. A fresh 1 MiB bytearray per file
    (zeroed pages, then freed) cost more than hashing a small file: 10,000 files of 2 KB
    took 1.4 s that way, 0.15 s with the buffer reused."""
    buf: bytearray | None = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = bytearray(HASH_BLOCK)
    return buf


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """sha256 and size of a file, read in large blocks (hashlib releases the GIL).

    `progress(n)` is called after each block of `n` bytes (verify's progress bar, and its
    way to stop: a `Cancelled` raised there ends the hash)."""
    import hashlib  # here, not at the top: a sync with nothing to do never hashes

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as fh:
        buf = block_buffer()
        view = memoryview(buf)
        while n := fh.readinto(buf):
            digest.update(view[:n])
            size += n
            if progress is not None:
                progress(n)
    return digest.hexdigest(), size


# --- the lock file ---------------------------------------------------------------------


@dataclass(frozen=True)
class LockRecord:
    """What `manifest.lock` knows of one key: enough to re-fetch and re-check it anywhere."""

    kind: str
    file: str
    url: str
    sha256: str
    size: int
    version: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.version is None:
            del data["version"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockRecord:
        file = str(data["file"])
        if not is_plain_name(file):
            # the lock is committed and shared: it must not steer a write out of the library
            raise ValueError(f"file {file!r} is not a plain file name inside the library")
        return cls(
            kind=str(data["kind"]),
            file=file,
            url=str(data["url"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            version=int(data["version"]) if data.get("version") is not None else None,
        )

    @classmethod
    def from_sidecar(cls, data: dict[str, Any]) -> LockRecord:
        """The record a sidecar keeps (its `source_url` is the lock's `url`)."""
        return cls.from_json({**data, "url": data["source_url"]})


def sidecar_name(file: str) -> str:
    """`x.pdf` -> `x.json`: the metadata sidecar beside a library file."""
    return os.path.splitext(file)[0] + ".json"


def _sidecar_token(record: LockRecord) -> str:
    """What the stat cache keeps for a sidecar found good: the hash it was checked against."""
    return "sidecar " + record.sha256


def stat_key(st: os.stat_result) -> list[int]:
    """What the stat cache compares: any write, rename or chmod changes one of these."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def read_lock(path: Path) -> dict[str, LockRecord]:
    """Read `manifest.lock`; a missing file is an empty lock."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FetcherError(f"{path}: cannot read the lock file: {exc.strerror}") from None
    try:
        data = json.loads(raw)
        entries = data["entries"]
        return {str(k): LockRecord.from_json(v) for k, v in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FetcherError(
            f"{path}: not a fetcher lock file ({exc}); fix it or delete it and run "
            "`fetcher sync` to rebuild it"
        ) from None


def lock_bytes(records: dict[str, LockRecord]) -> bytes:
    data = {
        "_comment": "written by fetcher sync; commit it so every machine gets the same files",
        "format": LOCK_FORMAT,
        "entries": {k: records[k].to_json() for k in sorted(records)},
    }
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_lock(path: Path, records: dict[str, LockRecord]) -> None:
    atomic_write_bytes(path, lock_bytes(records))


# --- file names ------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^\w.+-]+", re.UNICODE)
# device names Windows will not create a file under, whatever the extension; manifest.py
# refuses them as entry names, safe_component steps around them
RESERVED_NAMES = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}
MAX_STEM = 150


def safe_component(text: str) -> str:
    """Make any text one safe file-name component: no separators, no leading dot."""
    text = unicodedata.normalize("NFC", text)
    text = _UNSAFE.sub("_", text).strip("._-")
    text = re.sub(r"_+", "_", text)
    if len(text.encode("utf-8")) > MAX_STEM:
        encoded = text.encode("utf-8")[:MAX_STEM]
        text = encoded.decode("utf-8", errors="ignore").rstrip("._-")
    if not text:
        text = "untitled"
    if text.split(".")[0].lower() in RESERVED_NAMES:
        text = "_" + text
    return text


_CONTROL = re.compile(r"[\x00-\x1f]")


def is_plain_name(file: str) -> bool:
    """One visible file name inside the library: no separator, no dot-name, no control."""
    return (
        bool(file)
        and "/" not in file
        and "\\" not in file
        and not file.startswith(".")
        and _CONTROL.search(file) is None  # a regex: a per-character any() cost 0.2 s at 10k
    )


def stem_identity(stem: str) -> str:
    """Two stems that name one file on a case-insensitive or normalising file system."""
    return unicodedata.normalize("NFC", stem).casefold()


def disambiguate(stem: str, key_stem: str, attempt: int = 1) -> str:
    """`stem-<key>` (then `stem-<key>-2`, ...) for an entry whose stem another one holds."""
    tail = "-" + key_stem + (f"-{attempt}" if attempt > 1 else "")
    room = max(1, MAX_STEM - len(tail.encode("utf-8")))
    head = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore").rstrip("._-")
    return safe_component((head or "untitled") + tail)


def render_stem(template: str, fields: dict[str, str]) -> str:
    """Fill the filename template; every field is made safe before it is inserted."""
    safe = {k: safe_component(v) if v else "" for k, v in fields.items()}
    stem = template.format(**safe)
    return safe_component(stem)


# --- layout and the stat cache -----------------------------------------------------------


class Library:
    """One library folder and fetcher's private state inside it."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / STATE_DIR
        self.partial_dir = self.state / "partial"
        self._cache_path = self.state / "stat-cache.json"
        self._cache: dict[str, list[Any]] | None = None
        self._cache_dirty = False
        self._cache_lock = threading.Lock()  # both fetch lanes remember and forget

    def ensure(self) -> None:
        """Create the library and its state folders; refuse state that links elsewhere."""
        for folder in (self.state, self.partial_dir):
            if folder.is_symlink():
                raise StorageError(
                    f"{folder} is a symbolic link; fetcher keeps its state only in real "
                    "folders inside the library. Remove the link and sync again"
                )
        try:
            self.partial_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the library folder {self.root}: {exc.strerror}"
            ) from None
        # Internal files are opened for writing (locks, partial downloads): a link among
        # them would steer that write out of the library, so links there are removed.
        for folder in (self.state, self.partial_dir):
            with contextlib.suppress(OSError):
                for item in os.scandir(folder):
                    if item.is_symlink():
                        with contextlib.suppress(OSError):
                            os.unlink(item.path)

    def path_of(self, file: str) -> Path:
        """The absolute path of a library file name, refusing anything that leaves the library."""
        if not is_plain_name(file):
            raise FetcherError(f"unsafe library file name {file!r}")
        return self.root / file

    def is_safe_file(self, file: str) -> bool:
        """True if `file` is a plain file inside the library, not a link pointing elsewhere."""
        path = self.path_of(file)
        try:
            if path.is_symlink():
                return False
            return path.is_file()
        except OSError:
            return False

    # stat cache: file -> [size, mtime_ns, ino, ctime_ns, sha256], so an unchanged file is
    # not re-hashed. ctime moves on every write, rename and chmod and cannot be set back
    # from user space, so a file rewritten with its size and mtime restored is still seen.

    def load_cache(self) -> dict[str, list[Any]]:
        """The stat cache, read once. A sync calls it before its fetch lanes start."""
        with self._cache_lock:
            if self._cache is None:
                try:
                    loaded = json.loads(self._cache_path.read_bytes())
                except (OSError, ValueError):
                    loaded = {}
                self._cache = loaded if isinstance(loaded, dict) else {}
            return self._cache

    def cached_hash(self, file: str, st: os.stat_result) -> str | None:
        cache = self.load_cache()
        hit = cache.get(file)
        if not isinstance(hit, list):
            return None
        if len(hit) == 5 and hit[:4] == stat_key(st):
            return str(hit[4])
        if len(hit) == 3 and hit[:2] == [st.st_size, st.st_mtime_ns]:
            # written by fetcher before 0.2 (size, mtime only): trusted once and upgraded,
            # so a large library is not re-hashed in full after an update of fetcher
            with self._cache_lock:
                cache[file] = [*stat_key(st), hit[2]]
                self._cache_dirty = True
            return str(hit[2])
        return None

    def remember(self, file: str, sha256: str, before: os.stat_result | None = None) -> None:
        """Record the hash of a library file as it is on disk now.

        `before` is the stat taken before the file was hashed: if the file changed while
        it was read (another stat now), the hash may describe neither version and is not
        kept; the next look hashes the file again.
        """
        try:
            now = os.lstat(os.path.join(self.root, file))  # a str join: 10,000 calls in verify
        except OSError:
            self.forget(file)
            return
        if before is not None and stat_key(before) != stat_key(now):
            self.forget(file)
            return
        cache = self.load_cache()
        entry = [*stat_key(now), sha256]
        with self._cache_lock:
            if cache.get(file) != entry:  # unchanged: nothing to write back
                cache[file] = entry
                self._cache_dirty = True

    def forget(self, file: str) -> None:
        cache = self.load_cache()
        with self._cache_lock:
            if cache.pop(file, None) is not None:
                self._cache_dirty = True

    def save_cache(self) -> None:
        with self._cache_lock:
            if not self._cache_dirty or self._cache is None:
                return
            with contextlib.suppress(OSError):
                atomic_write_json(self._cache_path, self._cache)
            self._cache_dirty = False

    def current_hash(self, file: str) -> tuple[str, int] | None:
        """(sha256, size) of a library file, from the stat cache when it is unchanged."""
        path = self.path_of(file)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):  # lstat: a link or a folder is not our file
            return None
        cached = self.cached_hash(file, st)
        if cached is not None:
            return cached, st.st_size
        digest, size = hash_file(path)
        self.remember(file, digest, st)
        return digest, size

    # sidecars: `<stem>.json` beside each file, with the entry's key and the file's hash

    def sidecar_path(self, file: str) -> Path:
        return self.path_of(sidecar_name(file))

    def read_sidecar(self, file: str) -> dict[str, Any] | None:
        try:
            path = self.sidecar_path(file)
            if path.is_symlink():  # never read through a link out of the library
                return None
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def sidecar_record(self, file: str, key: str) -> LockRecord | None:
        """The record the sidecar of `file` keeps, if it was written for `key` and `file`.

        A sidecar is written after its file is committed and before the lock line, so
        when the two disagree and the file matches the sidecar, the sidecar is newer."""
        data = self.read_sidecar(file)
        if data is None or data.get("key") != key or data.get("file") != file:
            return None
        try:
            return LockRecord.from_sidecar(data)
        except (KeyError, TypeError, ValueError):
            return None

    def sidecar_problem(
        self, file: str, key: str, record: LockRecord, *, trust_cache: bool = True
    ) -> str | None:
        """What is wrong with the sidecar of `record.file`, stored for `key`: None if it
        describes exactly that file (key, file name, sha256, size), `SIDECAR_MISSING`, or
        a description of the damage. A sidecar found good is remembered in the stat cache
        (against the locked hash), so a sync with nothing to do reads no sidecar; verify
        reads every one (`trust_cache=False`)."""
        name = sidecar_name(file)
        if not is_plain_name(name):
            return f"unsafe file name {name!r}"
        path = os.path.join(self.root, name)  # str, not Path: 10,000 calls in verify
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return SIDECAR_MISSING
        except OSError as exc:
            return f"cannot read it: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return "not a plain file (a link or a folder)"
        known = self.cached_hash(name, st) == _sidecar_token(record)
        if trust_cache and known:
            return None
        try:
            with open(path, "rb") as fh:
                data = json.loads(fh.read())
        except OSError as exc:
            return f"cannot read it: {exc.strerror or exc}"
        except ValueError:
            return "not valid JSON"
        if not isinstance(data, dict):
            return "not a JSON object"
        if data.get("key") != key:
            return f"it names the entry {data.get('key')!r}, not {key!r}"
        if data.get("file") != record.file:
            return f"it describes the file {data.get('file')!r}, not {record.file!r}"
        if data.get("sha256") != record.sha256 or data.get("size") != record.size:
            return (
                f"it records sha256 {str(data.get('sha256'))[:12]}…, the lock "
                f"{record.sha256[:12]}…"
            )
        if not known:
            self.remember(name, _sidecar_token(record), st)
        return None

    def remember_sidecar(self, record: LockRecord) -> None:
        """The sidecar of `record.file` was just written for it: no need to read it back."""
        self.remember(sidecar_name(record.file), _sidecar_token(record))

    def sidecars(self, names: Iterable[str]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
        """(sidecar name, key, file, data) of each sidecar among `names` that names the
        entry it was stored for and its file (`key` and `file`, the file's stem its own)."""
        for name in names:
            if not name.endswith(".json"):
                continue
            data = self.read_sidecar(name)
            if data is None:
                continue
            key, file = data.get("key"), data.get("file")
            if (
                isinstance(key, str)
                and isinstance(file, str)
                and is_plain_name(file)
                and Path(file).stem + ".json" == name
            ):
                yield name, key, file, data

    def files(self) -> Iterator[str]:
        """Names of the user-visible files in the library (not fetcher's own state)."""
        try:
            for item in sorted(os.scandir(self.root), key=lambda d: d.name):
                if not item.name.startswith(".") and item.is_file(follow_symlinks=False):
                    yield item.name
        except FileNotFoundError:
            return


class Names:
    """Which entry holds which file stem, so two entries never share a file or a sidecar.

    Stems compare as a case-insensitive, normalising file system sees them (`x.pdf` and
    `X.html` would also share `x.json`). A stem the lock, a sidecar or an earlier claim
    gives to one key is never handed to another: the newcomer gets `stem-<key>`. Callers
    claim in a fixed order, so the outcome never depends on thread timing.
    """

    def __init__(self, library: Library):
        self.library = library
        self._owner: dict[str, str] = {}
        self._lock = threading.Lock()

    def hold(self, key: str, file: str) -> bool:
        """Give the stem of `file` to `key` unless another key has it; True if `key` has it."""
        ident = stem_identity(Path(file).stem)
        with self._lock:
            return self._owner.setdefault(ident, key) == key

    def claim(self, key: str, key_stem: str, file: str) -> str:
        """`file`, or `stem-<key>` + suffix when that stem belongs to another entry."""
        stem, suffix = Path(file).stem, Path(file).suffix
        candidate, attempt = file, 1
        while not (self._free_on_disk(key, candidate) and self.hold(key, candidate)):
            candidate = disambiguate(stem, key_stem, attempt) + suffix
            attempt += 1
        return candidate

    def _free_on_disk(self, key: str, file: str) -> bool:
        """False if a sidecar on disk says another entry's file has this stem."""
        sidecar = self.library.read_sidecar(file)
        owner = sidecar.get("key") if sidecar else None
        return owner is None or owner == key


# --- the library lock ----------------------------------------------------------------------

LIBRARY_LOCK = "sync.lock"  # in `.fetcher/`; the name filelock used, so old and new agree


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on `fd` if it is free; never blocks."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: another process (or descriptor) holds it
        return False
    return True


@contextlib.contextmanager
def hold_library(
    library: Library,
    *,
    wait: bool = True,
    cancel: threading.Event | None = None,
    on_wait: Callable[[], None] | None = None,
    poll: float = 0.1,
) -> Iterator[None]:
    """Hold the library for one sync or verify, so neither sees the other's half-done work.

    Free: taken at once. Held by another process and `wait` false: `LibraryBusy` (exit
    75). Else `on_wait()` once, then it is taken as soon as it is free, or `Cancelled`
    when `cancel` is set meanwhile. The lock is an OS lock on an open file: the kernel
    drops it when its process ends, so a killed sync never leaves the library locked.
    The state folder must exist (`Library.ensure`).
    """
    from .errors import Cancelled, LibraryBusy

    path = library.state / LIBRARY_LOCK
    try:
        # O_NOFOLLOW: a link planted here must not make us open a file elsewhere
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise StorageError(
            f"cannot open the library lock {path}: {exc.strerror or exc}; check the "
            "permissions of the library folder"
        ) from None
    try:
        if not _try_lock(fd):
            if not wait:
                raise LibraryBusy(
                    f"another fetcher sync is running on {library.root}; retry later or "
                    "drop --no-wait to wait for it"
                )
            if on_wait is not None:
                on_wait()
            stop = cancel or threading.Event()
            while not _try_lock(fd):
                if stop.wait(poll):
                    raise Cancelled("cancelled while waiting for another sync")
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --- the catalog's files ----------------------------------------------------------------------

INDEX_MD = "index.md"
INDEX_HTML = "index.html"


def catalog_is_fresh(library_root: Path, manifest_path: Path) -> bool:
    """Both catalog files exist and are newer than the manifest (tags, order and titles
    live there). Here, not in `catalog`, so a sync with nothing to do need not import it."""
    try:
        html_time = (library_root / INDEX_HTML).stat().st_mtime_ns
        md_time = (library_root / INDEX_MD).stat().st_mtime_ns
        manifest_time = manifest_path.stat().st_mtime_ns
    except OSError:
        return False
    return min(html_time, md_time) >= manifest_time
