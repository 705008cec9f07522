"""fetcher: turn a reading list of papers into a local library you can trust.

```python
import fetcher
manifest = fetcher.load_manifest("manifest.toml")
report = fetcher.sync(manifest)
problems = fetcher.verify(manifest)
```
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    Blocked,
    ContentError,
    EntryError,
    FetcherError,
    IntegrityError,
    LibraryBusy,
    ManifestError,
    NotFound,
    StorageError,
    TransientError,
    UsageError,
)
from .manifest import Entry, Manifest, Settings
from .manifest import load as load_manifest
from .status import EntryStatus, StatusReport, status
from .sync import EntryReport, Event, Options, Report, sync
from .verify import Problem, verify

__all__ = [
    "Blocked",
    "ContentError",
    "Entry",
    "EntryError",
    "EntryReport",
    "EntryStatus",
    "Event",
    "FetcherError",
    "IntegrityError",
    "LibraryBusy",
    "Manifest",
    "ManifestError",
    "NotFound",
    "Options",
    "Problem",
    "Report",
    "Settings",
    "StatusReport",
    "StorageError",
    "TransientError",
    "UsageError",
    "__version__",
    "load_manifest",
    "status",
    "sync",
    "verify",
]
