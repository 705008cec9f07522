"""How every command ends when it cannot do its job: the exit code the contract allows,
one line on stderr, and with --json still one JSON document on stdout."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from fetcher.cli import main

MANIFEST = '[[paper]]\narxiv = "1706.03762"\n'


def write_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(MANIFEST)
    return path


def error_lines(err: str) -> list[str]:
    """stderr without warnings: the error lines."""
    return [line for line in err.splitlines() if not line.startswith("warning:")]


def json_error(out: str) -> dict[str, Any]:
    data = json.loads(out)  # exactly one document: json.loads refuses trailing data
    assert set(data) == {"ok", "error", "exit"}, data
    assert data["ok"] is False
    return data


# --- F8: status and bib exit 0 or 2, never 1 ----------------------------------------------


@pytest.mark.parametrize("command", ["status", "bib"])
def test_a_damaged_lock_is_exit_2_naming_the_lock(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path)
    (tmp_path / "manifest.lock").write_text("{not json")
    assert main([command, "-m", str(manifest)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = error_lines(captured.err)
    assert line.startswith(f"fetcher: error: {tmp_path / 'manifest.lock'}: not a fetcher lock")
    assert "delete it and run `fetcher sync`" in line

    assert main([command, "--json", "-m", str(manifest)]) == 2
    captured = capsys.readouterr()
    data = json_error(captured.out)
    assert data["exit"] == 2
    assert "manifest.lock: not a fetcher lock file" in data["error"]
    assert len(error_lines(captured.err)) == 1


def test_a_lock_that_is_a_folder_is_exit_2_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path)
    (tmp_path / "manifest.lock").mkdir()
    assert main(["status", "-m", str(manifest)]) == 2
    assert "manifest.lock" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        ("afile/refs.bib", "afile is not a folder"),  # a file where the folder should be
        ("folder", "Is a directory"),  # the target is a folder
    ],
)
def test_bib_out_failure_names_the_target_and_exits_2(
    out: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    write_manifest(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["bib", "-q", "--out", out]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"fetcher: error: cannot write {out}: ")
    assert reason in line
    assert ".tmp" not in line  # never the temporary file of the atomic write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder", "manifest.toml"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_an_unexpected_failure_in_status_is_2_not_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    # the module (`fetcher.status` as an attribute is the function the package exports)
    monkeypatch.setattr(importlib.import_module("fetcher.status"), "status", broken)
    assert main(["status", "--json", "-m", str(manifest)]) == 2
    captured = capsys.readouterr()
    assert json_error(captured.out) == {
        "ok": False,
        "error": "internal error: RuntimeError: boom",
        "exit": 2,
    }
    (line,) = error_lines(captured.err)
    assert line.startswith("fetcher: internal error: RuntimeError: boom; please report it")


# --- F9: --json prints one document on every exit ------------------------------------------


def test_json_on_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path)
    assert main(["sync", "--json", "-m", str(manifest), "nosuch"]) == 2
    captured = capsys.readouterr()
    data = json_error(captured.out)
    assert data == {"ok": False, "error": "no entry 'nosuch' in manifest.toml", "exit": 2}
    assert error_lines(captured.err) == ["fetcher: error: no entry 'nosuch' in manifest.toml"]


def test_json_on_a_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("sync", "verify", "status", "bib", "smoke"):
        assert main([command, "--json", "-m", str(tmp_path / "none.toml")]) == 2, command
        captured = capsys.readouterr()
        assert json_error(captured.out)["exit"] == 2
        assert "none.toml" in json_error(captured.out)["error"]
        assert len(error_lines(captured.err)) == 1


@pytest.mark.parametrize(
    "argv",
    [["--json", "sync", "--bogus"], ["sync", "--bogus", "--json"], ["--json", "nosuchcommand"]],
)
def test_json_on_a_command_line_argparse_refuses(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    data = json_error(captured.out)
    assert data["exit"] == 2
    assert data["error"].startswith(("unrecognized arguments", "argument COMMAND: invalid"))
    assert captured.err.startswith("usage: fetcher")


def test_without_json_a_refused_command_line_leaves_stdout_empty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["sync", "--bogus", "--", "--json"])
    assert capsys.readouterr().out == ""


def test_json_when_no_command_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json"]) == 2
    assert json_error(capsys.readouterr().out)["exit"] == 2


@pytest.mark.parametrize(
    ("raised", "code", "error"),
    [
        (KeyboardInterrupt(), 130, "interrupted; partial downloads are kept and resume next time"),
        (RuntimeError("boom"), 1, "internal error: RuntimeError: boom"),
        (PermissionError(13, "Permission denied", "/lib/x"), 1, "Permission denied (/lib/x)"),
    ],
)
def test_json_when_a_sync_ends_by_an_exception(
    raised: BaseException, code: int, error: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    manifest = write_manifest(tmp_path)

    def run(self: object) -> None:
        raise raised

    monkeypatch.setattr(importlib.import_module("fetcher.sync").Syncer, "run", run)
    assert main(["sync", "--json", "-m", str(manifest)]) == code
    captured = capsys.readouterr()
    assert json_error(captured.out) == {"ok": False, "error": error, "exit": code}
    (line,) = error_lines(captured.err)
    assert error in line


def test_a_command_that_printed_its_document_gets_no_second_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path)
    assert main(["verify", "--json", "-m", str(manifest)]) == 1  # never synced: a problem
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["problems"]


def test_status_quiet_keeps_the_lines_that_need_attention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path)
    assert main(["status", "-q", "-m", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("never synced    1706.03762")
    assert "entries:" not in out  # the summary is not for -q
