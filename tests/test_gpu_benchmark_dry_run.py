"""The GPU benchmark's host-side logic, without a GPU: it imports, parses, and its dry run passes.

``benchmarks/gpu_benchmark.py --dry-run`` builds the per-group (``block_size=128``)
quantizer and the device histogram's checks on small NumPy arrays, with the same functions
the GPU run times, and checks them against float64 references and the host histogram.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_benchmark.py"


@pytest.fixture(scope="module")
def gpu_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("qarray_gpu_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_checks_pass_without_a_gpu(gpu_benchmark: Any, tmp_path: Path) -> None:
    path = tmp_path / "dry.json"
    assert gpu_benchmark.main(["--dry-run", "--json", str(path)]) == 0
    document = json.loads(path.read_text())
    assert document["dry_run"] is True and document["all_checks_passed"] is True
    assert [size["exponent"] for size in document["sizes"]] == [5, 12, 14]
    for size in document["sizes"]:
        assert set(gpu_benchmark.GROUP_REQUIRED_CHECKS) <= set(size["checks"])


def test_help_lists_the_dry_run(gpu_benchmark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpu_benchmark.main(["--help"])
    assert exit_info.value.code == 0
    assert "--dry-run" in capsys.readouterr().out
