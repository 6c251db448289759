"""Print the compiled resources of qarray's CUDA kernels on this machine's GPU.

For the float32 kernels the benchmark times (and their float64 forms): registers per
thread, local memory (spills), static shared memory, and how many blocks of
``BLOCK_THREADS`` threads fit on a multiprocessor (the grid the backend launches is that
times the multiprocessor count). Run it where qarray and CuPy import, on a machine with an
NVIDIA GPU:

    python tools/gpu_kernel_report.py
"""

from __future__ import annotations

import sys


def main() -> int:
    """Print one line per kernel; return 0, or 2 when no GPU is usable."""
    try:
        import cupy

        from qarray.backends import cupy_backend, cupy_kernels

        properties = cupy.cuda.runtime.getDeviceProperties(0)
    except Exception as error:  # no CuPy, no qarray or no GPU: nothing to report
        print(f"skipped: {error}")
        return 2
    names = [
        cupy_kernels.kernel_name(kind, *dtypes)
        for kind, dtypes in [
            ("quant", ("float32", "int8")), ("quant", ("float64", "int8")), ("dequant", ("int8", "float32")),
            ("dequant", ("int16", "float32")), ("quant_grid", ("float32", "int8")),
            ("dequant_grid", ("int8", "float32")), ("minmax_partial", ("float32",)),
            ("minmax_partial", ("float64",)), ("hist_scan", ("float32",)), ("hist_bin", ("float32",)),
        ]
    ]
    print(f"{properties['name'].decode() if isinstance(properties['name'], bytes) else properties['name']}: "
          f"{properties['multiProcessorCount']} multiprocessors, {cupy_kernels.BLOCK_THREADS} threads per block")
    print(f"{'kernel':<36} {'registers':>9} {'local B':>8} {'shared B':>9} {'blocks/SM':>9}")
    for name in names:
        kernel = cupy_kernels.kernel(name)
        capacity = cupy_backend._device_capacity(cupy, kernel, 0) // properties["multiProcessorCount"]
        print(f"{name:<36} {kernel.num_regs:>9} {kernel.local_size_bytes:>8} "
              f"{kernel.shared_size_bytes:>9} {capacity:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
