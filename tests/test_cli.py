"""``python -m qarray``: sizes as ``--help`` writes them, one-line errors with status 2 (sizes the
memory cannot hold included), and the verdict on the error that the display gives."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy
import pytest

import qarray.__main__ as cli
from qarray import QuantizedArray
from qarray.__main__ import main
from qarray.display import error_summary


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
        (["--size", "-3"], "argument --size: must be a whole number of values >= 1, got '-3'"),
        (["--size", "1e400"], "argument --size: must be a whole number of values >= 1, got '1e400'"),
        (["--size", "1e15"], "argument --size: 1e15 values need about"),
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


@pytest.mark.parametrize("argv", [["--size", "10", "--backend", "nope"], ["--size", "1e15"]])
def test_the_module_prints_one_line_without_a_traceback(argv):
    """The real entry point: no traceback, status 2, also for an error found after parsing."""
    result = subprocess.run(
        [sys.executable, "-m", "qarray", *argv],
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


def _one_line_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_size_beyond_the_available_memory_is_an_argument_error(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_available_memory", lambda: 10**6)
    most = 10**6 // cli.BYTES_PER_VALUE
    line = _one_line_error(["--size", str(most + 1), "--backend", "numpy"], capsys)
    assert f"argument --size: {most + 1} values need about" in line
    assert f"at most {most:,} values" in line
    assert main(["--size", str(most), "--bits", "8", "--backend", "numpy"]) == 0


def test_sizes_are_capped_where_the_memory_is_unknown(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_available_memory", lambda: None)
    line = _one_line_error(["--size", "1e12", "--backend", "numpy"], capsys)
    assert f"at most {cli.MAX_BYTES // cli.BYTES_PER_VALUE:,} values" in line


def test_running_out_of_memory_is_an_argument_error(monkeypatch, capsys):
    """Memory the size check cannot foresee (a GPU's, or host memory taken meanwhile)."""

    def out_of_memory(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(cli, "QuantizedArray", out_of_memory)
    line = _one_line_error(["--size", "100", "--backend", "numpy"], capsys)
    assert "argument --size: 100 values do not fit in the memory of backend 'numpy'" in line


def test_the_verdict_is_the_display_s_for_every_width(capsys):
    """Wide grids (46 bits and more) included: the CLI's error, bound and verdict are
    ``error_summary``'s for the same array, and all within the bound."""
    widths = [2, 16, 45, 46, 50, 53]
    assert main(["--size", "1000", "--bits", *map(str, widths), "--backend", "numpy"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if re.match(r"\s*\d+ ", line)]
    assert [int(row[0]) for row in rows] == widths
    values = numpy.random.default_rng(0).standard_normal(1000, dtype=numpy.float32)
    for row, n_bits in zip(rows, widths):
        expected = error_summary(QuantizedArray(n_bits, values))
        assert row[3:6] == [f"{expected['max_abs_error']:.6g}", f"{expected['bound']:.6g}", "yes"]
        assert expected["within_bound"] is True
