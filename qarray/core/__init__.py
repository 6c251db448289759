"""qarray.core: the rules below everything else, as plain functions and small values.

What it holds: argument checks (``checks``), the dtype tables and the clip range
(``dtypes``), block extents and parameter grids (``granularity``), the parameter
rule (``rule``), dyadic histogram values and bins (``dyadic``), the texts of data
errors (``messages``), the fields' descriptors (``fields``), array-library detection
(``namespace``), the sub-byte packing layout (``packing``) and the display registry (``rich``).

What it may import: the standard library, NumPy, array-api-compat and other modules
of ``qarray.core``; nothing else of qarray (``tests/test_layers.py`` holds this).
"""
