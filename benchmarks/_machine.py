"""What the CPU benchmarks record about the machine, and how they read the process's memory.

Imported by the benchmark scripts (run as ``python benchmarks/<name>.py``, which puts
this folder on the import path).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import resource
import subprocess
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy

import qarray

__all__ = ["machine_info", "peak_bytes", "reset_peak", "rss_bytes"]


def rss_bytes() -> int:
    """The process's resident memory now (Linux)."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux); False where
    that is not possible (the peak then runs from the start of the process)."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    """The peak RSS since :func:`reset_peak` (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _git(*args: str) -> Optional[str]:
    here = os.path.dirname(os.path.abspath(qarray.__file__))
    try:
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(
    modules: Sequence[str], importers: Optional[Mapping[str, Callable[[], Any]]] = None
) -> Dict[str, Any]:
    """Versions, threads, the processor, memory and qarray's commit, for the record.

    Args:
        modules: the optional libraries whose versions to record (where installed).
        importers: for a module that needs a quiet import, the function that imports it.
    """
    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": _processor(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "numpy": numpy.__version__,
        "qarray": qarray.__version__,
        "qarray_commit": _git("describe", "--always", "--dirty", "--abbrev=12"),
        "date": time.strftime("%Y-%m-%d"),
    }
    for module in modules:
        if importlib.util.find_spec(module) is not None:
            try:
                if importers and module in importers:
                    importers[module]()
                info[module] = __import__(module).__version__
            except Exception:
                info[module] = "does not import"
    if "torch" in info:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    if "numba" in info:
        import numba

        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    return info
