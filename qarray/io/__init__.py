"""qarray.io: documents as JSON, and what a document may hold.

What it holds: the codec of fields and arrays, the ``Serializable`` base of the
classes, streaming and atomic writing of files (``codec``), the consistency
checks a document must pass to be written or loaded (``consistency``, a registry the
classes fill), and the strict reader and writer of the safetensors header
(``tensorfile``). Loading any document by its type tag is one floor up, in
``qarray.documents``.

What it may import: ``qarray.core`` and ``qarray.backends``; never the classes, the
calibration, the primitives or the display (``tests/test_layers.py`` holds this).
"""
