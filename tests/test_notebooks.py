"""The notebooks run top to bottom on a CPU-only machine, quickly, and are stored clean.

Each notebook in ``notebooks/`` is executed with nbclient on a kernel of this
interpreter (its ipykernel), with matplotlib's Agg backend. The GPU cells of
``03_gpu_batches`` skip themselves when no CUDA device is visible.
"""

from __future__ import annotations

import importlib.util
import pathlib
import time

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
TIME_BUDGET_S = 60.0
"""Each notebook must run, kernel start included, in less than this."""

_NEEDED = ("nbclient", "nbformat", "ipykernel", "matplotlib", "dask")


def _missing() -> list:
    return [name for name in _NEEDED if importlib.util.find_spec(name) is None]


def test_there_are_notebooks():
    assert [path.name for path in NOTEBOOK_FILES] == [
        "01_quick_start.ipynb",
        "02_calibration.ipynb",
        "03_gpu_batches.ipynb",
        "04_histogram_calibration.ipynb",
        "05_per_channel_weights.ipynb",
        "06_which_runtime.ipynb",
        "07_onnx_weights.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda path: path.stem)
def test_notebook_is_stored_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    missing = _missing()
    if missing:
        pytest.skip(f"running notebooks needs {', '.join(missing)} (pip install '.[notebooks,dask]')")
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it: no windows, no inline GUI
    notebook = nbformat.read(path, as_version=4)
    # "python3" is the native kernel of the installed ipykernel; jupyter_client starts it
    # with this interpreter (sys.executable), so the kernel sees this environment.
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=int(TIME_BUDGET_S * 2),
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("output_type") == "error"
    ]
    assert errors == []
    assert elapsed < TIME_BUDGET_S, f"{path.name} took {elapsed:.1f} s"
