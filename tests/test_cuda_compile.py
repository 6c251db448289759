"""The CUDA module compiles with NVRTC, as CuPy compiles it, for sm_80 and sm_90, without a GPU.

The source goes through CuPy's own compile path, the one ``cupy.RawModule`` takes
(``cupy._core.core.compile_with_cache``: CuPy's include directories and C++ standard,
then ``-ftz=true``, the architecture and ``--device-as-default-execution-space``), with
only the two questions CuPy would ask the GPU answered here: the architecture (pinned to
sm_80 and sm_90) and loading the binary (not done). The NVRTC call itself is CuPy's, so
the options are exactly those a GPU run uses, whatever this CuPy version adds.

Checked: the module compiles without a warning; every kernel the backend can launch
(:func:`qarray.backends.cupy_kernels.kernel_names`, so kernels added later are covered)
is in the binary and the PTX, and nothing else is; the PTX has no fused multiply-add
(``fma.*``), no approximate instruction (``.approx``, ``div.full``) and no floating-point
add, subtract or multiply without an explicit rounding mode, which PTX would allow the
assembler to contract into an FMA.

Skipped, with the reason, where CuPy or the NVRTC library is missing (install the
``gpu-compile`` extra: ``pip install -e ".[gpu-compile]"``; no GPU or driver needed).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import pytest

from qarray.backends import cupy_kernels

ARCHITECTURES = ("80", "90")
"""Compute capabilities checked: A100 (sm_80) and H100/H200 (sm_90)."""

try:
    _compiler = importlib.import_module("cupy.cuda.compiler")
    _core = importlib.import_module("cupy._core.core")
    _nvrtc = importlib.import_module("cupy_backends.cuda.libs.nvrtc")
except Exception as error:  # CuPy missing, or a build without these modules
    pytest.skip(
        f"CuPy is not importable ({error}): install the gpu-compile extra to compile the "
        "CUDA kernels with NVRTC",
        allow_module_level=True,
    )
try:
    NVRTC_VERSION: Tuple[int, int] = tuple(_nvrtc.getVersion())  # type: ignore[assignment]
except Exception as error:  # libnvrtc not found
    pytest.skip(
        f"the NVRTC library is not loadable ({error}): install the gpu-compile extra "
        "(nvidia-cuda-nvrtc)",
        allow_module_level=True,
    )


@dataclass(frozen=True)
class Compiled:
    """What NVRTC made of the module for one architecture.

    Attributes:
        options: the NVRTC options, as CuPy passed them.
        binary: the cubin (ELF) CuPy would load.
        ptx: the PTX text of the same compilation.
        log: NVRTC's program log (warnings).
    """

    options: Tuple[str, ...]
    binary: bytes
    ptx: str
    log: str


class _Captured(Exception):
    """Raised from inside CuPy's compile path once NVRTC is done, before CuPy loads the binary."""

    def __init__(self, compiled: Compiled) -> None:
        super().__init__("compiled")
        self.compiled = compiled


def compile_as_cupy_does(source: str, arch: str) -> Compiled:
    """Compile ``source`` for ``sm_<arch>`` through CuPy's RawModule path; return the result.

    Raises:
        AssertionError: if CuPy's compile path no longer has the places this relies on.
    """
    for owner, attribute in [
        (_core, "compile_with_cache"),
        (_compiler, "_get_arch"),
        (_compiler, "_get_arch_for_options_for_nvrtc"),
        (_compiler, "_NVRTCProgram"),
    ]:
        assert hasattr(owner, attribute), (
            f"CuPy {importlib.import_module('cupy').__version__} has no {owner.__name__}.{attribute}: "
            "its compile path changed; update tests/test_cuda_compile.py"
        )
    original_compile = _compiler._NVRTCProgram.compile

    def compile_and_capture(program: Any, options: Tuple[str, ...] = (), log_stream: Any = None) -> Any:
        result = original_compile(program, options, log_stream)
        if program.src.strip():  # not CuPy's empty preprocessing probe
            ptx = _nvrtc.getPTX(program.ptr)
            log = _nvrtc.getProgramLog(program.ptr)
            raise _Captured(
                Compiled(
                    tuple(options),
                    bytes(result[0]),
                    ptx.decode() if isinstance(ptx, bytes) else ptx,
                    log.decode() if isinstance(log, bytes) else log,
                )
            )
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUPY_CACHE_IN_MEMORY", "1")  # compile now, never reuse a cached binary
        # The two answers CuPy would get from the GPU: its architecture (a real one, so
        # NVRTC makes a cubin, as CuPy does whenever NVRTC supports the architecture).
        patch.setattr(_compiler, "_get_arch", lambda: arch)
        patch.setattr(
            _compiler, "_get_arch_for_options_for_nvrtc", lambda arch=None: (f"-arch=sm_{arch}", "cubin")
        )
        patch.setattr(_compiler._NVRTCProgram, "compile", compile_and_capture)
        try:
            # The call cupy.RawModule(code=..., options=...) makes on first use.
            _core.compile_with_cache(
                source, tuple(cupy_kernels.COMPILE_OPTIONS), prepend_cupy_headers=False,
                backend="nvrtc", translate_cucomplex=False, enable_cooperative_groups=False,
                name_expressions=None, log_stream=None, jitify=False,
            )
        except _Captured as captured:
            return captured.compiled
    raise AssertionError("CuPy's compile path returned without calling NVRTC on the source")


