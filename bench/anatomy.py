"""Where the time of one large download goes: the work of fetcher's body loop, one step
added at a time, each a full GET of the same body with httpx (the client fetcher uses).

    python bench/anatomy.py URL DEST   -> one JSON object {step: seconds}

Steps: `read` (httpx streams the body, bytes dropped), `+ sha256` (hashed as it comes),
`+ write` (and written to DEST), `+ fsync` (and flushed to disk before the end, as
fetcher does before its atomic rename). `sync` in the large-file benchmark adds process
start-up, the partial-file bookkeeping and the rename to the last of these.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import httpx


def step(
    client: httpx.Client, url: str, dest: Path, *, hash_it: bool, write: bool, fsync: bool
) -> float:
    started = time.perf_counter()
    digest = hashlib.sha256()
    with client.stream("GET", url) as response, open(dest, "wb") as fh:
        for chunk in response.iter_bytes():
            if hash_it:
                digest.update(chunk)
            if write:
                fh.write(chunk)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    elapsed = time.perf_counter() - started
    dest.unlink()
    return elapsed


def main() -> int:
    url, dest = sys.argv[1], Path(sys.argv[2])
    steps = {
        "read": {"hash_it": False, "write": False, "fsync": False},
        "+ sha256": {"hash_it": True, "write": False, "fsync": False},
        "+ write": {"hash_it": True, "write": True, "fsync": False},
        "+ fsync": {"hash_it": True, "write": True, "fsync": True},
    }
    with httpx.Client(timeout=60) as client:
        times = {name: step(client, url, dest, **flags) for name, flags in steps.items()}
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
