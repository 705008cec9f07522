"""The command line itself: usage errors exit 2 with usage, every command has --help with
an example, results go to stdout and problems to stderr."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fetcher import __version__
from fetcher.cli import build_parser
from tests.conftest import Result, point_at, run_fetcher
from tests.fakeserver import FakeServer, make_pdf


def run_module(*args: str, cwd: Path | None = None) -> Result:
    """`python -m fetcher ...`: the same program as the console script."""
    proc = subprocess.run(
        [sys.executable, "-m", "fetcher", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    raise AssertionError("no subcommands")


def assert_usage_error(result: Result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("usage: fetcher"), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("runner", [run_fetcher, run_module], ids=["script", "module"])
def test_no_command_prints_usage_and_exits_2(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = runner(cwd=tmp_path)
    assert_usage_error(result, "COMMAND")
    for name in subcommands():
        assert name in result.stderr


@pytest.mark.parametrize("runner", [run_fetcher, run_module], ids=["script", "module"])
def test_an_unknown_command(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = runner("fetch", cwd=tmp_path)
    assert_usage_error(result, "fetcher: error: argument COMMAND: invalid choice: 'fetch'")
    assert "'sync'" in result.stderr  # the valid choices are listed
    assert result.stderr.count("\n") == 2  # the usage line and the error line
    assert not (tmp_path / "downloads").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["sync", "--bogus"],
        ["--bogus", "sync"],
        ["verify", "--dry-run"],
        ["sync", "--jsn"],
    ],
    ids=lambda a: " ".join(a),
)
def test_an_unknown_option(argv: list[str], tmp_path: Path) -> None:
    result = run_fetcher(*argv, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "usage: fetcher" in result.stderr
    assert "unrecognized arguments" in result.stderr or "ambiguous option" in result.stderr
    assert not (tmp_path / "downloads").exists()


def test_an_option_without_its_value(tmp_path: Path) -> None:
    result = run_fetcher("sync", "-m", cwd=tmp_path)
    assert_usage_error(result, "argument -m/--manifest: expected one argument")


def test_top_level_help_lists_commands_examples_and_exit_codes() -> None:
    result = run_fetcher("--help")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("usage: fetcher")
    for name in subcommands():
        assert f"\n    {name} " in result.stdout
    assert "examples:" in result.stdout and "exit codes:" in result.stdout


@pytest.mark.parametrize("command", subcommands())
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run_fetcher(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"usage: fetcher {command}")
    assert "example:" in result.stdout
    example = result.stdout.split("example:", 1)[1]
    assert f"fetcher {command}" in example
    assert "--manifest" in result.stdout  # the common options are there too


@pytest.mark.parametrize("runner", [run_fetcher, run_module], ids=["script", "module"])
def test_version(runner) -> None:  # type: ignore[no-untyped-def]
    result = runner("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fetcher {__version__}"


def _two_entries(tmp_path: Path, srv: FakeServer) -> Path:
    srv.add_file("https://a.example/good.pdf", make_pdf("good", 3000))
    path = tmp_path / "manifest.toml"
    path.write_text(
        point_at(
            '[[paper]]\nurl = "https://a.example/good.pdf"\nname = "good"\n'
            '[[paper]]\nurl = "https://a.example/missing.pdf"\nname = "bad"\n',
            srv,
        )
    )
    return path


def test_results_on_stdout_problems_on_stderr(tmp_path: Path, fake: FakeServer) -> None:
    path = _two_entries(tmp_path, fake)
    result = run_fetcher("sync", "-m", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("downloaded good -> downloads/good.pdf")
    assert "bad" not in result.stdout and "FAILED" not in result.stdout
    assert "FAILED     bad: HTTP 404 from " in result.stderr
    assert "good" not in result.stderr.split("\n")[0]


def test_json_keeps_stdout_one_document(tmp_path: Path, fake: FakeServer) -> None:
    path = _two_entries(tmp_path, fake)
    result = run_fetcher("sync", "--json", "-m", str(path), cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert {e["key"]: e["status"] for e in report["entries"]} == {
        "good": "downloaded",
        "bad": "failed",
    }
    assert "FAILED     bad" in result.stderr


def test_quiet_prints_only_problems(tmp_path: Path, fake: FakeServer) -> None:
    path = _two_entries(tmp_path, fake)
    result = run_fetcher("sync", "-q", "-m", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "FAILED     bad" in result.stderr
    again = run_fetcher("verify", "-q", "-m", str(path), cwd=tmp_path)
    assert (again.returncode, again.stdout) == (1, "")  # `bad` was never synced
    assert "bad" in again.stderr and "good" not in again.stderr


def test_an_unknown_key_is_a_usage_error_before_any_write(tmp_path: Path, fake: FakeServer) -> None:
    path = _two_entries(tmp_path, fake)
    result = run_fetcher("sync", "nosuch", "-m", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"fetcher: error: no entry 'nosuch' in {path.name}"
    assert not (tmp_path / "downloads").exists()
    assert fake.requests == []
