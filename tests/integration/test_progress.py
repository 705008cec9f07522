"""Progress bars appear on a terminal only; pipes and cron logs get plain lines."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

from tests.conftest import fetcher_command
from tests.fakeserver import FakeServer


def run_with_tty_stderr(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (as in an interactive shell)."""
    leader, follower = pty.openpty()
    # a real terminal has a size; tqdm draws nothing on a 0x0 one
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [*fetcher_command(), *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO once the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=60)
    os.close(leader)
    return code, stdout, b"".join(chunks).decode(errors="replace")


def test_bars_on_a_terminal(seed_library: Path, fake: FakeServer) -> None:
    code, stdout, stderr = run_with_tty_stderr(["sync", "-m", str(seed_library)])
    assert code == 0
    assert "entries:" in stderr  # tqdm's bar over entries
    assert "entry/s" in stderr or "entries" in stderr
    assert stdout.count("downloaded ") == 43  # results still on stdout


def test_no_bars_on_a_pipe(seed_library: Path, fake: FakeServer) -> None:
    proc = subprocess.run(
        [*fetcher_command(), "sync", "-m", str(seed_library)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "\r" not in proc.stderr and "entries:" not in proc.stderr
    assert "it/s" not in proc.stderr and "entry/s" not in proc.stderr


def test_json_and_quiet_print_no_bars_even_on_a_terminal(
    seed_library: Path, fake: FakeServer
) -> None:
    code, stdout, stderr = run_with_tty_stderr(["sync", "--json", "-q", "-m", str(seed_library)])
    assert code == 0
    assert "entries:" not in stderr
    assert stdout.lstrip().startswith("{")
