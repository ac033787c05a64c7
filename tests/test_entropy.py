import numpy as np
import pytest

from ncodec.entropy import (
    TableSet, cross_entropy_bits, decode_indexed, decode_ints, decode_sequence, encode_indexed, encode_ints,
    encode_sequence, gaussian_tables, quantize_pmf,
)
from ncodec.errors import CorruptFile


@pytest.fixture(scope="module")
def tables():
    return gaussian_tables(np.exp(np.linspace(np.log(0.11), np.log(80), 64)))


def test_quantize_pmf_exact_sum_and_positive():
    rng = np.random.default_rng(0)
    for n in (2, 3, 17, 1000):
        p = rng.random(n) ** 8
        p[0] = 0
        f = quantize_pmf(p)
        assert f.sum() == 2**16 and f.min() >= 1


def test_indexed_round_trip_with_escapes_and_small_gap(tables):
    rng = np.random.default_rng(1)
    n = 200_000
    scales = np.exp(np.linspace(np.log(0.11), np.log(80), 64))
    idx = rng.integers(0, 64, n)
    sym = np.round(rng.standard_normal(n) * scales[idx]).astype(np.int32)
    sym[:10] = [10**6, -(10**6), 2**30, -(2**30), 5000, -5000, 123456, 1, 0, -1]
    data = encode_indexed(sym, idx, tables)
    out, pos = decode_indexed(data, idx, tables)
    assert pos == len(data) and np.array_equal(out, sym)
    ce = cross_entropy_bits(sym, idx, tables)
    gap = len(data) * 8 / ce - 1
    print(f"indexed coding: {len(data)} bytes, cross-entropy {ce / 8:.0f} bytes, gap {100 * gap:.3f}%")
    assert 0 <= gap < 0.01


def test_indexed_empty_and_damaged(tables):
    e = encode_indexed(np.zeros(0, np.int32), np.zeros(0, np.int64), tables)
    assert decode_indexed(e, np.zeros(0, np.int64), tables)[0].size == 0
    sym = np.arange(-50, 50, dtype=np.int32)
    idx = np.full(100, 30)
    data = encode_indexed(sym, idx, tables)
    with pytest.raises(CorruptFile):
        decode_indexed(data[:3], idx, tables)


def test_ints_round_trip():
    rng = np.random.default_rng(2)
    for v in (rng.integers(-300, 300, 5000), np.full(7, -3), np.zeros(0, int)):
        out, pos = decode_ints(encode_ints(v))
        assert np.array_equal(out, v)
    with pytest.raises(ValueError, match="too wide"):
        encode_ints(np.array([2**40, -5]))


def test_fifo_sequence_round_trip():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 1000, (3000, 256)).astype(np.float64)  # integer counts: deterministic
    sym = rng.integers(0, 256, 3000)
    out, _ = decode_sequence(encode_sequence(sym, counts), counts)
    assert np.array_equal(out, sym)


def test_tableset_validation():
    with pytest.raises(ValueError):
        TableSet.from_arrays([1, 2, 3], [0, 2], [0, 0])
