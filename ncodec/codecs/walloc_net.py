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


AUDIO_CONFIG = dict(ndim=1, in_ch=1, levels=4, latent=16, hyper=48, z_ch=16, dec=64, n_res=2,
                    gain_min=60.0, gain_max=1500.0, scale_max=200.0)


@dataclass(frozen=True)
class WallocConfig:
    ndim: int = 2  # 2: images, 1: audio
    in_ch: int = 3  # colour channels (images) or 1 (audio channels are coded one by one)
    levels: int = 3  # wavelet packet levels J
    latent: int = 192  # latent channels C (= bands: in_ch * 4**J)
    hyper: int = 48  # hyper network width
    z_ch: int = 32  # hyper-latent channels
    dec: int = 128  # decoder width
    n_res: int = 2  # decoder residual blocks
    n_rates: int = 6  # trained rate points (gain vectors)
    n_scales: int = 72  # scale table size
    scale_min: float = 0.11
    scale_max: float = 1000.0
    ctx: int = 64  # width of the channel-context network (slice B conditioned on slice A)
    gain_min: float = 8.0  # initial gains of the lowest and highest rate point
    gain_max: float = 80.0

    @property
    def bands(self) -> int:
        return self.in_ch * (2**self.ndim) ** self.levels

    @property
    def slice_a(self) -> list[int]:
        """Latent channels coded first: the bands under the level-1 low band (low frequencies)."""
        per = self.in_ch * 2**self.ndim  # channels after one level
        return [i for i in range(self.bands) if i % per < self.in_ch]

    @property
    def slice_b(self) -> list[int]:
        a = set(self.slice_a)
        return [i for i in range(self.bands) if i not in a]

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
    """Analysis: colour matrix (learned, starts orthonormal) -> wavelet packets -> per-band gains.

    The encoder is linear; the latent has one channel per wavelet band, so channel identities (and the slices
    of the channel context) are fixed. Rate is set by per-band gain vectors, one row per trained lambda.
    """

    def __init__(self, cfg: WallocConfig):
        super().__init__()
        self.cfg = cfg
        conv = _conv(cfg.ndim)
        c, up = cfg.bands, 2**cfg.ndim
        if cfg.latent != c:
            raise ValueError("latent must equal the number of wavelet bands")
        na, nb = len(cfg.slice_a), len(cfg.slice_b)
        self.register_buffer("perm_a", torch.tensor(cfg.slice_a), persistent=False)
        self.register_buffer("perm_b", torch.tensor(cfg.slice_b), persistent=False)
        self.colour = nn.Parameter(colour_init(cfg.in_ch))
        self.colour_inv = nn.Parameter(torch.linalg.inv(colour_init(cfg.in_ch)))
        self.log_gain = nn.Parameter(torch.zeros(cfg.n_rates, c))
        self.log_igain = nn.Parameter(torch.zeros(cfg.n_rates, c))
        self.h_a = nn.Sequential(
            conv(c, cfg.hyper, 3, padding=1), nn.ReLU(),
            conv(cfg.hyper, cfg.hyper, 5, stride=2, padding=2), nn.ReLU(),
            conv(cfg.hyper, cfg.z_ch, 5, stride=2, padding=2),
        )
        # hyper-decoder and context: run in fixed point at inference (FixedPointHyperDecoder)
        self.h_s = nn.ModuleList([
            conv(cfg.z_ch, cfg.hyper * up, 3, padding=1),
            conv(cfg.hyper, cfg.hyper * up, 3, padding=1),
            conv(cfg.hyper, 2 * c, 1),
        ])
        self.ctx = nn.ModuleList([conv(na, cfg.ctx, 3, padding=1), conv(cfg.ctx, 2 * nb, 1)])
        self.dec_lin = conv(c, c, 1)
        self.dec = nn.Sequential(
            conv(c, cfg.dec, 3, padding=1), nn.GELU(),
            *[ResBlock(cfg.dec, cfg.ndim) for _ in range(cfg.n_res)],
            conv(cfg.dec, c, 3, padding=1),
        )
        with torch.no_grad():
            # gains spread like the lambdas (quantiser step ~ 1/sqrt(lambda)): steps of ~1/8 .. 1/80 of the
            # pixel range; the linear decoder path starts as the identity, the refinement at 0
            g = torch.linspace(math.log(cfg.gain_min), math.log(cfg.gain_max), cfg.n_rates)[:, None].expand(-1, c)
            self.log_gain.copy_(g)
            self.log_igain.copy_(-g)
            self.dec_lin.weight.copy_(torch.eye(c).reshape(self.dec_lin.weight.shape))
            self.dec_lin.bias.zero_()
            self.dec[-1].weight.zero_()
            self.dec[-1].bias.zero_()
            self.ctx[-1].weight.zero_()
            self.ctx[-1].bias.zero_()

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

    def _mix(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bj...->bi...", m, x)

    # -------------------------------------------------------------------------------- pieces
    def analysis(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] -> gained latent y (float)."""
        g, _ = self.gains(q)
        return wpt(self._mix(x - 0.5, self.colour), self.cfg.levels, self.cfg.ndim) * g

    def synthesis(self, y_hat: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        _, ig = self.gains(q)
        y = y_hat * ig
        bands = self.dec_lin(y) + self.dec(y)
        return self._mix(iwpt(bands, self.cfg.levels, self.cfg.ndim), self.colour_inv) + 0.5

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float hyper-decoder (training): mean and continuous scale-index t for every channel."""
        h = F.relu(shuffle_up(self.h_s[0](z_hat), self.cfg.ndim))
        h = F.relu(shuffle_up(self.h_s[1](h), self.cfg.ndim))
        out = self.h_s[2](h)
        return out[:, : self.cfg.latent], out[:, self.cfg.latent :]

    def context(self, ya_hat: torch.Tensor, mu_b: torch.Tensor, t_b: torch.Tensor):
        """Float channel context (training): refine slice-B mean/scale from decoded slice A."""
        h = F.relu(self.ctx[0](ya_hat))
        d = self.ctx[1](h)
        nb = mu_b.shape[1]
        return mu_b + d[:, :nb], t_b + d[:, nb:]

    def scale_from_t(self, t: torch.Tensor) -> torch.Tensor:
        return self.cfg.scale_min * torch.exp(self.cfg.log_step * t.clamp(0, self.cfg.n_scales - 1))


def colour_init(n: int) -> torch.Tensor:
    """Orthonormal luma/chroma-like matrix (RGB -> Y, Cb, Cr directions); identity for one channel."""
    if n != 3:
        return torch.eye(n)
    m = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 1.0], [1.0, -2.0, 1.0]])
    return m / m.norm(dim=1, keepdim=True)


