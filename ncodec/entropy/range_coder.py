"""Compiled coding of constriction's FIFO range code, for models whose probability rows are fixed tables.

constriction's ``stream.queue.RangeEncoder`` (32-bit words, 64-bit state, 24-bit probabilities) with a per-symbol
``Categorical(perfect=False)`` model writes the streams of the walloc context model. Its Python decoder is exact
but slow for a context model: every symbol hands a float row to the library, which re-derives the row's
quantised CDF, and the context of the next wavefront step needs a Python round trip. Here the CDF constriction
derives from each fixed row is computed once (:func:`lazy_cdf`, integers) and a compiled decoder reads the words
(:func:`rd_init`, :func:`rd_symbol`, called from a codec's own compiled loop). :func:`encode_rows` writes the
same words as constriction's encoder without handing it one float row per symbol. Tests check both against
constriction, word for word and symbol for symbol.

States are ``uint64`` arrays: the decoder's 4 entries (lower, range, point, index of the next word), the
encoder's 5 (:func:`re_init`). Words are 32-bit values in a uint32 or uint64 array.
"""
from __future__ import annotations

import numpy as np
from numba import njit

PRECISION = 24
_P = np.uint64(PRECISION)
_W = np.uint64(32)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_WORD = np.uint64(0xFFFF_FFFF)
_FULL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_TOP = np.uint64(1 << PRECISION)
_RENORM = np.uint64(1 << 32)


def lazy_cdf(rows: np.ndarray) -> np.ndarray:
    """Integer CDFs, shape (n_rows, n + 1) uint64, that constriction's lazy categorical model derives from float64
    probability rows (n, all positive): with the sequential float sums C_i of the first i probabilities and
    ``scale = (2**24 - n) / C_n``, symbol i covers ``[floor(C_i * scale) + i, floor(C_{i+1} * scale) + i + 1)``,
    the last one ending at 2**24 (every symbol gets at least one unit)."""
    rows = np.asarray(rows, np.float64)
    n = rows.shape[1]
    cum = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(rows, axis=1)], axis=1)  # sequential, as rust sums
    scale = float((1 << PRECISION) - n) / cum[:, -1:]
    cdf = np.floor(cum * scale).astype(np.int64) + np.arange(n + 1)
    cdf[:, -1] = 1 << PRECISION
    if np.any(np.diff(cdf, axis=1) <= 0):
        raise ValueError("probability rows give an empty interval")
    return cdf.astype(np.uint64)


@njit(cache=True, nogil=True)
def rd_init(words, st):
    """Start decoding ``words``: the first two words (fewer: zero-filled) form the point."""
    point = _ZERO
    n = min(2, len(words))
    for i in range(n):
        point = (point << _W) | np.uint64(words[i])
    if n == 1:
        point = point << _W
    st[0] = _ZERO
    st[1] = _FULL
    st[2] = point
    st[3] = np.uint64(n)


@njit(cache=True, nogil=True, inline="always")
def rd_symbol(words, st, cdf, row):
    """Decode one symbol with the integer CDF ``cdf[row]`` (n + 1 entries from 0 to 2**24); -1 for data no
    encoder could have written."""
    scale = st[1] >> _P
    quantile = (st[2] - st[0]) // scale  # wrapping subtraction, as the encoder's lower bound may wrap
    if quantile >= _TOP:
        return -1
    lo, hi = 0, cdf.shape[1] - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if cdf[row, mid] <= quantile:
            lo = mid
        else:
            hi = mid
    st[0] = st[0] + scale * cdf[row, lo]
    st[1] = scale * (cdf[row, lo + 1] - cdf[row, lo])
    if st[1] < _RENORM:
        st[0] = st[0] << _W
        st[1] = st[1] << _W
        nxt = _ZERO
        if st[3] < np.uint64(len(words)):
            nxt = np.uint64(words[st[3]])
        st[2] = (st[2] << _W) | nxt
        st[3] = st[3] + _ONE
    return lo


