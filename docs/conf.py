"""Sphinx configuration of qarray's documentation site.

Build it with ``sphinx-build -W --keep-going docs docs/_build/html`` (the ``docs`` extra
installs what it needs). Pages are Markdown (MyST); the notebooks are executed at build
time; the API reference comes from the docstrings (Google style, through napoleon).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import qarray  # noqa: E402  (after the path is set)

project = "qarray"
author = "the qarray developers"
copyright = "the qarray developers"  # noqa: A001  (Sphinx's name)
release = qarray.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "notebooks/README*"]
html_theme = "furo"
html_title = f"qarray {release}"

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

nb_execution_mode = "force"
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_execution_show_tb = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
