"""``python -m qarray``: sizes as ``--help`` writes them, and one-line errors with status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qarray.__main__ import main


@pytest.mark.parametrize("size, expected", [("1e3", "1,000"), ("2_000", "2,000"), ("1500", "1,500")])
def test_size_is_accepted_as_help_writes_it(size, expected, capsys):
    assert main(["--size", size, "--bits", "8", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert f"{expected} float32 values" in out
    assert "yes" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "1.5"], "argument --size: must be a whole number of values >= 1, got '1.5'"),
        (["--size", "0"], "argument --size: must be a whole number of values >= 1, got '0'"),
        (["--size", "many"], "argument --size: must be a number of values such as 4e6, got 'many'"),
        (["--bits", "0"], "argument --bits: bit widths must be integers between 1 and 53, got '0'"),
        (["--bits", "8", "54"], "argument --bits: bit widths must be integers between 1 and 53, got '54'"),
        (["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
        (["--backend", "nope"], "argument --backend: unknown backend 'nope'"),
        (["--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_wrong_arguments_print_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--size", "10"] if "--size" not in argv else argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("python -m qarray: error: ")
    assert message in lines[0]


def test_the_module_prints_one_line_without_a_traceback():
    """The real entry point: no traceback, status 2, also for an error found after parsing."""
    result = subprocess.run(
        [sys.executable, "-m", "qarray", "--size", "10", "--backend", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_help_shows_the_size_format_it_accepts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "1e5" in capsys.readouterr().out
