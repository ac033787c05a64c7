"""Compiled coding loop of walloc's causal context model (``walloc.ContextModel``; FORMAT.md section 4).

Imported only when a context-coded unit is coded (it loads numba). One loop serves encoder and decoder, so the
context arithmetic is written once: positions in coded order (wavefront steps, all bands of a position
together), each symbol's prediction and table from its neighbours, which lie in earlier steps and so are always
coded before it. ``ContextModel.analyse`` (numpy, whole grids) computes the same integers for fitting.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..entropy.range_coder import rd_init, rd_symbol, re_finish, re_init, re_symbol

OK, UNDECODABLE, TOO_FEW_ESCAPES, UNUSED_ESCAPES = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def code_context(encode, sv, words, escapes, cdf, log_rows, order, nbr, t, pred, u, v, thresholds, energy_w,
                 res, pred_bits, bin_bits, s_max):
    """Encode (``encode`` true) or decode the symbols of one stream.

    sv (hw + 1, nb) int64: the symbols, position-major, last row zero (the value of a missing neighbour); the
    encoder reads them, the decoder writes them. words (uint64): the encoder's output buffer (hw * nb + 3) or the
    decoder's input; escapes (int64): the escaped residuals in coded order, written (buffer of hw * nb) or read.
    cdf (NB, 2 * res + 3) uint64 and log_rows (NB, 2 * res + 2): the tables; order (hw,): positions in coded
    order; nbr (K, hw): flat neighbour positions, hw for "outside"; t (hw, nb): scale indices; pred (nb, K),
    u (nb, T), v (nb, len(thresholds)): the bands' integer parameters.

    Returns (words written, escapes written or used, model bits, status).
    """
    hw, nb = t.shape
    n_tab = cdf.shape[0]
    esc_symbol = 2 * res + 1
    half = np.int64(1) << (pred_bits - 1)
    rv = np.zeros((hw + 1, nb), np.int64)
    st = np.zeros(5, np.uint64)
    if encode:
        re_init(st)
    else:
        rd_init(words, st)
    bits = 0.0
    n_esc = 0
    q = np.zeros(nbr.shape[0], np.int64)
    for p in order:
        for k in range(len(q)):
            q[k] = nbr[k, p]
        for j in range(nb):
            acc = np.int64(0)
            energy = np.int64(0)
            for k in range(len(q)):
                acc += pred[j, k] * sv[q[k], j]
                energy += energy_w[k] * abs(rv[q[k], j])
            e = -1
            for th in thresholds:  # ascending from 0: e = (number of thresholds <= energy) - 1
                if th > energy:
                    break
                e += 1
            tab = min(max((u[j, t[p, j]] + v[j, e]) >> bin_bits, 0), n_tab - 1)
            pr = (acc + half) >> pred_bits
            if encode:
                r = sv[p, j] - pr
                local = r + res
                if abs(r) > res:
                    local = esc_symbol
                    escapes[n_esc] = r
                    n_esc += 1
                re_symbol(st, words, cdf, tab, local)
            else:
                local = rd_symbol(words, st, cdf, tab)
                if local < 0:
                    return 0, n_esc, bits, UNDECODABLE
                r = np.int64(local - res)
                if local == esc_symbol:
                    if n_esc == len(escapes):
                        return 0, n_esc, bits, TOO_FEW_ESCAPES
                    r = escapes[n_esc]
                    n_esc += 1
                sv[p, j] = min(max(r + pr, -s_max), s_max)
            bits += log_rows[tab, local]
            rv[p, j] = r
    if encode:
        return np.int64(re_finish(st, words)), n_esc, bits, OK
    if n_esc != len(escapes):
        return 0, n_esc, bits, UNUSED_ESCAPES
    return 0, n_esc, bits, OK
