"""Vectorised coding of integer symbols with constriction.

``encode_indexed(symbols, table_index, tables)`` codes each symbol with the table named by its index. Symbols are
grouped by table and each group goes to constriction as one array (no per-symbol Python loop). Layout of the
returned bytes (all integers little-endian):

    varint n_words | n_words x u32 (ANS words) | escape values as zigzag varints, in symbol order

The decoder needs the same ``table_index`` array, which the codec derives deterministically (e.g. from an
integer hyper-decoder), and the symbol count.
"""
from __future__ import annotations

import numpy as np

from ..errors import CorruptFile
from .tables import TableSet

# ---------------------------------------------------------------------------------------------- varints


def write_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varint must be >= 0")
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CorruptFile("truncated varint in an entropy-coded stream; the file is damaged")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CorruptFile("varint longer than 64 bits in an entropy-coded stream; the file is damaged")


def _zigzag(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v << 1) - 1)


def _unzigzag(u: int) -> int:
    return (u >> 1) if not u & 1 else -((u + 1) >> 1)


def _words_to_bytes(words: np.ndarray) -> bytes:
    out = bytearray()
    write_varint(out, len(words))
    return bytes(out) + np.asarray(words, dtype="<u4").tobytes()


def _bytes_to_words(buf: bytes, pos: int = 0) -> tuple[np.ndarray, int]:
    n, pos = read_varint(buf, pos)
    end = pos + 4 * n
    if end > len(buf):
        raise CorruptFile(f"entropy-coded stream claims {n} words but only {len(buf) - pos} bytes remain")
    return np.frombuffer(buf[pos:end], dtype="<u4").astype(np.uint32), end


# ---------------------------------------------------------------------------------------------- indexed


def _local_symbols(symbols: np.ndarray, tidx: np.ndarray, tables: TableSet):
    lo = tables.lo[tidx].astype(np.int64)
    esc = (np.diff(tables.offsets)[tidx] - 1).astype(np.int64)
    local = symbols.astype(np.int64) - lo
    escaped = (local < 0) | (local >= esc)
    local[escaped] = esc[escaped]
    return local.astype(np.int32), escaped


def _groups(tidx: np.ndarray):
    order = np.argsort(tidx, kind="stable")
    ids, starts, counts = np.unique(tidx[order], return_index=True, return_counts=True)
    return order, list(zip(ids.tolist(), starts.tolist(), counts.tolist()))


def encode_indexed(symbols: np.ndarray, table_index: np.ndarray, tables: TableSet) -> bytes:
    """Code int symbols, each with table ``table_index[i]``; returns self-delimiting bytes."""
    import constriction

    symbols = np.asarray(symbols).reshape(-1)
    tidx = np.asarray(table_index).reshape(-1).astype(np.int64)
    if symbols.shape != tidx.shape:
        raise ValueError(f"{symbols.size} symbols but {tidx.size} table indices")
    if tidx.size and (tidx.min() < 0 or tidx.max() >= len(tables)):
        raise ValueError(f"table index out of range 0..{len(tables) - 1}")
    local, escaped = _local_symbols(symbols, tidx, tables)
    order, groups = _groups(tidx)
    coder = constriction.stream.stack.AnsCoder()
    for t, start, count in reversed(groups):
        coder.encode_reverse(local[order[start : start + count]], tables.model(t))
    out = bytearray(_words_to_bytes(coder.get_compressed()))
    for v in symbols[escaped].tolist():
        write_varint(out, _zigzag(int(v)))
    return bytes(out)


def decode_indexed(data: bytes, table_index: np.ndarray, tables: TableSet, pos: int = 0):
    """Inverse of :func:`encode_indexed`; returns (int32 symbols, position after the stream)."""
    import constriction

    tidx = np.asarray(table_index).reshape(-1).astype(np.int64)
    if tidx.size and (tidx.min() < 0 or tidx.max() >= len(tables)):
        raise CorruptFile("table index out of range while decoding; the file is damaged")
    words, pos = _bytes_to_words(data, pos)
    local = np.empty(tidx.size, dtype=np.int64)
    order, groups = _groups(tidx)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        for t, start, count in groups:
            local[order[start : start + count]] = coder.decode(tables.model(t), count)
    except Exception as exc:  # constriction raises on impossible states
        raise CorruptFile(f"entropy decoding failed ({exc}); the file is damaged") from None
    esc = (np.diff(tables.offsets)[tidx] - 1).astype(np.int64)
    symbols = local + tables.lo[tidx]
    for i in np.flatnonzero(local == esc).tolist():
        u, pos = read_varint(data, pos)
        symbols[i] = _unzigzag(u)
    if np.any(np.abs(symbols) > 2**31 - 1):
        raise CorruptFile("decoded symbol out of int32 range; the file is damaged")
    return symbols.astype(np.int32), pos


