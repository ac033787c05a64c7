"""RVQ audio codec networks (torch only): filterbank + ConvNeXt encoder, residual VQ, ConvNeXt + iSTFT decoder.

Sized for CPU training and decoding (ISSUE #4): the model runs at one internal rate (16 kHz by default) with one
latent frame per ``hop`` samples (50 Hz). The encoder's first layer is a learned, 2x overcomplete filterbank
(a strided convolution) followed by a sign-preserving log compression (asinh) and ConvNeXt blocks at the frame
rate; the decoder mirrors it and ends in a Vocos-style head that predicts a complex STFT frame (log magnitude,
phase) per latent frame and overlap-adds it. No layer runs at the sample rate except the filterbank and the
inverse FFT, which is what makes both training and decoding cheap.

Quantisation is residual VQ (SoundStream/EnCodec) with factorised, l2-normalised code lookups (codebooks of
``codebook_size`` entries in ``code_dim`` dimensions, as DAC does against codebook collapse). ``groups`` > 1
gives group-residual VQ (HiFi-Codec): the latent is split into groups, each with its own residual stack; one
rate step then adds one codebook to every group. Training drops trailing codebooks at random so one model
serves every bitrate.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F


class CodeRates:
    """Rates of a residual-VQ configuration (fields ``rate``, ``hop``, ``groups``, ``codebook_size``)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def frame_rate(self) -> float:
        return self.rate / self.hop

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    def kbps(self, n: int) -> float:
        """Nominal bitrate of ``n`` codebooks per group (uniform code of log2 K bits), per channel."""
        return n * self.groups * self.bits_per_code * self.frame_rate / 1000.0


@dataclass(frozen=True)
class RvqConfig(CodeRates):
    rate: int = 16000  # internal sample rate
    hop: int = 320  # samples per latent frame (50 Hz)
    n_fft: int = 1280  # decoder iSTFT size (4x hop)
    fb: int = 512  # filterbank channels (window 2*hop)
    enc_dim: int = 256
    enc_blocks: int = 4
    dec_dim: int = 320
    dec_blocks: int = 6
    latent: int = 128
    groups: int = 1  # 1: residual VQ; G > 1: group-residual VQ
    n_q: int = 24  # codebooks per group at the highest rate
    codebook_size: int = 1024
    code_dim: int = 8
    head_frames: int = 1  # STFT frames the decoder predicts per latent frame (hop / head_frames apart)



