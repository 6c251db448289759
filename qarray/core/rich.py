"""The rich-display registry: how the classes reach their Jupyter display without importing it.

qarray's classes sit below the display layer: their ``_repr_html_`` calls
:func:`render_html` here, a :func:`functools.singledispatch` function whose
renderers :mod:`qarray.display` registers when it is imported (``import qarray``
imports it, so Jupyter shows the summaries after ``import qarray``). An object
without a registered renderer shows its ``repr``, escaped, so a display never
fails. :func:`mode_name` lives here too: the classes' ``repr`` needs it and
must not import the display module for it.
"""

from __future__ import annotations

import functools
import html
from typing import Any

__all__ = ["mode_name", "render_html"]


@functools.singledispatch
def render_html(obj: Any) -> str:
    """Return the HTML Jupyter shows for ``obj``: its registered renderer's, else its escaped repr.

    :mod:`qarray.display` registers a renderer for each of qarray's classes with
    ``render_html.register(cls, function)``.

    Example:
        >>> print(render_html(3))
        <pre>3</pre>
    """
    return f"<pre>{html.escape(repr(obj))}</pre>"


def mode_name(options: Any) -> str:
    """Return a short name for the kind of quantization ``options`` ask for.

    Args:
        options: a :class:`~qarray.QuantizationOptions` (or an object with its fields),
            or None.

    Returns:
        The name (signed or unsigned, symmetric, QAT, narrow, a runtime profile);
        ``"unset"`` for None.

    Example:
        >>> from qarray import QuantizationOptions
        >>> mode_name(QuantizationOptions(8, is_signed=True, is_symmetric=True))
        'signed symmetric'
        >>> mode_name(None)
        'unset'
    """
    if options is None:
        return "unset"
    name = "signed" if options.is_signed else "unsigned"
    if options.is_symmetric:
        name += " symmetric"
    if options.is_qat:
        name += " QAT (precomputed)" if options.is_precomputed_qat else " QAT (inferred scale)"
    if options.is_narrow:
        name += ", narrow"
    profile = getattr(options, "profile", "concrete")
    if profile != "concrete":
        name += f", {profile} profile"
    return name
