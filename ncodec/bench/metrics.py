"""Metrics and rate-distortion summaries: PSNR, MS-SSIM, BD-rate (pchip over log-rate), quality at a rate."""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """MS-SSIM of two uint8 RGB images (pytorch-msssim); None when the image is too small (< 161 px)."""
    if min(a.shape[:2]) < 161:
        return None
    import torch
    from pytorch_msssim import ms_ssim as _ms

    ta = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].float()
    return float(_ms(ta, tb, data_range=255.0))


def _curve(rates, quals):
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quals, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.argsort(q)
    q, lr = q[order], np.log(r[order])
    # pchip needs strictly increasing x: keep the running upper envelope in quality
    uq, ulr = [], []
    for qq, ll in zip(q, lr):
        if not uq or qq > uq[-1] + 1e-9:
            uq.append(qq)
            ulr.append(ll)
    return np.array(uq), np.array(ulr)


def bd_rate(rate_a, qual_a, rate_b, qual_b) -> float | None:
    """Bjontegaard rate difference of B against anchor A in percent (negative: B needs fewer bits).

    Log-rate as a function of quality is interpolated with monotone piecewise cubic (pchip) and integrated
    over the overlapping quality range. None when the ranges do not overlap.
    """
    from scipy.interpolate import PchipInterpolator

    qa, la = _curve(rate_a, qual_a)
    qb, lb = _curve(rate_b, qual_b)
    if len(qa) < 2 or len(qb) < 2:
        return None
    lo, hi = max(qa[0], qb[0]), min(qa[-1], qb[-1])
    if hi <= lo:
        return None
    ia = PchipInterpolator(qa, la).integrate(lo, hi)
    ib = PchipInterpolator(qb, lb).integrate(lo, hi)
    return float((np.exp((ib - ia) / (hi - lo)) - 1) * 100)


def quality_at_rate(rates, quals, target: float) -> float | None:
    """Quality at ``target`` rate, interpolated linearly over log-rate; None outside the measured range."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quals, dtype=np.float64)
    order = np.argsort(r)
    r, q = r[order], q[order]
    if len(r) < 2 or target < r[0] or target > r[-1]:
        return None
    return float(np.interp(np.log(target), np.log(r), q))
