"""Phase gradient heap integration (PGHI) of decoded STFT magnitudes: rvq codec version 5's start phase.

Prusa, Balazs & Sondergaard, "A noniterative method for reconstruction of phase from STFT magnitude" (2017): under
the Gaussian approximation of the analysis window, a component's instantaneous frequency and its time offset follow
from the derivatives of the log magnitude across bins and across frames, so the phase advance from each entry to
its neighbours in time and frequency is known from the magnitudes alone. The phase is then integrated outwards from
the largest entry, always continuing from the largest entry reached so far (a max-heap; here a bucket queue over
log magnitudes quantised to 1 / 64 nat), so errors stay in the quiet entries; entries more than ``FLOOR_DB``
below the run's largest keep the start phase they were given.

Griffin-Lim started from this phase needs far fewer iterations (docs/results.md, stop 38): on the training clips
of scripts/rvq_steps.py, PESQ-WB 3.090 after 12 iterations against 3.084 after 32 from the frame-indexed phase at
6 kbps, 2.516 against 2.415 at 3 kbps. Imported only by version 5 decoding (it loads numba).

Decoding must repeat exactly: the queue orders entries by integer levels (first in, first out within one), seeds
by level and position, one thread, float64 throughout: the same magnitudes give the same phase (FORMAT.md section
8, version 5).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

FLOOR_DB = 60.0  # entries this far below the unit's largest keep their start phase
LEVELS_PER_NAT = 64  # the integration order's resolution of log magnitudes (0.14 dB)
HANN_GAMMA = 0.25645  # lambda = HANN_GAMMA * n_fft^2: the Gaussian closest to a Hann window (LTFAT's value)


@njit(cache=True)
def _integrate(level, rate_t, rate_f, phase):
    """Heap integration in place: ``phase`` (F, K) holds the start phase; ``level`` (F, K) int64 is each entry's
    distance below the largest in steps of 1 / LEVELS_PER_NAT nat (negative: below the floor, left alone). From
    the first entry of the top level, the phase spreads to the neighbours in time and frequency by the trapezoid
    rule between the two entries' local rates (``rate_t`` per frame, ``rate_f`` per bin), always from the entry
    of the top level reached so far (first come, first served within a level: a bucket queue, which orders as a
    max-heap of the quantised levels does, with no comparisons of floats); when nothing is left to spread from,
    the next seed is the first entry of the top level not reached yet."""
    n_f, n_k = level.shape
    flat = level.ravel()
    top = flat.max() + 1
    # seeds: every entry above the floor, by level (top first), then by position (a counting sort)
    counts = np.zeros(top + 1, np.int64)
    for i in range(flat.size):
        if flat[i] >= 0:
            counts[flat[i] + 1] += 1
    for b in range(top):
        counts[b + 1] += counts[b]
    seeds = np.empty(counts[top], np.int64)
    for i in range(flat.size):
        if flat[i] >= 0:
            seeds[counts[flat[i]]] = i
            counts[flat[i]] += 1
    done = flat < 0
    head = np.full(top, -1, np.int64)
    tail = np.full(top, -1, np.int64)
    nxt = np.full(flat.size, -1, np.int64)
    queued, best = 0, top
    for seed in seeds:
        if done[seed]:
            continue
        done[seed] = True
        b = flat[seed]
        head[b], tail[b], queued, best = seed, seed, 1, b
        while queued > 0:
            while head[best] < 0:
                best += 1
            idx = head[best]
            head[best] = nxt[idx]
            if head[best] < 0:
                tail[best] = -1
            queued -= 1
            j, k = idx // n_k, idx % n_k
            for d in range(4):
                dj = (1, -1, 0, 0)[d]
                dk = (0, 0, 1, -1)[d]
                jj, kk = j + dj, k + dk
                if jj < 0 or jj >= n_f or kk < 0 or kk >= n_k:
                    continue
                nb = jj * n_k + kk
                if done[nb]:
                    continue
                if dj != 0:
                    adv = 0.5 * (rate_t[j, k] + rate_t[jj, kk]) * dj
                else:
                    adv = 0.5 * (rate_f[j, k] + rate_f[jj, kk]) * dk
                phase[jj, kk] = phase[j, k] + adv
                done[nb] = True
                b = flat[nb]
                if tail[b] < 0:
                    head[b] = nb
                else:
                    nxt[tail[b]] = nb
                tail[b] = nb
                queued += 1
                if b < best:
                    best = b
    return phase


def phase_rates(s: np.ndarray, step: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """PGHI's local phase rates (per frame, per bin) from log magnitudes ``s`` (F, K) of ``rvq_net.stft_frames``
    frames (``step`` apart, Hann window of ``n_fft``, phase relative to each frame's first sample).

    With lambda = HANN_GAMMA * n_fft^2 samples^2, a component's frequency offset from bin k is (d s / d k) n_fft^2 /
    (2 pi lambda) bins and its time offset from the frame centre lambda (d s / d j) / (2 pi step) samples (central
    differences, 0 at the edges): the phase advances by 2 pi step (k + offset) / n_fft per frame and by -pi - 2 pi
    (time offset) / n_fft per bin (the frame's phase reference is its first sample, half a window before its
    centre)."""
    lam = HANN_GAMMA * n_fft * n_fft
    ds_k = np.zeros_like(s)
    ds_k[:, 1:-1] = (s[:, 2:] - s[:, :-2]) / 2
    ds_j = np.zeros_like(s)
    ds_j[1:-1] = (s[2:] - s[:-2]) / 2
    k = np.arange(s.shape[1])[None]
    return 2 * np.pi * step * k / n_fft + step * n_fft * ds_k / lam, -lam * ds_j / (step * n_fft) - np.pi


def pghi(mag: np.ndarray, step: int, n_fft: int, start: np.ndarray, rates=None) -> np.ndarray:
    """Start phase (F, K) float32 for the magnitudes (F, K) of ``rvq_net.stft_frames`` frames from
    :func:`phase_rates` of their log magnitudes (or the given ``rates``: (per frame, per bin), each (F, K));
    ``start`` (F, K): the phase of the entries below the floor (``rvq_net.start_phase``)."""
    s = np.log(np.asarray(mag, np.float64) + 1e-12)
    rate_t, rate_f = phase_rates(s, step, n_fft) if rates is None else (np.asarray(r, np.float64) for r in rates)
    phase = np.array(start, np.float64, copy=True)
    if not s.size:
        return phase.astype(np.float32)
    below = np.floor((s.max() - s) * LEVELS_PER_NAT)  # 0 for the largest entries
    level = np.where(below <= FLOOR_DB * math.log(10) / 20 * LEVELS_PER_NAT, below, -1).astype(np.int64)
    return _integrate(level, rate_t, rate_f, phase).astype(np.float32)
