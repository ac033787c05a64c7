"""Compiled decoding loop of walloc's causal context model (``walloc.ContextModel``; FORMAT.md section 4).

Imported only when a context-coded unit is decoded (it loads numba). The arithmetic is the integer arithmetic
of ``ContextModel.analyse`` position by position, in the order the encoder coded them: the wavefront order, all
bands of a position together; a position's neighbours lie in earlier wavefront steps, so a sequential loop sees
them decoded.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..entropy.range_decoder import rd_init, rd_symbol

OK, UNDECODABLE, TOO_FEW_ESCAPES, UNUSED_ESCAPES = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def decode_context(words, cdf, log_rows, order, nbr, t, pred, u, v, thresholds, energy_w, escapes,
                   res, pred_bits, bin_bits, s_max):
    """Decode the symbols of one stream.

    words: uint32 range-coder words; cdf (NB, 2 * res + 3) uint64 and log_rows (NB, 2 * res + 2): the tables;
    order (hw,): positions in coded order; nbr (K, hw): flat neighbour positions, hw for "outside" (a zero row);
    t (hw, nb): scale indices; pred (nb, K), u (nb, T), v (nb, len(thresholds)): the bands' integer parameters;
    escapes: the escaped residuals in coded order. Returns (symbols (hw + 1, nb), model bits, status).
    """
    hw, nb = t.shape
    n_tab = cdf.shape[0]
    esc_symbol = 2 * res + 1
    half = np.int64(1) << (pred_bits - 1)
    sv = np.zeros((hw + 1, nb), np.int64)
    rv = np.zeros((hw + 1, nb), np.int64)
    st = np.zeros(4, np.uint64)
    rd_init(words, st)
    bits = 0.0
    used = 0
    n_nbr = nbr.shape[0]
    q = np.zeros(n_nbr, np.int64)
    for p in order:
        for k in range(n_nbr):
            q[k] = nbr[k, p]
        for j in range(nb):
            acc = np.int64(0)
            energy = np.int64(0)
            for k in range(n_nbr):
                acc += pred[j, k] * sv[q[k], j]
                energy += energy_w[k] * abs(rv[q[k], j])
            e = -1
            for th in thresholds:  # ascending from 0: e = (number of thresholds <= energy) - 1
                if th > energy:
                    break
                e += 1
            tab = (u[j, t[p, j]] + v[j, e]) >> bin_bits
            tab = min(max(tab, 0), n_tab - 1)
            local = rd_symbol(words, st, cdf, tab)
            if local < 0:
                return sv, bits, UNDECODABLE
            bits += log_rows[tab, local]
            if local == esc_symbol:
                if used == len(escapes):
                    return sv, bits, TOO_FEW_ESCAPES
                r = escapes[used]
                used += 1
            else:
                r = np.int64(local - res)
            rv[p, j] = r
            sv[p, j] = min(max(r + ((acc + half) >> pred_bits), -s_max), s_max)
    if used != len(escapes):
        return sv, bits, UNUSED_ESCAPES
    return sv, bits, OK