class FixedPointEntropyNets:
    """Exact integer evaluation of the hyper-decoder ``h_s`` and the channel context ``ctx``.

    Weights are rounded to ``W_BITS`` fractional bits, activations carry ``A_BITS``. Convolutions run in
    float64 on integer-valued tensors: every product and partial sum is an integer below 2**53, so the result
    is exact whatever the summation order or thread count. Rescaling is a floor division by a power of two.
    All values returned are integers carrying ``A_BITS`` fractional bits (as float64 tensors).
    """

    W_BITS = 12
    A_BITS = 8
    A_MAX = 2**22  # activation clamp keeps |sums| < 2**22 * 2**16 * 2**12 < 2**53

    def __init__(self, net: WallocNet):
        self.cfg = net.cfg
        self.h_s = [self._quantize(m) for m in net.h_s]
        self.ctx = [self._quantize(m) for m in net.ctx]

    def _quantize(self, m):
        wq = torch.round(m.weight.detach().double() * 2**self.W_BITS)
        bq = torch.round(m.bias.detach().double() * 2 ** (self.W_BITS + self.A_BITS))
        if wq.abs().max() >= 2**16 or wq[0].numel() > 2**12:
            raise ValueError("entropy-model weights too large for the fixed-point path")
        return wq, bq

    def _conv(self, x, layer):
        """'Same' convolution as im2col + float64 matrix product (BLAS; faster than torch's float64 conv)."""
        wq, bq = layer
        k = wq.shape[-1]
        x2 = x if self.cfg.ndim == 2 else x[:, :, None]
        b, _, h, w = x2.shape
        cols = F.unfold(x2, (k, k) if self.cfg.ndim == 2 else (1, k), padding=(k // 2, k // 2) if self.cfg.ndim == 2
                        else (0, k // 2))
        acc = (wq.reshape(wq.shape[0], -1) @ cols + bq[:, None]).reshape(b, -1, h, w)
        if self.cfg.ndim == 1:
            acc = acc[:, :, 0]
        return torch.floor(acc / 2**self.W_BITS).clamp(-self.A_MAX, self.A_MAX)

    @torch.no_grad()
    def hyper(self, z_sym: torch.Tensor, median_q: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer z symbols (+ the integer per-channel median offset, A_BITS units) -> (mean, t), fixed point."""
        nd = self.cfg.ndim
        z_hat = z_sym.double() * 2**self.A_BITS + (0 if median_q is None else median_q)
        h = shuffle_up(self._conv(z_hat, self.h_s[0]), nd).clamp(min=0)
        h = shuffle_up(self._conv(h, self.h_s[1]), nd).clamp(min=0)
        out = self._conv(h, self.h_s[2])
        c = self.cfg.latent
        return out[:, :c], out[:, c:]

    @torch.no_grad()
    def context(self, ya_hat, mu_b, t_b):
        """Fixed-point twin of ``WallocNet.context`` (inputs and outputs carry A_BITS)."""
        h = self._conv(ya_hat, self.ctx[0]).clamp(min=0)
        d = self._conv(h, self.ctx[1])
        nb = mu_b.shape[1]
        return mu_b + d[:, :nb], t_b + d[:, nb:]

    def scale_index(self, t: torch.Tensor) -> torch.Tensor:
        one = 2**self.A_BITS
        return torch.floor((t + one // 2) / one).clamp(0, self.cfg.n_scales - 1).long()
