#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU and CuPy (no internet needed), stage qarray from
# this working tree, run the test suite with CuPy visible (so every backend-parametrized test
# also runs on the GPU) and the GPU benchmark, and write a log and a JSON summary.
#
# Usage: tools/gpu_check.sh [--out DIR] [--wheels DIR] [--python PY] [--quick | --gpu-only] [--sizes "N ..."]
#   --out DIR      where the log and results go (default ./gpu-check-out)
#   --wheels DIR   wheels for Python packages missing on the machine, installed without
#                  downloads (default .whl): array-api-compat is required; array-api-strict,
#                  pytest and hypothesis when the machine lacks them
#   --python PY    the Python that has CuPy (default python3)
#   --quick        the GPU tests (tests/test_gpu*), every cupy-parametrized test and the kernel
#                  test files (tests/test_cuda_*, test_granularity*, test_histogram*), and the
#                  benchmark at every size with fewer repeats
#   --gpu-only     only what needs the GPU: tests/test_gpu*.py and the cupy-parametrized tests
#                  (the NVRTC compile and CPU emulation tests run in CI), fewer benchmark repeats
#   --sizes "N ..." the benchmark's sizes, as powers of two (default 24 27 29)
#
# Nothing is installed into that Python: qarray is staged (its package layout, as pyproject.toml
# maps it) and the wheels unpacked into a temporary folder put on PYTHONPATH. The whole run is
# bounded by timeouts to finish within 6 minutes. Exit status: 0 when tests and benchmark
# checks pass, 1 otherwise, 2 when no GPU or CuPy is usable.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="./gpu-check-out"
wheels=".whl"
python="python3"
quick=0
gpu_only=0
sizes=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --wheels) wheels="${2:?--wheels needs a directory}"; shift 2 ;;
    --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
    --quick) quick=1; shift ;;
    --gpu-only) gpu_only=1; shift ;;
    --sizes) sizes="${2:?--sizes needs powers of two}"; shift 2 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
