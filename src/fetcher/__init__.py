"""fetcher: turn a reading list of papers into a local library you can trust.

```python
import fetcher
manifest = fetcher.load_manifest("manifest.toml")
report = fetcher.sync(manifest)
problems = fetcher.verify(manifest)
```

Names are imported on first use (PEP 562), so `import fetcher` and every command pay
only for the modules they need: a sync with nothing to do never loads status or verify.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Blocked": "errors",
    "ContentError": "errors",
    "EntryError": "errors",
    "FetcherError": "errors",
    "IntegrityError": "errors",
    "LibraryBusy": "errors",
    "ManifestError": "errors",
    "NotFound": "errors",
    "StorageError": "errors",
    "TransientError": "errors",
    "UsageError": "errors",
    "Entry": "manifest",
    "Manifest": "manifest",
    "Settings": "manifest",
    "EntryStatus": "status",
    "StatusReport": "status",
    "status": "status",
    "EntryReport": "report",
    "Event": "report",
    "Options": "report",
    "Report": "report",
    "sync": "sync",
    "Problem": "verify",
    "verify": "verify",
}
_RENAMED = {"load_manifest": ("manifest", "load")}

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name], name
    elif name in _RENAMED:
        module, attr = _RENAMED[name]
    else:
        raise AttributeError(f"module 'fetcher' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


class _Package(types.ModuleType):
    """Keeps `fetcher.sync`, `fetcher.status`, `fetcher.verify` the functions.

    Importing a submodule sets the package attribute of the same name to the module;
    with lazy exports that would shadow the function of that name.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
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
    from .report import EntryReport, Event, Options, Report
    from .status import EntryStatus, StatusReport, status
    from .sync import sync
    from .verify import Problem, verify
