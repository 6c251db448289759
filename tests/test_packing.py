"""Sub-byte packing: qarray.pack and qarray.unpack on every backend, against the generic path.

The byte layout is pinned by hand examples and by ONNX's own decoding of INT4/UINT4 and
INT2/UINT2 tensors (1 bit by NumPy's ``unpackbits``); the round trip holds on every
backend for every width, signedness, shape and layout; the compiled NumPy kernels give
the generic path's bytes and counts bit for bit, across thread chunks; Dask rechunks so
no byte straddles two chunks; every bad argument gets an error that names it.
"""

from __future__ import annotations

import doctest
import importlib.util
import pathlib
from typing import Any, List, Tuple

import array_api_compat
import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from refusals import Case, assert_refused

import qarray
from qarray.backends import ArrayAPIBackend, NumpyBackend, _parallel, numba_kernels, numba_packing
from qarray.core.namespace import device_of, library_name, to_numpy
from qarray.core.packing import pack_range

from bits import assert_same_bits

GENERIC = ArrayAPIBackend(array_api_compat.array_namespace(numpy.zeros(1)))
HAS_NUMBA = importlib.util.find_spec("numba") is not None
WIDTHS = (1, 2, 4)
INTEGER_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
SHAPES = [(1,), (2,), (3,), (7,), (8,), (9,), (17,), (4, 5), (3, 8), (2, 3, 11), (2, 1, 4, 6), (1, 0), (0, 3), (0,)]


def random_values(shape: Tuple[int, ...], n_bits: int, signed: bool, dtype: str = "", seed: int = 0) -> numpy.ndarray:
    """Values of ``shape`` spanning the signed (or unsigned) range of ``n_bits`` bits, extremes included."""
    rng = numpy.random.default_rng(seed + n_bits + 10 * len(shape))
    low, high = (-(1 << (n_bits - 1)), (1 << (n_bits - 1)) - 1) if signed else (0, (1 << n_bits) - 1)
    values = rng.integers(low, high + 1, shape)
    flat = values.reshape(-1)
    flat[: min(2, flat.size)] = [low, high][: min(2, flat.size)]
    return values.astype(dtype or ("int8" if signed else "uint8"))


def same_library(result: Any, like: Any) -> None:
    """``result`` is an array of ``like``'s library, on its device."""
    namespace = array_api_compat.array_namespace
    assert library_name(namespace(result)) == library_name(namespace(like))
    assert device_of(result) == device_of(like)


# -- the layout -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, n_bits, expected",
    [
        ([1, 2, 3], 4, [0x21, 0x03]),
        ([-1, 7, -8], 4, [0x7F, 0x08]),
        ([15, 0], 4, [0x0F]),
        ([1, 2, 3, 0, 1], 2, [0b00111001, 0b01]),
        ([-2, -1, 1], 2, [0b011110]),
        ([1, 0, 1, 1, 0, 0, 0, 1, 1], 1, [0b10001101, 0b1]),
        ([-1, 0, -1], 1, [0b101]),
    ],
)
def test_the_first_value_goes_to_the_least_significant_bits(xb: Any, values: list, n_bits: int, expected: list) -> None:
    q = xb.asarray(numpy.array(values, dtype=numpy.int8))
    packed = qarray.pack(q, n_bits)
    same_library(packed, q)
    assert_same_bits(to_numpy(packed), numpy.array(expected, dtype=numpy.uint8))


def test_the_documented_example_runs() -> None:
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "packing.md"
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0


def test_each_row_ends_in_its_own_padded_byte() -> None:
    packed = qarray.pack(numpy.array([[1, 2, 3], [4, 5, 6]]), 4)
    assert packed.tolist() == [[0x21, 0x03], [0x54, 0x06]]


@pytest.mark.parametrize(
    "n_bits, tensor_type",
    [(4, "INT4"), (4, "UINT4"), (2, "INT2"), (2, "UINT2")],
)
@pytest.mark.parametrize("dims", [(1,), (6,), (7,), (4, 6), (3, 5), (2, 3, 5)])
def test_onnx_decodes_the_packed_bytes(n_bits: int, tensor_type: str, dims: Tuple[int, ...]) -> None:
    """ONNX packs the whole tensor as one run: rows that fill whole bytes, or a 1-d array, match it."""
    import onnx
    from onnx import numpy_helper

    signed = not tensor_type.startswith("U")
    q = random_values(dims, n_bits, signed)
    per = 8 // n_bits
    packed = qarray.pack(q if dims[-1] % per == 0 else q.reshape(-1), n_bits)
    tensor = onnx.helper.make_tensor("q", getattr(onnx.TensorProto, tensor_type), dims=list(dims),
                                     vals=packed.tobytes(), raw=True)
    decoded = numpy_helper.to_array(tensor).astype(numpy.int8 if signed else numpy.uint8)
    assert_same_bits(decoded, q)


