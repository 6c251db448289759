"""Build qarray's CUDA kernel source for the CPU, with ``cuda_emulation.h``, and load it.

This module owns turning :func:`qarray.backends.cupy_kernels.source` into a shared
library: it finds every ``extern "C" __global__`` kernel in the source (so kernels
added later are covered without a change here), appends one host launcher per kernel,
``qarray_emulate_<name>(grid, block, <the kernel's parameters>)``, compiles the whole
with the host C++ compiler (IEEE arithmetic: ``-O2 -ffp-contract=off``, no fast-math)
and loads it with :mod:`ctypes`. :class:`EmulatedModule` launches a kernel by name with
NumPy arrays for pointers, as CuPy's ``RawKernel`` does on a GPU.

Example:
    >>> module = EmulatedModule.build(source(), workdir)  # doctest: +SKIP
    >>> module.launch("qarray_dequant_int8_float32", 1, 256, q, y, q.size, 0.5, 0.0)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy

__all__ = ["COMPILE_FLAGS", "EmulatedModule", "KernelSignature", "find_compiler", "kernel_signatures"]

HEADER = Path(__file__).with_name("cuda_emulation.h")

COMPILE_FLAGS: Tuple[str, ...] = (
    "-std=c++17",
    "-O2",
    "-ffp-contract=off",  # no multiply-add contraction, as --fmad=false on the GPU
    "-fno-fast-math",
    "-fvisibility=hidden",  # one emulation state per library, even with several loaded
    "-fPIC",
    "-shared",
)
"""Host compiler flags: IEEE float64 and float32, one rounding per operation."""

_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\(\s*(\d+)[^)]*\)\s+)?'
    r"([A-Za-z_]\w*)\s*\(([^)]*)\)",
    re.S,
)

_SCALARS: Dict[str, Any] = {
    "signed char": ctypes.c_byte,
    "char": ctypes.c_char,
    "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short,
    "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "bool": ctypes.c_bool,
}


@dataclass(frozen=True)
class KernelSignature:
    """One kernel of the source: its name, launch bound and parameters.

    Attributes:
        name: the kernel's (unmangled) name.
        max_threads: the ``__launch_bounds__`` thread count, 0 when none is given.
        parameters: the parameter declarations as written.
        argument_names: the parameter names, in order.
        ctypes_types: the :mod:`ctypes` type of each parameter (``c_void_p`` for pointers).
    """

    name: str
    max_threads: int
    parameters: Tuple[str, ...]
    argument_names: Tuple[str, ...]
    ctypes_types: Tuple[Any, ...]


def kernel_signatures(source: str) -> List[KernelSignature]:
    """Return every ``extern "C" __global__`` kernel declared in ``source``, in order.

    Raises:
        ValueError: if a parameter has a type this module cannot pass from Python.
    """
    found = []
    for match in _KERNEL.finditer(source):
        bound, name, parameter_text = match.groups()
        parameters = tuple(p.strip() for p in parameter_text.split(",") if p.strip())
        names, types = [], []
        for parameter in parameters:
            words = re.findall(r"[A-Za-z_]\w*|\*", parameter)
            names.append(words[-1])
            if "*" in words:
                types.append(ctypes.c_void_p)
                continue
            base = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "volatile"))
            if base not in _SCALARS:
                raise ValueError(f"kernel {name}: parameter {parameter!r} has no ctypes type")
            types.append(_SCALARS[base])
        found.append(
            KernelSignature(name, int(bound or 0), parameters, tuple(names), tuple(types))
        )
    return found


def find_compiler() -> Optional[str]:
    """Return the host C++ compiler to use ($CXX, else g++, clang++ or c++), or None."""
    for candidate in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


_PROBES = r"""
// Emulation self-checks (not qarray kernels).
extern "C" __global__ void qarray_emulation_probe_early_return(int* out) {
    if (threadIdx.x == 7u) return;  // a thread that never reaches the barrier
    __syncthreads();
    out[threadIdx.x] = 1;
}
"""

# Appended only to a source that defines the profiles' float32 helpers (the quantization
# kernels do; the packing module does not).
_FLOAT32_PROBE = r"""
// The numerics profiles' float32 helpers, on their own: quotient[i] = a[i] / b[i] and
// product[i] = a[i] * b[i] as the kernels compute them (IEEE float32 despite -ftz=true).
extern "C" __global__ void qarray_emulation_probe_float32_arithmetic(
    const float* a, const float* b, float* quotient, float* product, long long n)
{
    auto one = [&](long long i) {
        quotient[i] = qarray_div32(a[i], b[i]);
        product[i] = qarray_mul32(a[i], b[i]);
    };
    qarray_each_index(0, n, one);
}
"""

_HOST_HELPERS = r"""
QARRAY_EMULATION_EXPORT const char* qarray_emulation_error() {
    return ::qarray_cuda_emulation::last_error().c_str();
}
// float <-> double as compiled kernel code converts them (under -ftz=true).
QARRAY_EMULATION_EXPORT unsigned long long qarray_emulation_widen(unsigned int bits) {
    return (unsigned long long)__double_as_longlong((double)__uint_as_float(bits));
}
QARRAY_EMULATION_EXPORT unsigned int qarray_emulation_narrow(double value) {
    return __float_as_uint((float)value);
}
"""


def _probes(source: str) -> str:
    """Return the self-check kernels that ``source`` can host."""
    return _PROBES + (_FLOAT32_PROBE if "qarray_div32(" in source else "")


def translation_unit(source: str) -> str:
    """Return the C++ text that is compiled: the header, ``source``, probes and launchers."""
    probes = _probes(source)
    parts = ['#include "cuda_emulation.h"', "#line 1 \"qarray_kernels.cu\"", source, probes]
    for kernel in kernel_signatures(source + probes):
        parts.append(
            f"QARRAY_EMULATION_EXPORT int qarray_emulate_{kernel.name}(unsigned int grid, unsigned int block"
            + "".join(f", {p}" for p in kernel.parameters)
            + ") {\n"
            + f'    return ::qarray_cuda_emulation::launch("{kernel.name}", dim3(grid), dim3(block), '
            + f"{kernel.max_threads}u, [=]() {{ {kernel.name}({', '.join(kernel.argument_names)}); }});\n"
            + "}"
        )
    parts.append(_HOST_HELPERS)
    return "\n".join(parts) + "\n"


class EmulatedModule:
    """The kernels of one source, compiled for the CPU and loaded.

    Args:
        library_path: the shared library :meth:`build` made.
        source: the CUDA source it was built from.
    """

    def __init__(self, library_path: Path, source: str) -> None:
        self.path = library_path
        self.library = ctypes.CDLL(str(library_path))
        self.kernels: Dict[str, KernelSignature] = {
            k.name: k for k in kernel_signatures(source + _probes(source))
        }
        self.library.qarray_emulation_error.restype = ctypes.c_char_p
        self.library.qarray_emulation_widen.restype = ctypes.c_ulonglong
        self.library.qarray_emulation_widen.argtypes = [ctypes.c_uint]
        self.library.qarray_emulation_narrow.restype = ctypes.c_uint
        self.library.qarray_emulation_narrow.argtypes = [ctypes.c_double]
        self._functions = {}
        for name, kernel in self.kernels.items():
            function = getattr(self.library, f"qarray_emulate_{name}")
            function.argtypes = [ctypes.c_uint, ctypes.c_uint, *kernel.ctypes_types]
            function.restype = ctypes.c_int
            self._functions[name] = function

    @classmethod
    def build(cls, source: str, workdir: Path, compiler: str) -> EmulatedModule:
        """Compile ``source`` into ``workdir`` (reused when the same text was built) and load it.

        Raises:
            RuntimeError: with the compiler's output, if the compilation fails.
        """
        text = translation_unit(source)
        key = hashlib.sha256(
            "\0".join([text, HEADER.read_text(), compiler, *COMPILE_FLAGS]).encode()
        ).hexdigest()[:16]
        library = Path(workdir) / f"qarray_kernels_{key}.so"
        if not library.exists():
            unit = Path(workdir) / f"qarray_kernels_{key}.cpp"
            unit.write_text(text)
            partial = library.with_suffix(".so.partial")
            command = [compiler, *COMPILE_FLAGS, "-I", str(HEADER.parent), str(unit), "-o", str(partial)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
                )
            partial.replace(library)
        return cls(library, source)

    def launch(self, name: str, grid: int, block: int, *arguments: Any) -> None:
        """Run kernel ``name`` on ``grid`` blocks of ``block`` threads.

        Arguments are passed as CuPy passes them: NumPy arrays (C-contiguous) as device
        pointers, None as a null pointer, numbers as the parameter's C type.

        Raises:
            RuntimeError: if the emulation reports a broken CUDA rule (a deadlock at a
                barrier, a bad warp mask, a launch above the kernel's bound).
        """
        kernel = self.kernels[name]
        if len(arguments) != len(kernel.ctypes_types):
            raise TypeError(f"{name} takes {len(kernel.ctypes_types)} arguments, got {len(arguments)}")
        converted: List[Any] = []
        for argument, kind in zip(arguments, kernel.ctypes_types):
            if kind is ctypes.c_void_p:
                if argument is None:
                    converted.append(None)
                    continue
                if not (isinstance(argument, numpy.ndarray) and argument.flags.c_contiguous):
                    raise TypeError(f"{name}: pointer arguments must be C-contiguous NumPy arrays")
                converted.append(argument.ctypes.data)
            else:
                converted.append(argument)
        if self._functions[name](grid, block, *converted) != 0:
            raise RuntimeError(self.library.qarray_emulation_error().decode())

    def widen(self, bits: int) -> int:
        """Return the bits of ``(double)`` of the float with ``bits``, as kernel code converts it."""
        return int(self.library.qarray_emulation_widen(bits))

    def narrow(self, value: float) -> int:
        """Return the bits of ``(float)value`` as kernel code converts it."""
        return int(self.library.qarray_emulation_narrow(value))