@njit(cache=True, nogil=True)
def _decode_rows(words, cdf, table):
    """Reference loop for tests: decode one symbol per entry of ``table`` (row indices into ``cdf``)."""
    st = np.zeros(4, np.uint64)
    rd_init(words, st)
    out = np.empty(len(table), np.int64)
    for i in range(len(table)):
        out[i] = rd_symbol(words, st, cdf, table[i])
    return out


def decode_rows(words: np.ndarray, cdf: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Decode ``len(table)`` symbols, symbol i with CDF row ``table[i]`` (-1 marks undecodable data)."""
    return _decode_rows(np.ascontiguousarray(words, np.uint32), cdf, np.ascontiguousarray(table, np.int64))


@njit(cache=True, nogil=True)
def re_init(st):
    """Start an encoder: ``st`` (uint64 array of 5) = lower, range, held-back words, first held-back word,
    words written."""
    st[0] = _ZERO
    st[1] = _FULL
    st[2] = _ZERO
    st[3] = _ZERO
    st[4] = _ZERO


@njit(cache=True, nogil=True, inline="always")
def _release(st, out, new_lower, lower):
    """Write the held-back words once the carry into them is known (new_lower < lower: it happened)."""
    n = st[4]
    if new_lower < lower:
        out[n] = st[3] + _ONE
        rest = _ZERO
    else:
        out[n] = st[3]
        rest = _WORD
    n += _ONE
    for _ in range(1, st[2]):
        out[n] = rest
        n += _ONE
    st[2] = _ZERO
    st[4] = n


@njit(cache=True, nogil=True, inline="always")
def re_symbol(st, out, cdf, row, symbol):
    """Encode ``symbol`` with CDF ``cdf[row]``, as constriction's RangeEncoder.encode_symbol; ``out`` (uint64)
    needs room for one word per symbol plus two."""
    lower = st[0]
    left = cdf[row, symbol]
    scale = st[1] >> _P
    rng = scale * (cdf[row, symbol + 1] - left)
    new_lower = lower + scale * left
    if st[2] and new_lower + rng > new_lower:  # no carry can reach the held-back words any more
        _release(st, out, new_lower, lower)
    lower = new_lower
    if rng < _RENORM:
        rng = rng << _W
        word = lower >> _W
        lower = lower << _W
        if st[2]:
            st[2] += _ONE
        elif lower + rng > lower:
            out[st[4]] = word
            st[4] += _ONE
        else:  # the interval straddles a carry: hold the word back
            st[2] = _ONE
            st[3] = word
    st[0] = lower
    st[1] = rng


@njit(cache=True, nogil=True)
def re_finish(st, out):
    """Seal the stream (constriction's ``get_compressed``); returns the number of words in ``out``."""
    if st[1] == _FULL:  # nothing encoded: no words
        return st[4]
    lower = st[0]
    point = lower + _WORD
    if st[2]:
        _release(st, out, point, lower)
    out[st[4]] = point >> _W
    st[4] += _ONE
    if (lower + st[1]) >> _W == point >> _W:
        out[st[4]] = _ZERO
        st[4] += _ONE
    return st[4]


@njit(cache=True, nogil=True)
def _encode_rows(cdf, table, symbols, out):
    st = np.zeros(5, np.uint64)
    re_init(st)
    for i in range(len(symbols)):
        re_symbol(st, out, cdf, table[i], symbols[i])
    return re_finish(st, out)


def encode_rows(symbols: np.ndarray, cdf: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The uint32 words constriction's ``RangeEncoder`` writes (``get_compressed()``) for ``symbols[i]`` coded
    with CDF row ``table[i]`` (the rows of :func:`lazy_cdf`); symbols must lie in 0 .. n - 1."""
    symbols = np.ascontiguousarray(symbols, np.int64).reshape(-1)
    table = np.ascontiguousarray(table, np.int64).reshape(-1)
    if symbols.shape != table.shape:
        raise ValueError(f"{symbols.size} symbols but {table.size} table indices")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= cdf.shape[1] - 1
                         or table.min() < 0 or table.max() >= len(cdf)):
        raise ValueError("symbol or table index out of range")
    out = np.empty(len(symbols) + 3, np.uint64)  # at most one word per symbol, plus the seal's two
    n = _encode_rows(cdf, table, symbols, out)
    return out[:n].astype(np.uint32)