class ConvNeXt(nn.Module):
    """Depthwise conv (k=7), LayerNorm, pointwise MLP x3, layer scale, residual (channels-first I/O)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 3 * dim)
        self.pw2 = nn.Linear(3 * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x):
        h = self.dw(x).transpose(1, 2)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + (self.scale * h).transpose(1, 2)


class Encoder(nn.Module):
    def __init__(self, cfg: RvqConfig):
        super().__init__()
        self.cfg = cfg
        self.fb = nn.Conv1d(1, cfg.fb, 2 * cfg.hop, stride=cfg.hop, padding=cfg.hop // 2, bias=False)
        self.inp = nn.Conv1d(cfg.fb, cfg.enc_dim, 1)
        self.blocks = nn.Sequential(*[ConvNeXt(cfg.enc_dim) for _ in range(cfg.enc_blocks)])
        self.norm = nn.LayerNorm(cfg.enc_dim)
        self.out = nn.Linear(cfg.enc_dim, cfg.latent)

    def forward(self, x):
        """x: (B, 1, T), T a multiple of hop -> (B, latent, T / hop)."""
        h = torch.asinh(self.fb(x) * 30.0)
        h = self.blocks(self.inp(h))
        return self.out(self.norm(h.transpose(1, 2))).transpose(1, 2)


class Decoder(nn.Module):
    def __init__(self, cfg: RvqConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Conv1d(cfg.latent, cfg.dec_dim, 3, padding=1)
        self.blocks = nn.Sequential(*[ConvNeXt(cfg.dec_dim) for _ in range(cfg.dec_blocks)])
        self.norm = nn.LayerNorm(cfg.dec_dim)
        self.head = nn.Linear(cfg.dec_dim, cfg.head_frames * (cfg.n_fft + 2))
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, q):
        """q: (B, latent, N) -> (B, 1, N * hop)."""
        cfg = self.cfg
        h = self.blocks(self.inp(q))
        spec = self.head(self.norm(h.transpose(1, 2)))  # (B, N, head_frames * (n_fft + 2))
        spec = spec.reshape(spec.shape[0], -1, cfg.n_fft + 2)  # (B, N * head_frames, n_fft + 2)
        bins = cfg.n_fft // 2 + 1
        mag = torch.exp(spec[..., :bins].clamp(max=10.0))
        phase = spec[..., bins:]
        frames = torch.fft.irfft(torch.polar(mag, phase), n=cfg.n_fft) * self.window
        return _overlap_add(frames, self.window, cfg.hop // cfg.head_frames)


def _overlap_add(frames: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
    """Frames centred at j*hop + hop/2 (the encoder's frame centres) -> (B, 1, N*hop), window-normalised."""
    b, n, size = frames.shape
    total = (n - 1) * hop + size
    out = F.fold(frames.transpose(1, 2), (1, total), (1, size), stride=(1, hop))[:, 0]  # (B, 1, total)
    env = F.fold(window.square().expand(1, n, size).transpose(1, 2), (1, total), (1, size), stride=(1, hop))[:, 0]
    start = size // 2 - hop // 2  # frame j starts at j*hop + hop/2 - size/2
    out = out / env.clamp_min(1e-3)
    return out[..., start : start + n * hop]


class VQ(nn.Module):
    """One codebook: project to code_dim, nearest l2-normalised codeword (cosine), project back."""

    def __init__(self, cfg: RvqConfig, dim: int):
        super().__init__()
        self.inp = nn.Linear(dim, cfg.code_dim)
        self.out = nn.Linear(cfg.code_dim, dim)
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, cfg.code_dim))

    def codes(self, r):
        """r: (B, N, dim) -> (B, N) int64 indices."""
        e = F.normalize(self.inp(r), dim=-1)
        c = F.normalize(self.codebook, dim=-1)
        return (e @ c.t()).argmax(-1)

    def lookup(self, idx):
        return self.out(F.normalize(self.codebook, dim=-1)[idx])

    def forward(self, r):
        """Training: (quantised with straight-through, codes, commitment + codebook loss)."""
        e = F.normalize(self.inp(r), dim=-1)
        c = F.normalize(self.codebook, dim=-1)
        idx = (e.detach() @ c.t()).argmax(-1)
        cq = c[idx]
        loss = F.mse_loss(e, cq.detach(), reduction="none").mean(-1) * 0.25 + \
            F.mse_loss(cq, e.detach(), reduction="none").mean(-1)
        cq = e + (cq - e).detach()
        return self.out(cq), idx, loss


class ResidualVQ(nn.Module):
    def __init__(self, cfg: RvqConfig):
        super().__init__()
        self.cfg = cfg
        self.gdim = cfg.latent // cfg.groups
        self.vqs = nn.ModuleList([nn.ModuleList([VQ(cfg, self.gdim) for _ in range(cfg.n_q)])
                                  for _ in range(cfg.groups)])

    def encode(self, z, n: int) -> torch.Tensor:
        """z: (B, latent, N) -> codes (B, groups, n, N) int64, n codebooks per group."""
        out = []
        for g, vqs in enumerate(self.vqs):
            r = z[:, g * self.gdim : (g + 1) * self.gdim].transpose(1, 2)
            codes = []
            for vq in vqs[:n]:
                idx = vq.codes(r)
                r = r - vq.lookup(idx)
                codes.append(idx)
            out.append(torch.stack(codes, 1))
        return torch.stack(out, 1)

    def decode(self, codes) -> torch.Tensor:
        """codes (B, groups, n, N) -> (B, latent, N)."""
        parts = []
        for g, vqs in enumerate(self.vqs):
            q = sum(vqs[k].lookup(codes[:, g, k]) for k in range(codes.shape[2]))
            parts.append(q.transpose(1, 2))
        return torch.cat(parts, 1)

    def forward(self, z, n_active: torch.Tensor):
        """Training. n_active: (B,) codebooks per group kept for each item (quantiser dropout)."""
        parts, losses = [], []
        for g, vqs in enumerate(self.vqs):
            r = z[:, g * self.gdim : (g + 1) * self.gdim].transpose(1, 2)
            q = torch.zeros_like(r)
            for k, vq in enumerate(vqs):
                keep = (n_active > k).float()[:, None, None]
                if keep.sum() == 0:
                    break
                qk, _, loss = vq(r)
                q = q + qk * keep
                r = r - qk * keep
                losses.append((loss.mean(-1) * keep[:, 0, 0]).sum() / keep.sum())
            parts.append(q.transpose(1, 2))
        return torch.cat(parts, 1), torch.stack(losses).sum()


class RvqNet(nn.Module):
    def __init__(self, cfg: RvqConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = ResidualVQ(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, x, n_active):
        z = self.encoder(x)
        q, vq_loss = self.quantizer(z, n_active)
        return self.decoder(q), vq_loss
