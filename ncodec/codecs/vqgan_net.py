"""Extreme-rate VQGAN networks (torch only): f16 autoencoder with one codebook, K-means ladder, masked-index
transformer.

A CPU-sized take on "Extreme Image Compression using Fine-tuned VQGANs" (Mao et al.): an image becomes one
codebook index per 16x16 block. The front end follows the WaLLoC lesson (GUIDE §4b): a fixed wavelet packet
transform (4 levels: 768 bands at 1/16) and a light encoder; the decoder upsamples twice with pixel shuffles
and emits the 48 bands of a 2-level packet transform, inverted to pixels.

Codebook: online k-means (EMA, as mcquic) in a low dimension (``dim``; low-dimensional lookup keeps
utilisation high, as ViT-VQGAN's factorised codes), seeded from latents after an autoencoder warm-up, dead
codewords re-seeded during training.

Rate ladder: the codebook is k-means-clustered into smaller ones (``rungs``, e.g. 1024 .. 8); each rung keeps
the map from big codewords to its clusters and its own codewords, fine-tuned with encoder and decoder frozen
(ncodec.train.vqgan). The encoder picks the nearest codeword of the chosen rung.

Lost indices: :class:`IndexTransformer` sees the rung codewords of the known positions (a mask token elsewhere),
with a depthwise-conv positional encoding (any grid size), and predicts the *big* codebook index of every
position; a rung's prediction sums the probabilities of the big codewords its clusters hold.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
import torch.nn.functional as F

from .mcquic_net import EmaVQ, nearest
from .walloc_net import ResBlock, colour_init
from .wavelets import iwpt, wpt


@dataclass(frozen=True)
class VqganConfig:
    levels: int = 4  # analysis wavelet packet levels: the index grid is 1/2**levels of the image
    out_levels: int = 2  # the decoder emits the bands of this many packet levels
    enc_width: int = 192
    dec_width: int = 256
    dim: int = 32  # codeword dimension
    codebook_size: int = 1024
    rungs: list = field(default_factory=lambda: [1024, 512, 256, 128, 64, 32, 16, 8])

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def stride(self) -> int:
        return 2**self.levels


class Up(nn.Module):
    """x2 upsampling: 3x3 conv to 4x the output channels, pixel shuffle."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1)

    def forward(self, x):
        return F.pixel_shuffle(self.conv(F.gelu(x)), 2)


class VqganNet(nn.Module):
    def __init__(self, cfg: VqganConfig):
        super().__init__()
        assert cfg.levels - cfg.out_levels == 2, "the decoder upsamples twice"
        self.cfg = cfg
        ew, dw = cfg.enc_width, cfg.dec_width
        self.colour = nn.Parameter(colour_init(3))
        self.colour_inv = nn.Parameter(torch.linalg.inv(colour_init(3)))
        self.enc = nn.Sequential(nn.Conv2d(3 * 4**cfg.levels, ew, 1), ResBlock(ew, 2), ResBlock(ew, 2), nn.GELU(),
                                 nn.Conv2d(ew, cfg.dim, 1))
        self.dec = nn.Sequential(nn.Conv2d(cfg.dim, dw, 3, padding=1), ResBlock(dw, 2), ResBlock(dw, 2),
                                 Up(dw, dw // 2), ResBlock(dw // 2, 2), Up(dw // 2, dw // 4), ResBlock(dw // 4, 2),
                                 nn.GELU(), nn.Conv2d(dw // 4, 3 * 4**cfg.out_levels, 3, padding=1))
        self.vq = EmaVQ(cfg.codebook_size, cfg.dim)
        with torch.no_grad():
            self.dec[-1].weight.mul_(0.1)

    def _mix(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", m, x)

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] (sides multiples of cfg.stride) -> latent (B, dim, H/16, W/16)."""
        return self.enc(wpt(self._mix(x - 0.5, self.colour), self.cfg.levels, 2))

    def synthesis(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self._mix(iwpt(self.dec(z_hat), self.cfg.out_levels, 2), self.colour_inv) + 0.5

    def forward(self, x: torch.Tensor, quantize: bool = True):
        """Training pass: (reconstruction, commitment loss, indices or None)."""
        z = self.analysis(x)
        if not quantize:
            return self.synthesis(z), torch.zeros(()), None
        b, d, h, w = z.shape
        v = z.permute(0, 2, 3, 1).reshape(-1, d)
        q, idx, _ = self.vq(v)
        # scale-free commitment: unexplained fraction of the latent's variance
        commit = F.mse_loss(v, q.detach()) / v.detach().var().clamp_min(1e-6)
        q = v + (q - v).detach()
        return self.synthesis(q.reshape(b, h, w, d).permute(0, 3, 1, 2)), commit, idx.reshape(b, h, w)

    # ------------------------------------------------------------------------------------------ inference
    def decode_latent(self, codebook: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Image from indices (B, h, w) into ``codebook`` (differentiable in the codebook)."""
        return self.synthesis(codebook[idx].permute(0, 3, 1, 2))


@torch.no_grad()
def encode_indices(net: nn.Module, x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(B, h, w) nearest-codeword indices into ``codebook`` (K, dim) of ``net.analysis(x)`` (VqganNet or
    ncodec.codecs.taming_net.TamingNet)."""
    z = net.analysis(x)
    b, d, h, w = z.shape
    return nearest(z.permute(0, 2, 3, 1).reshape(-1, d), codebook).reshape(b, h, w)


class Discriminator(nn.Module):
    """Small PatchGAN (hinge loss), used in training only."""

    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(sn(nn.Conv2d(3, w, 4, 2, 1)), nn.LeakyReLU(0.2), sn(nn.Conv2d(w, 2 * w, 4, 2, 1)),
                                 nn.LeakyReLU(0.2), sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
                                 sn(nn.Conv2d(4 * w, 1, 3, 1, 1)))

    def forward(self, x):
        return self.net(x * 2 - 1)


@dataclass(frozen=True)
class TransformerConfig:
    width: int = 128
    layers: int = 3
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class IndexTransformer(nn.Module):
    """Bidirectional transformer over an index grid: input the codewords of the known positions (a learned mask
    vector elsewhere), output logits over the big codebook at every position."""

    def __init__(self, cfg: TransformerConfig, dim: int, codebook_size: int):
        super().__init__()
        w = cfg.width
        self.inp = nn.Linear(dim, w)
        self.mask = nn.Parameter(torch.zeros(w))
        self.pos = nn.Conv2d(w, w, 5, padding=2, groups=w)  # conditional positional encoding (any grid size)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.body = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, codebook_size)

    def forward(self, vectors: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """vectors (B, h, w, dim) codewords, known (B, h, w) bool -> logits (N, K) of the N unknown positions
        (in ``torch.nonzero(~known)`` order)."""
        b, h, w, _ = vectors.shape
        t = torch.where(known[..., None], self.inp(vectors), self.mask)
        t = t + self.pos(t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        t = self.body(t.reshape(b, h * w, -1)).reshape(b, h, w, -1)
        return self.out(self.norm(t[~known]))


def rung_logprobs(logits: torch.Tensor, rung_map: torch.Tensor, k: int) -> torch.Tensor:
    """Log-probabilities (..., k) of a rung's clusters: log-sum of the big codewords' probabilities per cluster."""
    p = logits.float().softmax(-1)
    out = torch.zeros(*p.shape[:-1], k, dtype=p.dtype)
    out.index_add_(p.dim() - 1, rung_map.long(), p)
    return out.clamp_min(1e-12).log()