case "$wheels" in /*) ;; *) wheels="$repo/$wheels" ;; esac
log="$out/gpu-check.log"
: >"$log"
exec > >(tee -a "$log") 2>&1

if [ "$gpu_only" = 1 ]; then
  tests_timeout=140; bench_timeout=80; bench_args=(--repeats 5)
elif [ "$quick" = 1 ]; then
  # Fewer tests, but the benchmark keeps every size (2^24, 2^27, 2^29) with fewer repeats.
  tests_timeout=200; bench_timeout=120; bench_args=(--repeats 5)
else
  tests_timeout=190; bench_timeout=120; bench_args=()
fi

stage="$(mktemp -d "${TMPDIR:-/tmp}/qarray-gpu-check.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
site="$stage/site"
src="$stage/src"
mkdir -p "$site" "$src"

say() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

say "machine"
date -u +"%Y-%m-%dT%H:%M:%SZ"
echo "repository: $repo"
(cd "$repo" && git rev-parse --short HEAD 2>/dev/null && git status --short 2>/dev/null | head -20) || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$python" - <<'PY' || { echo "no usable Python/CuPy/GPU"; exit 2; }
import platform, sys
print("python", platform.python_version(), sys.executable)
import numpy
print("numpy", numpy.__version__)
import cupy
count = cupy.cuda.runtime.getDeviceCount()
name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
print("cupy", cupy.__version__, "devices", count, name.decode() if isinstance(name, bytes) else name)
if count < 1:
    raise SystemExit("no CUDA GPU")
PY

say "packages the machine lacks (from $wheels, no downloads)"
missing_required=0
for module_package in array_api_compat:array-api-compat array_api_strict:array-api-strict \
                      pytest:pytest hypothesis:hypothesis; do
  module="${module_package%%:*}"; package="${module_package#*:}"
  if "$python" -c "import $module" 2>/dev/null; then
    echo "$package: present"
    continue
  fi
  pattern="$(echo "$package" | tr '-' '_')-*.whl"
  wheel="$(ls "$wheels"/$pattern 2>/dev/null | sort | tail -n 1)"
  if [ -z "$wheel" ]; then
    echo "$package: MISSING and no wheel $pattern in $wheels"
    [ "$module" = array_api_compat ] || [ "$module" = pytest ] && missing_required=1
    continue
  fi
  if "$python" -m pip --version >/dev/null 2>&1; then
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install -q --disable-pip-version-check --no-index \
      --no-deps --no-compile --no-cache-dir --target "$site" "$wheel" \
      && echo "$package: installed from $(basename "$wheel")" && continue
  fi
  # No pip (or it failed): a pure-Python wheel is a zip of the package, usable as it is.
  "$python" -m zipfile -e "$wheel" "$site" && echo "$package: unpacked from $(basename "$wheel")" \
    || { echo "$package: could not install $wheel"; missing_required=1; }
done
if [ "$missing_required" = 1 ]; then
  echo "required packages are missing; carry their wheels in $wheels (see --help)"
fi

say "staging qarray from the working tree"
"$python" - "$repo" "$src" <<'PY' || exit 2
import shutil, sys
from pathlib import Path

repo, target = Path(sys.argv[1]), Path(sys.argv[2])
mapping = {"qarray": "qarray", "qarray.backends": "backends"}
try:
    import tomllib
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"] or mapping
except Exception as error:  # Python < 3.11 or no mapping: the layout this project has
    print(f"(pyproject.toml not read: {error}; using the default layout)")
ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
    destination = target.joinpath(*package.split("."))
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(repo / folder, destination, ignore=ignore)
    print(f"{package} <- {folder}/")
PY
export PYTHONPATH="$src:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
(cd "$src" && "$python" -c "import qarray, qarray.backends.cupy_backend; print('qarray', qarray.__version__, 'from', qarray.__file__)") \
  || { echo "qarray does not import"; exit 2; }

say "kernel resources"
(cd "$src" && timeout 60 "$python" "$repo/tools/gpu_kernel_report.py") || echo "(kernel report failed)"

say "tests (timeout ${tests_timeout}s)"
pytest_args=(-q -rs -p no:cacheprovider -p qarray --rootdir "$repo" -c "$repo/pyproject.toml"
             --junitxml "$out/junit.xml")
if "$python" -c "import pytest_timeout" 2>/dev/null; then
  pytest_args+=(--timeout 120)
fi
if [ "$quick" = 1 ]; then
  # The GPU tests (test_gpu.py, test_gpu_granularity.py: per-block parameters and device
  # histograms), every cupy-parametrized test, and the whole files about the kernels: the
  # NVRTC compile and CPU emulation checks (grid and histogram kernels included), granularity
  # and histogram tests (where present; their xb-parametrized tests run on CuPy too).
  keywords="cupy or gpu"
  shopt -s nullglob
  for file in "$repo"/tests/test_gpu*.py "$repo"/tests/test_cuda_*.py "$repo"/tests/test_granularity*.py \
              "$repo"/tests/test_histogram*.py; do
    module="$(basename "$file" .py)"
    keywords="$keywords or $module"
  done
  shopt -u nullglob
  pytest_args+=(-k "$keywords")
fi
test_paths=("$repo/tests")
if [ "$gpu_only" = 1 ]; then
  pytest_args+=(-k "cupy or gpu")
fi
if [ -n "$sizes" ]; then
  # shellcheck disable=SC2206  # the sizes are words on purpose
  bench_args+=(--sizes $sizes)
fi
# Run from the staging folder so that the checkout's qarray/ (which lacks qarray.backends)
# never shadows the staged package; -p qarray imports it before any test module.
(cd "$src" && timeout "$tests_timeout" "$python" -m pytest "${pytest_args[@]}" "${test_paths[@]}")
tests_rc=$?
echo "pytest exit status: $tests_rc"

say "benchmark (timeout ${bench_timeout}s)"
(cd "$src" && timeout "$bench_timeout" "$python" "$repo/benchmarks/gpu_benchmark.py" \
   "${bench_args[@]}" --json "$out/benchmark.json")
bench_rc=$?
echo "benchmark exit status: $bench_rc"

say "summary"
"$python" - "$out" "$tests_rc" "$bench_rc" "$started" "$quick" <<'PY'
import json, sys, time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

out, tests_rc, bench_rc, started, quick = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
summary = {"quick": quick, "seconds": round(time.time() - started, 1),
           "tests": {"exit_status": tests_rc}, "benchmark": {"exit_status": bench_rc}}
try:
    root = ElementTree.parse(out / "junit.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    for key in ("tests", "failures", "errors", "skipped", "time"):
        summary["tests"][key] = float(suite.get(key, 0)) if key == "time" else int(suite.get(key, 0))
    failed = []
    for case in suite.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    summary["tests"]["failed"] = failed[:200]
    summary["tests"]["gpu_tests_run"] = sum(
        1 for case in suite.iter("testcase")
        if "test_gpu" in (case.get("classname") or "") and case.find("skipped") is None)
except Exception as error:
    summary["tests"]["junit_error"] = str(error)
try:
    summary["benchmark"]["results"] = json.loads((out / "benchmark.json").read_text())
except Exception as error:
    summary["benchmark"]["error"] = str(error)
summary["passed"] = tests_rc == 0 and bench_rc == 0
(out / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n")
tests = summary["tests"]
print(f"tests: {tests.get('tests', '?')} run, {tests.get('failures', '?')} failed, "
      f"{tests.get('errors', '?')} errors, {tests.get('skipped', '?')} skipped "
      f"({tests.get('gpu_tests_run', '?')} of them in test_gpu.py ran); benchmark exit {bench_rc}")
print(f"written: {out / 'gpu-check.log'}, {out / 'gpu-check.json'}, {out / 'junit.xml'}, {out / 'benchmark.json'}")
print("PASSED" if summary["passed"] else "FAILED")
PY

if [ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]; then exit 0; fi
exit 1
