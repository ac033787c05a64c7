"""Integer probability tables.

A :class:`TableSet` holds many discrete distributions as integer frequencies. Table ``i`` covers the symbols
``lo[i] .. lo[i] + size[i] - 2``; its last entry is the *escape*: a symbol outside that range is coded as the
escape and its value is sent separately (see :mod:`ncodec.entropy.coding`). Tables are built once in float64
(at export time) and then stored as integers with the weights, so coding never depends on float noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PRECISION = 16  # every table sums to 2**PRECISION


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Turn a probability vector into int64 frequencies >= 1 summing exactly to ``2**precision``."""
    pmf = np.asarray(pmf, dtype=np.float64)
    if pmf.ndim != 1 or pmf.size < 1 or not np.all(np.isfinite(pmf)) or np.any(pmf < 0):
        raise ValueError(f"pmf must be a finite non-negative vector, got shape {pmf.shape}")
    total = 1 << precision
    if pmf.size > total // 2:
        raise ValueError(f"{pmf.size} symbols do not fit a {precision}-bit table")
    pmf = pmf / pmf.sum() if pmf.sum() > 0 else np.full(pmf.size, 1.0 / pmf.size)
    freq = np.maximum(1, np.floor(pmf * (total - pmf.size)).astype(np.int64))
    # hand the remainder to the largest entries, in a fixed order, until the sum is exact
    short = total - int(freq.sum())
    order = np.argsort(-pmf, kind="stable")
    while short != 0:
        step = 1 if short > 0 else -1
        for i in order:
            if short == 0:
                break
            if freq[i] + step >= 1:
                freq[i] += step
                short -= step
    return freq


@dataclass
class TableSet:
    """Many integer tables in one flat array (the form they are stored in safetensors)."""

    freqs: np.ndarray  # int32, all tables concatenated
    offsets: np.ndarray  # int32, start of table i in ``freqs``; len = n_tables + 1
    lo: np.ndarray  # int32, smallest regular symbol of table i
    _models: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_tables(cls, tables: list[np.ndarray], lo: list[int]) -> "TableSet":
        sizes = [len(t) for t in tables]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
        return cls(np.concatenate(tables).astype(np.int32), offsets, np.asarray(lo, dtype=np.int32))

    @classmethod
    def from_arrays(cls, freqs, offsets, lo) -> "TableSet":
        freqs, offsets, lo = (np.asarray(a, dtype=np.int32) for a in (freqs, offsets, lo))
        if offsets.ndim != 1 or len(offsets) != len(lo) + 1 or offsets[0] != 0 or offsets[-1] != len(freqs):
            raise ValueError("inconsistent table arrays")
        if np.any(np.diff(offsets) < 2) or np.any(freqs < 1):
            raise ValueError("every table needs >= 2 entries with frequencies >= 1")
        return cls(freqs, offsets, lo)

    def __len__(self) -> int:
        return len(self.lo)

    def size(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def table(self, i: int) -> np.ndarray:
        return self.freqs[self.offsets[i] : self.offsets[i + 1]]

    def model(self, i: int):
        """constriction Categorical of table ``i`` (built once; immutable, so shared between threads)."""
        m = self._models.get(i)
        if m is None:
            import constriction

            t = self.table(i).astype(np.float64)
            m = constriction.stream.model.Categorical(t / t.sum(), perfect=False)
            self._models[i] = m
        return m


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_tables(scales: np.ndarray, tail: float = 6.0, precision: int = PRECISION) -> TableSet:
    """Zero-mean quantized Gaussians N(0, s) on the integers, one table per scale, with an escape entry.

    Run at export time; the resulting integers are what a decoder uses.
    """
    tables, lo = [], []
    for s in np.asarray(scales, dtype=np.float64):
        r = int(math.ceil(tail * s)) + 1
        k = np.arange(-r, r + 1, dtype=np.float64)
        upper = np.array([_norm_cdf((v + 0.5) / s) for v in k])
        lower = np.array([_norm_cdf((v - 0.5) / s) for v in k])
        escape = 2.0 * _norm_cdf(-(r + 0.5) / s)
        tables.append(quantize_pmf(np.append(upper - lower, escape), precision))
        lo.append(-r)
    return TableSet.from_tables(tables, lo)
