"""qarray.calibration: exact, mergeable dyadic histograms and the ranges chosen from them.

What it holds: counting values into histograms with the backends' kernels, merging
and coarsening them, and the range methods (``minmax``, ``percentile``, ``mse``,
``entropy``) in ``histogram``; lazy (Dask) histograms in ``dask_histogram``.

What it may import: ``qarray.core`` and ``qarray.backends``; never the classes, the
documents or the display (``tests/test_layers.py`` holds this).
"""