@pytest.fixture(scope="module")
def compiled() -> Dict[str, Compiled]:
    """The module compiled for every architecture of ARCHITECTURES."""
    source = cupy_kernels.source()
    return {arch: compile_as_cupy_does(source, arch) for arch in ARCHITECTURES}


def instructions(ptx: str) -> List[str]:
    """The PTX instruction lines, comments and directives left out."""
    lines = []
    for line in ptx.splitlines():
        code = line.split("//", 1)[0].strip()
        if code.startswith("@"):  # a predicated instruction: drop the guard
            code = code.split(None, 1)[1] if " " in code else ""
        if code and not code.startswith((".", "{", "}", "(", ")", "$")) and not code.endswith(":"):
            lines.append(code)
    return lines


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_module_compiles_with_the_options_cupy_uses(compiled: Dict[str, Compiled], arch: str) -> None:
    result = compiled[arch]
    for option in (*cupy_kernels.COMPILE_OPTIONS, "-ftz=true", f"-arch=sm_{arch}"):
        assert option in result.options
    assert not any("fast-math" in option or "fmad=true" in option for option in result.options)
    assert result.binary[:4] == b"\x7fELF"
    assert f".target sm_{arch}" in result.ptx
    assert "warning" not in result.log.lower(), result.log


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_kernel_the_backend_can_launch_is_in_the_module(compiled: Dict[str, Compiled], arch: str) -> None:
    result = compiled[arch]
    launchable = set(cupy_kernels.kernel_names())
    entries = set(re.findall(r"\.entry\s+([A-Za-z_]\w*)\s*\(", result.ptx))
    assert entries == launchable
    missing = [name for name in launchable if b"\0" + name.encode() + b"\0" not in result.binary]
    assert missing == []


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_ptx_has_no_fused_multiply_add_and_no_approximation(compiled: Dict[str, Compiled], arch: str) -> None:
    lines = instructions(compiled[arch].ptx)
    assert any(re.match(r"div\.rn\.f64\b", line) for line in lines)  # the scan sees arithmetic
    fused = [line for line in lines if re.search(r"(^|\s)fma\.", line) or re.match(r"mad\.(\w+\.)?f(32|64)\b", line)]
    approximate = [line for line in lines if ".approx" in line or line.startswith("div.full")]
    # Without .rn/.rz/.rm/.rp, PTX lets the assembler fuse a multiply and an add.
    contractible = [
        line for line in lines
        if re.match(r"(add|sub|mul)(\.ftz)?(\.sat)?\.f(16|32|64)\b", line)
    ]
    assert fused == [] and approximate == [] and contractible == [], (fused + approximate + contractible)[:10]


# -- the packing module (qarray.backends.cupy_packing), compiled the same way ----------------------


@pytest.fixture(scope="module")
def compiled_packing() -> Dict[str, Compiled]:
    """The packing module compiled for every architecture of ARCHITECTURES."""
    from qarray.backends import cupy_packing

    assert cupy_packing.COMPILE_OPTIONS == cupy_kernels.COMPILE_OPTIONS  # the options compile_as_cupy_does passes
    return {arch: compile_as_cupy_does(cupy_packing.source(), arch) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_packing_module_compiles_with_every_kernel_and_no_float(compiled_packing: Dict[str, Compiled],
                                                               arch: str) -> None:
    from qarray.backends import cupy_packing

    result = compiled_packing[arch]
    assert result.binary[:4] == b"\x7fELF" and f".target sm_{arch}" in result.ptx
    assert "warning" not in result.log.lower(), result.log
    assert set(re.findall(r"\.entry\s+([A-Za-z_]\w*)\s*\(", result.ptx)) == set(cupy_packing.kernel_names())
    floating = [line for line in instructions(result.ptx) if re.search(r"\.f(16|32|64)\b", line)]
    assert floating == [], floating[:10]  # integer work only
