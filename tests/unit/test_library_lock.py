"""`hold_library`: one sync or verify at a time on a library, with the three ways to meet
a held lock: wait, give up at once (exit 75), or stop waiting when cancelled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fetcher.errors import Cancelled, LibraryBusy, StorageError
from fetcher.library import Library, hold_library


@pytest.fixture
def lib(tmp_path: Path) -> Library:
    library = Library(tmp_path / "downloads")
    library.ensure()
    return library


def test_no_wait_gives_up_at_once_while_another_holds_it(lib: Library) -> None:
    with hold_library(lib):
        started = time.monotonic()
        busy = pytest.raises(LibraryBusy, match="another fetcher sync is running")
        with busy as exc, hold_library(lib, wait=False):
            pass
        assert exc.value.exit_code == 75
        assert time.monotonic() - started < 1
    with hold_library(lib, wait=False):  # released on exit
        pass


def test_a_waiter_is_told_once_and_gets_the_lock_when_it_is_released(lib: Library) -> None:
    told: list[str] = []
    got = threading.Event()
    holder = hold_library(lib)
    holder.__enter__()

    def wait() -> None:
        with hold_library(lib, on_wait=lambda: told.append("waiting"), poll=0.01):
            got.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    assert told == ["waiting"] and not got.is_set()
    holder.__exit__(None, None, None)
    waiter.join(5)
    assert got.is_set()


def test_a_waiter_stops_when_cancelled(lib: Library) -> None:
    cancel = threading.Event()
    with hold_library(lib):
        threading.Timer(0.05, cancel.set).start()
        with pytest.raises(Cancelled), hold_library(lib, cancel=cancel, poll=0.01):
            pass


def test_the_lock_file_is_no_link_out_of_the_library(lib: Library, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (lib.state / "sync.lock").symlink_to(target)
    with pytest.raises(StorageError, match="cannot open the library lock"), hold_library(lib):
        pass
    assert target.read_text() == "keep"
