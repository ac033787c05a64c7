"""WaLLoC networks (torch only): wavelet packets, a linear encoder, a mean-scale hyperprior, a light decoder.

Shared by images (2-D) and audio (1-D). Training adds a factorized prior for z (see ncodec.train.walloc);
inference codes with integer tables exported from it, and runs the hyper-decoder in exact integer arithmetic
(:class:`FixedPointHyperDecoder`) so the probability tables chosen never depend on float rounding.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

from .wavelets import iwpt, wpt


@dataclass(frozen=True)
class WallocConfig:
    ndim: int = 2  # 2: images, 1: audio
    in_ch: int = 3  # colour channels (images) or 1 (audio channels are coded one by one)
    levels: int = 2  # wavelet packet levels J
    latent: int = 48  # latent channels C
    hyper: int = 48  # hyper network width
    z_ch: int = 32  # hyper-latent channels
    dec: int = 64  # decoder width
    n_res: int = 2  # decoder residual blocks
    n_rates: int = 6  # trained rate points (gain vectors)
    n_scales: int = 64  # scale table size
    scale_min: float = 0.11
    scale_max: float = 80.0

    @property
    def bands(self) -> int:
        return self.in_ch * (2**self.ndim) ** self.levels

    @property
    def stride(self) -> int:
        """Input lengths must be multiples of this (wavelet levels + two hyper downsamplings)."""
        return 2 ** (self.levels + 2)

    @property
    def log_step(self) -> float:
        return math.log(self.scale_max / self.scale_min) / (self.n_scales - 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(ndim: int):
    return nn.Conv2d if ndim == 2 else nn.Conv1d


def shuffle_up(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Pixel shuffle by 2 in 1-D or 2-D."""
    if ndim == 2:
        return F.pixel_shuffle(x, 2)
    b, c, t = x.shape
    return x.reshape(b, c // 2, 2, t).permute(0, 1, 3, 2).reshape(b, c // 2, 2 * t)


class ResBlock(nn.Module):
    def __init__(self, ch: int, ndim: int):
        super().__init__()
        conv = _conv(ndim)
        self.a = conv(ch, ch, 3, padding=1)
        self.b = conv(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.b(F.gelu(self.a(x)))


class WallocNet(nn.Module):
    def __init__(self, cfg: WallocConfig):
        super().__init__()
        self.cfg = cfg
        conv = _conv(cfg.ndim)
        c, up = cfg.latent, 2**cfg.ndim
        self.enc = conv(cfg.bands, c, 1)  # the linear encoder of the paper
        self.log_gain = nn.Parameter(torch.zeros(cfg.n_rates, c))
        self.log_igain = nn.Parameter(torch.zeros(cfg.n_rates, c))
        self.h_a = nn.Sequential(
            conv(c, cfg.hyper, 3, padding=1), nn.ReLU(),
            conv(cfg.hyper, cfg.hyper, 5, stride=2, padding=2), nn.ReLU(),
            conv(cfg.hyper, cfg.z_ch, 5, stride=2, padding=2),
        )
        self.h_s = nn.ModuleList([
            conv(cfg.z_ch, cfg.hyper * up, 3, padding=1),
            conv(cfg.hyper, cfg.hyper * up, 3, padding=1),
            conv(cfg.hyper, 2 * c, 1),
        ])
        self.dec_lin = conv(c, cfg.bands, 1)
        self.dec = nn.Sequential(
            conv(c, cfg.dec, 3, padding=1), nn.GELU(),
            *[ResBlock(cfg.dec, cfg.ndim) for _ in range(cfg.n_res)],
            conv(cfg.dec, cfg.bands, 3, padding=1),
        )
        with torch.no_grad():
            # gains spread like the lambdas (quantiser step ~ 1/sqrt(lambda)): steps of ~1/8 .. 1/80 of the
            # pixel range; the linear decoder path starts as the inverse of the encoder, the refinement at 0
            g = torch.linspace(math.log(8.0), math.log(80.0), cfg.n_rates)[:, None].expand(-1, c)
            self.log_gain.copy_(g)
            self.log_igain.copy_(-g)
            if c == cfg.bands:
                w = torch.linalg.qr(torch.randn(c, c))[0]
                self.enc.weight.copy_(w.reshape(self.enc.weight.shape))
                self.dec_lin.weight.copy_(w.T.reshape(self.dec_lin.weight.shape))
                self.enc.bias.zero_()
                self.dec_lin.bias.zero_()
            self.dec[-1].weight.zero_()
            self.dec[-1].bias.zero_()

    # -------------------------------------------------------------------------------- rate control
    def gains(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain for continuous rate index ``q`` in [0, n_rates-1] (shape (B,))."""
        q = q.clamp(0, self.cfg.n_rates - 1).to(self.log_gain.dtype)
        i = q.floor().long().clamp(max=self.cfg.n_rates - 2)
        f = (q - i)[:, None]
        lg = (1 - f) * self.log_gain[i] + f * self.log_gain[i + 1]
        lig = (1 - f) * self.log_igain[i] + f * self.log_igain[i + 1]
        shape = (q.shape[0], -1) + (1,) * self.cfg.ndim
        return lg.exp().reshape(shape), lig.exp().reshape(shape)

    # -------------------------------------------------------------------------------- pieces
    def analysis(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] -> gained latent y (float)."""
        g, _ = self.gains(q)
        return self.enc(wpt(x - 0.5, self.cfg.levels, self.cfg.ndim)) * g

    def synthesis(self, y_hat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        _, ig = self.gains(q)
        y = y_hat * ig
        bands = self.dec_lin(y) + self.dec(y)
        return iwpt(bands, self.cfg.levels, self.cfg.ndim) + 0.5

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float hyper-decoder (training): returns mean and continuous scale-index t."""
        h = F.relu(shuffle_up(self.h_s[0](z_hat), self.cfg.ndim))
        h = F.relu(shuffle_up(self.h_s[1](h), self.cfg.ndim))
        out = self.h_s[2](h)
        return out[:, : self.cfg.latent], out[:, self.cfg.latent :]

    def scale_from_t(self, t: torch.Tensor) -> torch.Tensor:
        return self.cfg.scale_min * torch.exp(self.cfg.log_step * t.clamp(0, self.cfg.n_scales - 1))


class FixedPointHyperDecoder:
    """Exact integer evaluation of ``WallocNet.h_s``.

    Weights are rounded to ``W_BITS`` fractional bits, activations carry ``A_BITS``. Convolutions run in
    float64 on integer-valued tensors: every product and partial sum is an integer below 2**53, so the result
    is exact whatever the summation order or thread count. Rescaling is a floor division by a power of two.
    """

    W_BITS = 12
    A_BITS = 8
    A_MAX = 2**22  # activation clamp keeps |sums| < 2**22 * 2**16 * 2**10 < 2**53

    def __init__(self, weights: list[tuple[torch.Tensor, torch.Tensor]], cfg: WallocConfig):
        self.cfg = cfg
        self.layers = []
        for w, b in weights:
            wq = torch.round(w.double() * 2**self.W_BITS)
            bq = torch.round(b.double() * 2 ** (self.W_BITS + self.A_BITS))
            if wq.abs().max() >= 2**16:
                raise ValueError("hyper-decoder weight too large for the fixed-point path")
            self.layers.append((wq, bq))

    @classmethod
    def from_net(cls, net: WallocNet) -> "FixedPointHyperDecoder":
        return cls([(m.weight.detach(), m.bias.detach()) for m in net.h_s], net.cfg)

    def _conv(self, x, wq, bq):
        conv = F.conv2d if self.cfg.ndim == 2 else F.conv1d
        pad = wq.shape[-1] // 2
        acc = conv(x, wq, bq, padding=pad)
        return torch.floor(acc / 2**self.W_BITS).clamp(-self.A_MAX, self.A_MAX)

    @torch.no_grad()
    def __call__(self, z_sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer z symbols (B, z_ch, ...) -> (mean as float64 exactly k/2**A_BITS, int64 scale index)."""
        nd = self.cfg.ndim
        h = z_sym.double() * 2**self.A_BITS
        (w0, b0), (w1, b1), (w2, b2) = self.layers
        h = shuffle_up(self._conv(h, w0, b0), nd).clamp(min=0)
        h = shuffle_up(self._conv(h, w1, b1), nd).clamp(min=0)
        out = self._conv(h, w2, b2)
        c = self.cfg.latent
        mean = out[:, :c] / 2**self.A_BITS
        idx = torch.floor((out[:, c:] + 2 ** (self.A_BITS - 1)) / 2**self.A_BITS)
        return mean, idx.clamp(0, self.cfg.n_scales - 1).long()
