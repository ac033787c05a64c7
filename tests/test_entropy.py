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


@pytest.mark.parametrize("kind", ["fixed-point", "float"])
def test_compiled_range_coder_matches_constriction(kind):
    """ncodec.entropy.range_coder writes the words constriction's RangeEncoder writes with per-symbol
    Categorical(perfect=False) rows and decodes them symbol for symbol: the integer CDFs equal the library's
    quantisation, the coder its arithmetic (carries and the seal included)."""
    import constriction

    from ncodec.entropy.range_coder import decode_rows, encode_rows, lazy_cdf

    rng = np.random.default_rng(7)
    n_rows, n = 24, 128
    if kind == "fixed-point":  # rows of integers summing to 2**24, as the walloc context model stores them
        f = rng.integers(1, 1 << 16, (n_rows, n))
        f[:, 0] += (1 << 24) - f.sum(1)
        rows = f / float(1 << 24)
    else:  # arbitrary positive floats, some far below the smallest representable probability
        rows = rng.random((n_rows, n)) ** 6 + 1e-12
    table = rng.integers(0, n_rows, 50000)
    p = rows[table] / rows[table].sum(1, keepdims=True)
    sym = np.minimum((p.cumsum(1) < rng.random((len(table), 1))).sum(1), n - 1).astype(np.int32)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(sym, constriction.stream.model.Categorical(perfect=False), rows[table])
    words = enc.get_compressed()
    cdf = lazy_cdf(rows)
    assert cdf.shape == (n_rows, n + 1) and np.all(np.diff(cdf.astype(np.int64), axis=1) >= 1)
    assert np.array_equal(encode_rows(sym, cdf, table), words)
    assert np.array_equal(decode_rows(words, cdf, table), sym)
    for n_sym in (0, 1, 2, 5, 37):  # short streams: the seal writes one or two words, none for no symbols
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(sym[:n_sym], constriction.stream.model.Categorical(perfect=False), rows[table[:n_sym]])
        assert np.array_equal(encode_rows(sym[:n_sym], cdf, table[:n_sym]), enc.get_compressed())
    assert np.array_equal(decode_rows(words, cdf, table[:100]), sym[:100])  # a prefix decodes alone
    # damaged words: symbols in range or -1 (invalid state), never a crash
    bad = decode_rows(rng.integers(0, 2**32, 50, dtype=np.uint64).astype(np.uint32), cdf, table[:5000])
    assert bad.min() >= -1 and bad.max() < n
    assert len(decode_rows(np.zeros(0, np.uint32), cdf, table[:10])) == 10
