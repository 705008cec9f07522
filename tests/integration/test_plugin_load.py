"""The pytest11 plugin costs nothing to projects that never use its fixture.

pytest imports `fetcher.testing` in every run wherever fetcher is installed; it must not
pull in fetcher's modules (manifest, smoke, …) or respx until a test asks for the
`fetcher_smoke` fixture.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# `-X importtime` lines: "import time: self | cumulative | <indent>module"
_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$")


def test_loading_the_plugin_imports_nothing_of_fetcher_or_respx(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_x():\n    assert True\n")
    proc = subprocess.run(
        [
            sys.executable, "-X", "importtime", "-m", "pytest", "--co", "-q",
            "-s",  # no capture: importtime writes to stderr while plugins load
            "-p", "no:cacheprovider",
            "-p", "no:respx",  # respx's own plugin imports respx; ours must not
            "--trace-config",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the plugin was loaded (else the check below would prove nothing)
    assert re.search(r"PLUGIN registered: <module 'fetcher\.testing'", proc.stdout), proc.stdout
    imported = [m.group(1) for m in map(_LINE.match, proc.stderr.splitlines()) if m]
    assert "pytest" in imported  # importtime output was seen at all
    leaked = [
        name
        for name in imported
        if name.startswith(("fetcher.", "respx", "httpx", "tomlkit", "tenacity"))
    ]
    assert leaked == []