def cross_entropy_bits(symbols: np.ndarray, table_index: np.ndarray, tables: TableSet) -> float:
    """Model cross-entropy in bits of coding ``symbols`` (escape payloads counted at their varint size)."""
    symbols = np.asarray(symbols).reshape(-1)
    tidx = np.asarray(table_index).reshape(-1).astype(np.int64)
    local, escaped = _local_symbols(symbols, tidx, tables)
    freq = tables.freqs[tables.offsets[tidx] + local].astype(np.float64)
    total = np.add.reduceat(tables.freqs.astype(np.float64), tables.offsets[:-1])[tidx]
    bits = float(-np.log2(freq / total).sum())
    for v in symbols[escaped].tolist():
        tmp = bytearray()
        write_varint(tmp, _zigzag(int(v)))
        bits += 8 * len(tmp)
    return bits


# ---------------------------------------------------------------------------------------------- weights


def encode_ints(values: np.ndarray) -> bytes:
    """Code an int array with its own histogram (sent first): quantized network weights, side info.

    Layout: varint zigzag(min) | varint n_bins | n_bins varint counts | ANS stream (see module doc).
    """
    import constriction

    v = np.asarray(values).reshape(-1).astype(np.int64)
    out = bytearray()
    if v.size == 0:
        write_varint(out, 0)
        write_varint(out, 0)
        return bytes(out)
    lo, hi = int(v.min()), int(v.max())
    if hi - lo >= 1 << 24:
        raise ValueError(f"value range {lo}..{hi} is too wide for histogram coding (at most 2**24 bins)")
    counts = np.bincount(v - lo, minlength=hi - lo + 1)
    write_varint(out, _zigzag(lo))
    write_varint(out, len(counts))
    for c in counts.tolist():
        write_varint(out, c)
    if len(counts) == 1:
        return bytes(out)
    model = constriction.stream.model.Categorical(counts.astype(np.float64) / counts.sum(), perfect=False)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((v - lo).astype(np.int32), model)
    return bytes(out) + _words_to_bytes(coder.get_compressed())


def decode_ints(data: bytes, pos: int = 0, limit: int = 1 << 30) -> tuple[np.ndarray, int]:
    import constriction

    z, pos = read_varint(data, pos)
    nbins, pos = read_varint(data, pos)
    if nbins == 0:
        return np.zeros(0, dtype=np.int64), pos
    if nbins > 1 << 24:
        raise CorruptFile(f"histogram with {nbins} bins is above the limit of 2**24; the file is damaged")
    counts = []
    for _ in range(nbins):
        c, pos = read_varint(data, pos)
        counts.append(c)
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n > limit:
        raise CorruptFile(f"stream claims {n} values, above the limit of {limit}; the file is damaged")
    lo = _unzigzag(z)
    if nbins == 1:
        return np.full(n, lo, dtype=np.int64), pos
    words, pos = _bytes_to_words(data, pos)
    model = constriction.stream.model.Categorical(counts.astype(np.float64) / n, perfect=False)
    try:
        vals = constriction.stream.stack.AnsCoder(words).decode(model, n)
    except Exception as exc:
        raise CorruptFile(f"entropy decoding failed ({exc}); the file is damaged") from None
    return vals.astype(np.int64) + lo, pos


# ---------------------------------------------------------------------------------------------- FIFO


def encode_sequence(symbols: np.ndarray, probabilities: np.ndarray) -> bytes:
    """FIFO range coding with one probability row per symbol (autoregressive models decode in order).

    ``probabilities`` is (n, k) float64 and must be computed deterministically (e.g. integer counts).
    """
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    enc.encode(np.asarray(symbols, dtype=np.int32).reshape(-1), model, np.asarray(probabilities, np.float64))
    return _words_to_bytes(enc.get_compressed())


def sequence_decoder(data: bytes, pos: int = 0):
    """(constriction RangeDecoder over a stream written by :func:`encode_sequence`, position after it), for
    models whose next probability row depends on the symbols decoded so far: call
    ``decoder.decode(Categorical(perfect=False), row[None])`` once per symbol."""
    import constriction

    words, pos = _bytes_to_words(data, pos)
    return constriction.stream.queue.RangeDecoder(words), pos


def decode_sequence(data: bytes, probabilities: np.ndarray, pos: int = 0):
    """Decode symbols whose rows of probabilities are known (all at once, or call per step with a slice)."""
    import constriction

    words, pos = _bytes_to_words(data, pos)
    model = constriction.stream.model.Categorical(perfect=False)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        out = dec.decode(model, np.asarray(probabilities, np.float64))
    except Exception as exc:
        raise CorruptFile(f"entropy decoding failed ({exc}); the file is damaged") from None
    return out.astype(np.int32), pos
