"""Pickling and deep copies of every public class, on every backend.

A copy must equal the original (``==``) and keep its arrays in the same library
and on the same device: a CuPy-backed object comes back on the GPU, a Dask-backed
one stays lazy. Backends travel by their registry name and are found again in
the receiving process; the locks of shared statistics are not pickled. Two tests
send objects to other processes for real: through ``multiprocessing`` (spawn)
and to a Dask distributed worker.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import threading
from typing import Any, Callable, Dict

import numpy
import pytest

from qarray import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizer,
)
from qarray.backends import backend_for
from qarray.core.namespace import array_namespace, device_of, is_lazy, library_name

VALUES = [-1.5, -0.25, 0.0, 0.4, 1.0, 2.75]

COPIERS: Dict[str, Callable[[Any], Any]] = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "pickle-protocol-2": lambda obj: pickle.loads(pickle.dumps(obj, protocol=2)),
    "deepcopy": copy.deepcopy,
}


def _objects(xb: Any) -> Dict[str, Any]:
    """One object of every public class, holding arrays of ``xb``'s library where it can."""
    options = QuantizationOptions(6, is_signed=True, is_qat=True)
    array = QuantizedArray(6, xb.asarray(VALUES), options=options)
    pending = MinMaxQuantizationStats()
    pending.update(xb.asarray(VALUES), with_uvalues=True)  # a running range not read back yet
    return {
        "QuantizationOptions": options,
        "MinMaxQuantizationStats": array.quantizer.stats,
        "MinMaxQuantizationStats(pending)": pending,
        "UniformQuantizationParameters": array.quantizer.params,
        "UniformQuantizer": array.quantizer,
        "QuantizedArray": array,
        "QuantizedArray(empty)": QuantizedArray(4, None),
    }


def _arrays(obj: Any) -> Dict[str, Any]:
    """The arrays an object holds, by where they sit."""
    if isinstance(obj, QuantizedArray):
        found = {"values": obj.values, "qvalues": obj.qvalues}
        found.update({f"quantizer.{k}": v for k, v in _arrays(obj.quantizer).items()})
    elif isinstance(obj, UniformQuantizer):
        found = {f"stats.{k}": v for k, v in _arrays(obj.stats).items()}
    elif isinstance(obj, MinMaxQuantizationStats):
        found = {"uvalues": obj.uvalues}
        if obj._pending is not None:
            low, high = obj._pending.newest
            found.update({"pending.low": low, "pending.high": high})
    else:
        found = {}
    return {where: array for where, array in found.items() if array is not None and not numpy.isscalar(array)}


@pytest.mark.parametrize("how", COPIERS, ids=str)
def test_every_class_copies_equal_and_in_the_same_library(xb: Any, how: str) -> None:
    for name, original in _objects(xb).items():
        before = _arrays(original)
        copied = COPIERS[how](original)
        assert type(copied) is type(original), name
        after = _arrays(copied)  # before ``==``, which reads pending ranges back
        assert sorted(after) == sorted(before), name
        assert copied == original, name
        for where, array in before.items():
            twin = after[where]
            assert twin is not array, f"{name}.{where} is shared, not copied"
            assert library_name(array_namespace(twin)) == library_name(array_namespace(array)), f"{name}.{where}"
            assert is_lazy(twin) == is_lazy(array), f"{name}.{where}"
            if not is_lazy(array):
                assert device_of(twin) == device_of(array), f"{name}.{where}"
            numpy.testing.assert_array_equal(xb.to_numpy(twin), xb.to_numpy(array), err_msg=f"{name}.{where}")


def test_a_copied_quantized_array_keeps_its_backend_and_works(xb: Any) -> None:
    original = QuantizedArray(8, xb.asarray(VALUES), is_signed=True)
    for how, copier in COPIERS.items():
        copied = copier(original)
        assert copied.backend is backend_for(copied.values), how
        assert copied.backend.name == original.backend.name, how
        fresh = copied.update_values(xb.asarray([0.5, -1.0]))
        expected = original.quantizer.quant(xb.asarray([0.5, -1.0]))
        numpy.testing.assert_array_equal(xb.to_numpy(fresh), xb.to_numpy(expected))
        assert library_name(array_namespace(fresh)) == library_name(array_namespace(original.values)), how


def test_a_backend_chosen_by_name_comes_back_by_that_name() -> None:
    from qarray.backends import NumpyBackend, get_backend, register_backend

    register_backend("pickling-test-numpy", NumpyBackend, replace=True)
    original = QuantizedArray(8, numpy.array(VALUES), backend="pickling-test-numpy")
    copied = pickle.loads(pickle.dumps(original))
    assert copied.backend is get_backend("pickling-test-numpy")
    assert copied == original


def test_copied_statistics_have_a_lock_of_their_own() -> None:
    stats = MinMaxQuantizationStats()
    stats.update(numpy.array(VALUES), with_uvalues=True)
    assert "_lock" not in pickle.loads(pickle.dumps(stats)).__getstate__()
    copied = copy.deepcopy(stats)
    assert copied._guard() is not stats._guard()
    with stats._guard():  # the original's lock held in another thread must not block the copy
        done = threading.Event()
        worker = threading.Thread(target=lambda: (copied.update(numpy.array([9.0])), done.set()))
        worker.start()
        assert done.wait(timeout=10)
        worker.join()
    assert float(copied.rmax) == 9.0 and float(stats.rmax) == max(VALUES)


def test_a_quantized_array_through_multiprocessing() -> None:
    original = QuantizedArray(8, numpy.array(VALUES), is_signed=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        # The worker unpickles the array, dequantizes there and sends the array back.
        back = pool.apply(copy.copy, (original,))
        values = pool.apply(QuantizedArray.dequant, (original,))
    assert back == original
    numpy.testing.assert_array_equal(values, original.quantizer.dequant(original.qvalues))


def test_a_quantized_array_sent_to_a_dask_worker() -> None:
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    lazy = QuantizedArray(8, da.from_array(numpy.array(VALUES), chunks=2))
    eager = QuantizedArray(8, numpy.array(VALUES))
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="1GB"
    ) as cluster, distributed.Client(cluster) as client:
        # Arguments and results cross to the worker process pickled.
        values = client.submit(QuantizedArray.dequant, eager).result(timeout=60)
        returned = client.submit(copy.copy, lazy).result(timeout=60)
    numpy.testing.assert_array_equal(values, eager.quantizer.dequant(eager.qvalues))
    assert is_lazy(returned.values) and is_lazy(returned.qvalues)
    assert returned == lazy
