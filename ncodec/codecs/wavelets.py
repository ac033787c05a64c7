"""Invertible wavelet packet transforms (CDF 9/7 lifting, periodic extension) in torch.

The 9/7 biorthogonal wavelet of JPEG 2000 ("bior4.4" in PyWavelets), written as four lifting steps and a
scaling, so the inverse is exact up to float rounding. ``wpt(x, levels, ndim)`` splits every band again at every
level (a full packet tree): a 2-D image with C channels becomes C*4**J channels at 1/2**J resolution; 1-D audio
becomes C*2**J channels at 1/2**J of the sample rate. Lengths must be divisible by 2**J.
"""
from __future__ import annotations

import math

import torch

_ALPHA = -1.586134342059924
_BETA = -0.052980118572961
_GAMMA = 0.882911075530934
_DELTA = 0.443506852043971
_K = 1.230174104914001
# Band gains: the high band gets the standard 1/K; the low band's gain is measured once in float64 below so that
# a constant signal c gives a low band of sqrt(2)*c (near-orthonormal: coefficient energy ~ signal energy).
_LOWGAIN = 1.0
_HIGHGAIN = 1.0 / _K


def _even_odd(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.movedim(dim, -1)
    even, odd = x[..., 0::2], x[..., 1::2]
    return even.movedim(-1, dim), odd.movedim(-1, dim)


def _interleave(even: torch.Tensor, odd: torch.Tensor, dim: int) -> torch.Tensor:
    e, o = even.movedim(dim, -1), odd.movedim(dim, -1)
    out = torch.stack((e, o), dim=-1).flatten(-2)
    return out.movedim(-1, dim)


def dwt(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One 9/7 level along ``dim`` (a negative index); low and high bands stacked on dim 1: (B, 2C, ...)."""
    even, odd = _even_odd(x, dim)
    d = odd + _ALPHA * (even + torch.roll(even, -1, dim))
    s = even + _BETA * (d + torch.roll(d, 1, dim))
    d = d + _GAMMA * (s + torch.roll(s, -1, dim))
    s = s + _DELTA * (d + torch.roll(d, 1, dim))
    return torch.cat((s * _LOWGAIN, d * _HIGHGAIN), dim=1)


def idwt(y: torch.Tensor, dim: int) -> torch.Tensor:
    c = y.shape[1] // 2
    s, d = y[:, :c] / _LOWGAIN, y[:, c:] / _HIGHGAIN
    s = s - _DELTA * (d + torch.roll(d, 1, dim))
    d = d - _GAMMA * (s + torch.roll(s, -1, dim))
    even = s - _BETA * (d + torch.roll(d, 1, dim))
    odd = d - _ALPHA * (even + torch.roll(even, -1, dim))
    return _interleave(even, odd, dim)


_dc = dwt(torch.ones(1, 1, 8, dtype=torch.float64), -1)[0, 0, 0].item()
_LOWGAIN = math.sqrt(2.0) / _dc
del _dc


def wpt(x: torch.Tensor, levels: int, ndim: int) -> torch.Tensor:
    """Full wavelet packet transform over the last ``ndim`` (1 or 2) dims, ``levels`` times."""
    for _ in range(levels):
        for dim in range(-ndim, 0):
            x = dwt(x, dim)
    return x


def iwpt(y: torch.Tensor, levels: int, ndim: int) -> torch.Tensor:
    """Exact inverse of :func:`wpt`."""
    for _ in range(levels):
        for dim in reversed(range(-ndim, 0)):
            y = idwt(y, dim)
    return y