@pytest.mark.parametrize("length", [1, 7, 8, 9, 64, 67])
def test_one_bit_values_are_numpy_packbits_little_endian(length: int) -> None:
    q = random_values((3, length), 1, signed=False)
    packed = qarray.pack(q, 1)
    assert_same_bits(packed, numpy.packbits(q.astype(bool), axis=-1, bitorder="little"))
    assert_same_bits(numpy.unpackbits(packed, axis=-1, count=length, bitorder="little"), q)


# -- the round trip on every backend -----------------------------------------------------------------


@pytest.mark.parametrize("n_bits", WIDTHS)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_on_every_backend(xb: Any, n_bits: int, signed: bool, shape: Tuple[int, ...]) -> None:
    host = random_values(shape, n_bits, signed, "int16" if signed else "uint16")
    q = xb.asarray(host)
    packed = qarray.pack(q, n_bits)
    same_library(packed, q)
    expected_bytes, _ = GENERIC.pack_bits(host, n_bits)
    assert_same_bits(to_numpy(packed), expected_bytes)
    assert tuple(packed.shape) == shape[:-1] + (-(-shape[-1] * n_bits // 8),)
    values = qarray.unpack(packed, n_bits, shape[-1], signed=signed)
    same_library(values, q)
    assert_same_bits(to_numpy(values), host.astype(numpy.int8 if signed else numpy.uint8))


@pytest.mark.parametrize("n_bits", WIDTHS)
def test_non_contiguous_input_on_every_backend(xb: Any, n_bits: int) -> None:
    host = random_values((6, 21), n_bits, signed=True)
    q = xb.asarray(host)[1::2, ::2]
    packed = qarray.pack(q, n_bits)
    assert_same_bits(to_numpy(packed), GENERIC.pack_bits(host[1::2, ::2], n_bits)[0])
    strided_bytes = xb.asarray(to_numpy(qarray.pack(xb.asarray(host), n_bits)))[::2, ...]
    values = qarray.unpack(strided_bytes, n_bits, 21, signed=True)
    assert_same_bits(to_numpy(values), host[::2])


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_every_integer_dtype_packs(xb: Any, dtype: str) -> None:
    signed = dtype.startswith("i")
    host = random_values((3, 9), 4, signed, dtype)
    q = xb.asarray(host)
    packed = qarray.pack(q, 4)
    assert_same_bits(to_numpy(packed), GENERIC.pack_bits(host, 4)[0])
    assert_same_bits(to_numpy(qarray.unpack(packed, 4, 9, signed=signed)), host.astype("int8" if signed else "uint8"))


def test_lists_are_packed_as_numpy() -> None:
    assert qarray.pack([[1, -1], [3, 0]], 2).tolist() == [[0b1101], [0b0011]]


# -- values outside the range ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, n_bits, outside",
    [([0, 16, -9, 3, 15, -8], 4, 2), ([4, -3, 3, -2], 2, 2), ([2, -1, 1, 0, -2], 1, 2)],
)
def test_values_outside_the_range_are_refused_with_their_count(
    xb: Any, values: list, n_bits: int, outside: int
) -> None:
    q = xb.asarray(numpy.array(values, dtype=numpy.int16))
    low, high = pack_range(n_bits)
    with pytest.raises(ValueError) as info:
        to_numpy(qarray.pack(q, n_bits))  # Dask raises when the result is computed
    message = str(info.value)
    # Dask checks chunk by chunk: the first chunk found holding any tells its own count
    counted = "value(s) in a block of" if xb.name == "dask" else f"{outside} value(s) out of {len(values)}"
    for text in ("q holds", counted, f"[{low}, {high}]", f"n_bits={n_bits}"):
        assert text in message, message


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint64", "int64"])
def test_values_far_outside_count_as_outside(dtype: str) -> None:
    info = numpy.iinfo(dtype)
    q = numpy.array([1, int(info.max), int(info.min), 2, int(info.max) - 1], dtype=dtype)
    expected = 2 + (info.min < 0)
    with pytest.raises(ValueError, match=f"q holds {expected} value"):
        qarray.pack(q, 4)


# -- bad arguments ---------------------------------------------------------------------------------

Q = numpy.array([[1, 2, 3]], dtype=numpy.int8)
PACKED = qarray.pack(Q, 4)

CASES = [
    Case("q float", lambda: qarray.pack(numpy.array([1.0, 2.0]), 4), TypeError, "q must be an array of integers"),
    Case("q bool", lambda: qarray.pack(numpy.array([True, False]), 1), TypeError, "got dtype bool"),
    Case("q float list", lambda: qarray.pack([1.5], 4), TypeError, "q must hold integers"),
    Case("q string", lambda: qarray.pack("12", 4), TypeError, "q must be an array"),
    Case("q None", lambda: qarray.pack(None, 4), TypeError, "q must be an array"),
    Case("q scalar", lambda: qarray.pack(numpy.int8(3), 4), ValueError, "q must have at least one axis"),
    Case("q 0-d array", lambda: qarray.pack(numpy.array(3, dtype=numpy.int8), 4), ValueError, "q must have at least one axis"),
    Case("n_bits float", lambda: qarray.pack(Q, 4.0), TypeError, "n_bits must be an int"),
    Case("n_bits bool", lambda: qarray.pack(Q, True), TypeError, "n_bits must be an int"),
    Case("n_bits str", lambda: qarray.pack(Q, "4"), TypeError, "n_bits must be an int"),
    Case("n_bits 3", lambda: qarray.pack(Q, 3), ValueError, "n_bits must be 1, 2 or 4"),
    Case("n_bits 8", lambda: qarray.pack(Q, 8), ValueError, "n_bits must be 1, 2 or 4"),
    Case("n_bits 0", lambda: qarray.pack(Q, 0), ValueError, "n_bits must be 1, 2 or 4"),
    Case("packed int8", lambda: qarray.unpack(PACKED.view(numpy.int8), 4, 3, signed=True), TypeError, "packed must be a uint8 array"),
    Case("packed list", lambda: qarray.unpack([33, 3], 4, 3, signed=True), TypeError, "packed must be a uint8 array"),
    Case("packed None", lambda: qarray.unpack(None, 4, 3, signed=True), TypeError, "packed must be an array"),
    Case("packed 0-d", lambda: qarray.unpack(numpy.array(3, dtype=numpy.uint8), 4, 1, signed=True), ValueError, "packed must have at least one axis"),
    Case("packed too short", lambda: qarray.unpack(PACKED, 4, 5, signed=True), ValueError, "packed must hold 3 byte(s)"),
    Case("packed too long", lambda: qarray.unpack(PACKED, 4, 2, signed=True), ValueError, "packed must hold 1 byte(s)"),
    Case("unpack n_bits 3", lambda: qarray.unpack(PACKED, 3, 3, signed=True), ValueError, "n_bits must be 1, 2 or 4"),
    Case("unpack n_bits None", lambda: qarray.unpack(PACKED, None, 3, signed=True), TypeError, "n_bits must be an int"),
    Case("length float", lambda: qarray.unpack(PACKED, 4, 3.0, signed=True), TypeError, "length must be an int"),
    Case("length bool", lambda: qarray.unpack(PACKED, 4, True, signed=True), TypeError, "length must be an int"),
    Case("length negative", lambda: qarray.unpack(PACKED, 4, -1, signed=True), ValueError, "length must be >= 0"),
    Case("signed int", lambda: qarray.unpack(PACKED, 4, 3, signed=1), TypeError, "signed must be a bool"),
    Case("signed None", lambda: qarray.unpack(PACKED, 4, 3, signed=None), TypeError, "signed must be a bool"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_arguments_are_refused_naming_them(case: Case) -> None:
    assert_refused(case)


def test_signed_must_be_given_by_name() -> None:
    with pytest.raises(TypeError):
        qarray.unpack(PACKED, 4, 3, True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        qarray.unpack(PACKED, 4, 3)  # type: ignore[call-arg]


def test_bad_arguments_are_refused_on_every_backend(xb: Any) -> None:
    with pytest.raises(TypeError, match="q must be an array of integers"):
        qarray.pack(xb.asarray(numpy.array([0.5])), 4)
    with pytest.raises(TypeError, match="packed must be a uint8 array"):
        qarray.unpack(xb.asarray(numpy.array([1], dtype=numpy.int8)), 4, 2, signed=False)
    with pytest.raises(ValueError, match="packed must hold 1 byte"):
        qarray.unpack(xb.asarray(numpy.array([1, 2], dtype=numpy.uint8)), 4, 2, signed=False)


# -- the compiled NumPy kernels against the generic path -----------------------------------------------


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled kernels for every size, with small thread chunks and three threads, so that
    modest arrays are split over rows, or over the bytes of a few rows."""
    if not HAS_NUMBA:
        pytest.skip("numba is not installed (pip install 'qarray[fast]')")
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)
    monkeypatch.setattr(numba_kernels, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 1 << 10)
    monkeypatch.setattr(_parallel, "CHUNK_ALIGN", 64)
    monkeypatch.setattr(_parallel, "thread_count", lambda: 3)


def layouts(host: numpy.ndarray) -> List[numpy.ndarray]:
    """``host`` contiguous, as a strided view, and transposed (which the kernels read as a copy)."""
    found = [host, host[..., ::3]]
    if host.ndim > 1:
        found.append(numpy.swapaxes(host, 0, -1))
    return found


@pytest.mark.parametrize("n_bits", WIDTHS)
@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("shape", [(5003,), (4096,), (3, 2001), (700, 9), (2, 3, 4000)], ids=str)
def test_compiled_kernels_give_the_generic_bytes(
    compiled: None, n_bits: int, dtype: str, shape: Tuple[int, ...]
) -> None:
    signed = dtype.startswith("i")
    host = random_values(shape, n_bits, signed, dtype)
    backend = NumpyBackend()
    for q in layouts(host):
        packed, n_outside = backend.pack_bits(q, n_bits)
        expected, expected_outside = GENERIC.pack_bits(q, n_bits)
        assert_same_bits(packed, expected)
        assert int(n_outside) == int(expected_outside) == 0
        for sign in (True, False):
            length = q.shape[-1]
            for source in (packed, numpy.repeat(packed, 2, axis=-1)[..., ::2]):  # contiguous, strided
                assert_same_bits(backend.unpack_bits(source, n_bits, length, sign),
                                 GENERIC.unpack_bits(expected, n_bits, length, sign))


@pytest.mark.parametrize("n_bits", WIDTHS)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "uint64"])
def test_compiled_kernels_count_what_is_outside_as_the_generic_path(compiled: None, n_bits: int, dtype: str) -> None:
    host = numpy.random.default_rng(n_bits).integers(0, 120, (30, 333)).astype(dtype)
    packed, n_outside = NumpyBackend().pack_bits(host, n_bits)
    expected, expected_outside = GENERIC.pack_bits(host, n_bits)
    assert_same_bits(packed, expected)
    assert int(n_outside) == int(expected_outside) > 0


@pytest.mark.parametrize("n_bits", WIDTHS)
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_one_byte_values_packed_word_by_word_give_the_generic_bytes(compiled: None, n_bits: int, dtype: str) -> None:
    # One-byte values in one contiguous row of whole bytes are packed 8 // n_bits at a time
    # as one word, and range-checked block by block: across blocks and thread chunks, the
    # bytes and the refusals are the generic path's, wherever an outside value falls.
    per = 8 // n_bits
    n_words = 3 * numba_packing._WORDS_PER_BLOCK + 17
    host = random_values((n_words * per,), n_bits, dtype.startswith("i"), dtype, seed=3)
    assert numba_packing._as_words(host.reshape(1, -1), n_bits) is not None
    packed, n_outside = NumpyBackend().pack_bits(host, n_bits)
    assert_same_bits(packed, GENERIC.pack_bits(host, n_bits)[0])
    assert int(n_outside) == 0
    low, high = pack_range(n_bits)
    outside = low - 1 if dtype == "int8" else high + 1
    for place in (0, per * numba_packing._WORDS_PER_BLOCK - 1, per * numba_packing._WORDS_PER_BLOCK, host.size - 1):
        bad = host.copy()
        bad[place] = outside
        packed, n_outside = NumpyBackend().pack_bits(bad, n_bits)
        assert int(n_outside) == int(GENERIC.pack_bits(bad, n_bits)[1]) == 1
    shifted = numpy.empty(host.size + 1, dtype=dtype)[1:]  # not aligned for the word: the generic kernel
    shifted[...] = host
    assert numba_packing._as_words(shifted.reshape(1, -1), n_bits) is None
    assert_same_bits(NumpyBackend().pack_bits(shifted, n_bits)[0], GENERIC.pack_bits(host, n_bits)[0])


def test_large_arrays_take_the_compiled_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    if not HAS_NUMBA:
        pytest.skip("numba is not installed (pip install 'qarray[fast]')")
    monkeypatch.delenv(numba_kernels.DISABLE_ENV, raising=False)
    calls: List[str] = []
    for name in ("pack_bits", "unpack_bits"):
        original = getattr(numba_packing, name)
        monkeypatch.setattr(numba_packing, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    size = 4 * numba_kernels.MIN_ELEMENTS + 3
    host = random_values((size,), 4, signed=True)
    packed = qarray.pack(host, 4)
    assert_same_bits(packed, GENERIC.pack_bits(host, 4)[0])
    assert_same_bits(qarray.unpack(packed, 4, size, signed=True), host)
    assert calls == ["pack_bits", "unpack_bits"]
    calls.clear()
    monkeypatch.setenv(numba_kernels.DISABLE_ENV, "1")
    assert_same_bits(qarray.unpack(qarray.pack(host, 4), 4, size, signed=True), host)
    assert calls == []


# -- Dask -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bits", WIDTHS)
@pytest.mark.parametrize(
    "shape, chunks",
    [((50,), 7), ((50,), 1), ((50,), 3), ((4, 33), (3, 5)), ((3, 17), (2, 100)), ((2, 3, 19), (1, 2, 6))],
    ids=str,
)
def test_dask_chunks_that_split_bytes_are_realigned(n_bits: int, shape: Tuple[int, ...], chunks: Any) -> None:
    da = pytest.importorskip("dask.array")
    host = random_values(shape, n_bits, signed=True)
    q = da.from_array(host, chunks=chunks)
    packed = qarray.pack(q, n_bits)
    assert isinstance(packed, da.Array)
    assert_same_bits(packed.compute(), GENERIC.pack_bits(host, n_bits)[0])
    rechunked = da.from_array(packed.compute(), chunks=chunks)
    values = qarray.unpack(rechunked, n_bits, shape[-1], signed=True)
    assert isinstance(values, da.Array)
    assert_same_bits(values.compute(), host)


def test_dask_arrays_of_unknown_lengths_are_packed() -> None:
    da = pytest.importorskip("dask.array")
    host = numpy.arange(-8, 8, dtype=numpy.int8)
    q = da.from_array(host, chunks=5)
    kept = q[q > -5]  # unknown length
    packed = qarray.pack(kept, 4)
    assert_same_bits(packed.compute(), GENERIC.pack_bits(host[host > -5], 4)[0])
    rows = da.from_array(numpy.tile(host, (4, 1)), chunks=(2, 16))
    unknown_rows = rows[da.from_array(numpy.array([True, False, True, True]), chunks=2)]
    values = qarray.unpack(qarray.pack(unknown_rows, 4), 4, 16, signed=True)
    assert_same_bits(values.compute(), numpy.tile(host, (3, 1)))


def test_dask_raises_when_computed_naming_the_block() -> None:
    da = pytest.importorskip("dask.array")
    packed = qarray.pack(da.from_array(numpy.array([1, 2, 99, 3, 4, 5]), chunks=2), 4)
    with pytest.raises(ValueError, match=r"q holds 1 value\(s\) in a block of 2 outside \[-8, 15\]"):
        packed.compute()


# -- any shape, any values ---------------------------------------------------------------------------

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def packable(draw: st.DrawFn) -> Tuple[numpy.ndarray, int, bool]:
    """An integer array of 1 to 3 axes, a width and whether its values are in the signed range."""
    n_bits = draw(st.sampled_from(WIDTHS))
    signed = draw(st.booleans())
    dtype = draw(st.sampled_from([d for d in INTEGER_DTYPES if d.startswith("i") or not signed]))
    low, high = (-(1 << (n_bits - 1)), (1 << (n_bits - 1)) - 1) if signed else (0, (1 << n_bits) - 1)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=20))
    return draw(hnp.arrays(dtype, shape, elements=st.integers(low, high))), n_bits, signed


@PROPERTY
@given(case=packable())
def test_unpack_inverts_pack_for_any_shape_and_values(case: Tuple[numpy.ndarray, int, bool]) -> None:
    q, n_bits, signed = case
    packed = qarray.pack(q, n_bits)
    assert packed.shape == q.shape[:-1] + (-(-q.shape[-1] * n_bits // 8),)
    assert_same_bits(packed, GENERIC.pack_bits(q, n_bits)[0])
    values = qarray.unpack(packed, n_bits, q.shape[-1], signed=signed)
    assert_same_bits(values, q.astype(numpy.int8 if signed else numpy.uint8))
