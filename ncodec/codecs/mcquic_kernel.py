"""Compiled adaptive coding of McQuic indices (codec version 2; FORMAT.md section 10).

Imported only when a version 2 unit is coded (it loads numba). One loop serves encoder and decoder, so the model
arithmetic is written once, in integers only. Each codebook's indices are coded in row-major order over its grid
with what the fixed cascaded tables of version 1 lack:

* **adaptation**: the static table of an index (chosen by its cascade parent, as in version 1) is mixed with the
  counts of the indices this codebook has coded so far in the unit: weight ``A * f(s) + 2**16 * count(s)``;
* **neighbour matches**: the distinct indices of the ``NEIGHBOURS`` (left, up, up-left, up-right, two to the
  left, two up; most frequent first, at most ``CANDIDATES``) are tried in turn, each with a binary flag "the
  index is this one" whose adaptive model is chosen by the neighbour's multiplicity and by the bucket
  ``floor(log2(total / weight))`` of the candidate's own weight in the current distribution (so a flag is cheap
  where the tables already expect it);
* **exclusion**: a candidate that missed gets weight 0 before the next flag or the index itself is coded;
* **forgetting**: when a codebook has counted ``HALVE_AT`` indices its counts are halved (rounding up), so
  the mixture follows the tile's content as it changes.

Measured on Kodak (``scripts/mcquic_tables.py``, docs/results.md): 10-21 % fewer bytes than version 1 for the same
indices (-10.1 % at 16 codebooks, -22.4 % at one).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..entropy.range_coder import PRECISION, rd_init, rd_symbol, re_finish, re_init, re_symbol

ADAPT = 2048  # mcquic's weight A of the static table against one observed index (2**16 units each); vqgan: 512
NEIGHBOURS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0))  # (dy, dx) of the candidates' places
CANDIDATES = 4  # neighbour values tried per index
HALVE_AT = 2048  # counts are halved when they sum to this
BUCKETS = 12  # flag contexts by the candidate's probability: floor(log2(1 / p)) clamped to 0 .. BUCKETS - 1
FLAG_PRIOR, FLAG_STEP = 32, 16  # flag counts start at 32 units split by the bucket's probability; +16 each
OK, UNDECODABLE, EXCLUDED = 0, 1, 2
_TOP = 1 << PRECISION


def flag_prior() -> np.ndarray:
    """(3, BUCKETS, 2) int64: the starting (miss, hit) counts of each flag context (multiplicity 1, 2, 3+; bucket
    b): hit ``max(1, round(FLAG_PRIOR * 2**-(b + 0.5)))``, the rest miss (integers, fixed here)."""
    hit = np.maximum(1, np.round(FLAG_PRIOR * 2.0 ** -(np.arange(BUCKETS) + 0.5))).astype(np.int64)
    out = np.empty((3, BUCKETS, 2), np.int64)
    out[:, :, 0] = FLAG_PRIOR - hit
    out[:, :, 1] = hit
    return out


@njit(cache=True, nogil=True)
def _bucket(weight, total):
    b = 0
    while b < BUCKETS - 1 and (weight << (b + 1)) <= total:
        b += 1
    return b


@njit(cache=True, nogil=True, inline="always")
def _count_below(fen, s):
    """Sum of the counts of indices below ``s`` (Fenwick tree ``fen``, 1-based)."""
    r = 0
    i = s
    while i > 0:
        r += fen[i]
        i -= i & -i
    return r


@njit(cache=True, nogil=True, inline="always")
def _fenwick_add(fen, s, v):
    """Add ``v`` to the count of index ``s``."""
    i = s + 1
    while i < len(fen):
        fen[i] += v
        i += i & -i


@njit(cache=True, nogil=True)
def _cum(s, t, cum, fen, excl, wexcl, ne, adapt):
    """Weight of the indices below ``s``: static part, counts, minus the missed candidates below ``s``."""
    c = adapt * cum[t, s] + (_count_below(fen, s) << 16)
    for k in range(ne):
        if excl[k] < s:
            c -= wexcl[k]
    return c


@njit(cache=True, nogil=True)
def code_codebook(encode, st, words, sym, tidx, freqs, cum, h, w, flags, classes, n_cls, adapt):
    """Encode (``encode`` true; ``sym`` read) or decode (``sym`` written) one codebook's indices.

    st: the range coder's state (5 entries encoding, 4 decoding), carried from codebook to codebook; words: the
    encoder's output buffer (uint64, room for ``(CANDIDATES + 1) * h * w`` more words: at most one per coded
    symbol) or the decoder's input (uint32); sym (h * w,) int64 row-major; tidx (h * w,) int64 static table of
    each index, or, where ``n_cls >= 0`` (vqgan's groups), computed here from the indices already coded:
    ``(n_cls + 1) * L + U``, L and U 0 at the grid's edge, else ``1 + classes[index]`` of the left / upper
    neighbour; freqs (tables, K + 1) int64, each row summing to 2**16 (the escape, last, is never coded) and cum
    (tables, K + 2) their running sums; flags: :func:`flag_prior` (updated). The CDF of an index,
    ``floor(C_s * (2**24 - K - 1) / S) + s``, is evaluated only where needed (C_s from the static running sums and
    a Fenwick tree of the counts), so an index costs O(log K), not O(K). Returns a status (OK, UNDECODABLE: no
    encoder writes these words, EXCLUDED: an index equal to a missed candidate or the escape)."""
    k1 = freqs.shape[1]
    span = _TOP - k1
    cnt = np.zeros(k1, np.int64)
    fen = np.zeros(k1 + 1, np.int64)
    seen = 0
    one = np.empty((1, 2), np.uint64)  # a single interval, coded as symbol 0
    fcdf = np.empty((1, 3), np.uint64)
    fcdf[0, 0] = 0
    fcdf[0, 2] = _TOP
    cand = np.empty(len(NEIGHBOURS), np.int64)
    mult = np.empty(len(NEIGHBOURS), np.int64)
    excl = np.empty(CANDIDATES, np.int64)
    wexcl = np.empty(CANDIDATES, np.int64)
    for i in range(h * w):
        y = i // w
        x = i - y * w
        if n_cls < 0:
            t = tidx[i]
        else:
            t = (n_cls + 1) * (classes[sym[i - 1]] + 1 if x else 0) + (classes[sym[i - w]] + 1 if y else 0)
        nc = 0
        for dy, dx in NEIGHBOURS:
            yy, xx = y + dy, x + dx
            if yy < 0 or xx < 0 or xx >= w:
                continue
            v = sym[yy * w + xx]
            found = False
            for k in range(nc):
                if cand[k] == v:
                    mult[k] += 1
                    found = True
            if not found:
                cand[nc] = v
                mult[nc] = 1
                nc += 1
        for k in range(1, nc):  # stable sort by multiplicity, most frequent first
            v, m = cand[k], mult[k]
            j = k
            while j > 0 and mult[j - 1] < m:
                cand[j], mult[j] = cand[j - 1], mult[j - 1]
                j -= 1
            cand[j], mult[j] = v, m
        total = adapt * (1 << 16) + (seen << 16)
        value = -1
        ne = 0
        for k in range(min(nc, CANDIDATES)):
            v = cand[k]
            wv = adapt * freqs[t, v] + (cnt[v] << 16)
            b = _bucket(wv, total)
            m = min(mult[k], 3) - 1
            miss, hit = flags[m, b, 0], flags[m, b, 1]
            fcdf[0, 1] = np.uint64((miss * (_TOP - 2)) // (miss + hit) + 1)
            if encode:
                bit = 1 if sym[i] == v else 0
                re_symbol(st, words, fcdf, 0, bit)
            else:
                bit = rd_symbol(words, st, fcdf, 0)
                if bit < 0:
                    return UNDECODABLE
            flags[m, b, bit] += FLAG_STEP
            if bit:
                value = v
                break
            total -= wv
            excl[ne] = v
            wexcl[ne] = wv
            ne += 1
        if value < 0:
            if encode:
                value = sym[i]
            else:  # the largest s whose CDF is at most the coder's quantile (the peek of rd_symbol)
                q = np.int64((st[2] - st[0]) // (st[1] >> np.uint64(PRECISION)))
                if q >= _TOP:
                    return UNDECODABLE
                lo, hi = 0, k1
                while hi - lo > 1:
                    mid = (lo + hi) >> 1
                    if (_cum(mid, t, cum, fen, excl, wexcl, ne, adapt) * span) // total + mid <= q:
                        lo = mid
                    else:
                        hi = mid
                value = lo
            wv = adapt * freqs[t, value] + (cnt[value] << 16)
            for k in range(ne):
                if excl[k] == value:
                    wv = 0
            if value == k1 - 1 or wv == 0:
                return EXCLUDED
            c = _cum(value, t, cum, fen, excl, wexcl, ne, adapt)
            one[0, 0] = np.uint64((c * span) // total + value)
            one[0, 1] = np.uint64(((c + wv) * span) // total + value + 1)
            if encode:
                re_symbol(st, words, one, 0, 0)
            elif rd_symbol(words, st, one, 0) < 0:
                return UNDECODABLE
        sym[i] = value
        cnt[value] += 1
        _fenwick_add(fen, value, 1)
        seen += 1
        if seen >= HALVE_AT:
            seen = 0
            fen[:] = 0
            for u in range(k1):
                cnt[u] = (cnt[u] + 1) >> 1
                seen += cnt[u]
                _fenwick_add(fen, u, cnt[u])
    return OK


def running_sums(freqs: np.ndarray) -> np.ndarray:
    """(tables, K + 2) int64: each static table's sums below every index (0 first, 2**16 last)."""
    return np.concatenate([np.zeros((len(freqs), 1), np.int64), np.cumsum(freqs, axis=1)], axis=1)


_NO_CLASSES = np.zeros(0, np.int64)


def encode_unit(streams: list[tuple[np.ndarray, np.ndarray, int, int]], freqs: np.ndarray,
                classes: np.ndarray = _NO_CLASSES, n_cls: int = -1, adapt: int = ADAPT) -> np.ndarray:
    """[(indices (h * w,), static tables (h * w,), h, w) per codebook, in coding order] -> uint32 words; with
    ``n_cls >= 0`` the tables are chosen from the neighbours' ``classes`` instead (:func:`code_codebook`)."""
    n = sum((CANDIDATES + 1) * h * w for _, _, h, w in streams) + 2  # at most one word per coded symbol
    out = np.zeros(n, np.uint64)
    st = np.zeros(5, np.uint64)
    re_init(st)
    cum = running_sums(freqs)
    for sym, tidx, h, w in streams:
        status = code_codebook(True, st, out, np.ascontiguousarray(sym, np.int64), np.ascontiguousarray(tidx, np.int64),
                               freqs, cum, h, w, flag_prior(), classes, n_cls, adapt)
        if status != OK:
            raise ValueError("an index the adaptive model cannot code (an escape or out of range)")
    n = re_finish(st, out)
    while n and out[n - 1] == 0:  # trailing zero words (often the seal's second) are left out: decoders read
        n -= 1  # the words past the end as zeros (rd_init, rd_symbol)
    return out[:n].astype(np.uint32)


class Decoder:
    """Decode a unit's words codebook by codebook (the static tables of codebook j depend on those before it)."""

    def __init__(self, words: np.ndarray, freqs: np.ndarray, adapt: int = ADAPT):
        self.words = np.ascontiguousarray(words, np.uint32)
        self.freqs = freqs
        self.cum = running_sums(freqs)
        self.adapt = adapt
        self.st = np.zeros(4, np.uint64)
        rd_init(self.words, self.st)

    def codebook(self, tidx: np.ndarray, h: int, w: int, classes: np.ndarray = _NO_CLASSES,
                 n_cls: int = -1) -> tuple[np.ndarray, int]:
        """(indices (h * w,) int64, status); ``n_cls >= 0``: tables from the neighbours' classes, ``tidx`` unused."""
        sym = np.zeros(h * w, np.int64)
        status = code_codebook(False, self.st, self.words, sym, np.ascontiguousarray(tidx, np.int64), self.freqs,
                               self.cum, h, w, flag_prior(), classes, n_cls, self.adapt)
        return sym, status
