"""EnCodec 24 kHz networks (SEANet encoder/decoder + residual VQ) for official checkpoints, inside ncodec's rvq codec.

A user with Meta's ``encodec_24khz-d7cc33bc.th`` runs ``ncodec convert-encodec FILE -o models/``: its weights are
read as tensors only (``torch.load(weights_only=True)``), weight normalisation is folded into plain weights, and
the result is written as safetensors with a JSON card (``"arch": "encodec"``). ``ncodec encode x.wav --codec rvq
--model encodec-24khz --bitrate 6`` then codes with it in our container: 75 Hz frames, codebooks of 1024 (0.75 kbps
each, 1.5-24 kbps), codes entropy-coded with per-codebook frequency tables counted at conversion time on audio
the user names (uniform tables without), segments and cross-fades as for our own rvq models.

The layout reproduced (``EncodecModel.encodec_model_24khz``): SEANet with ``n_filters`` 32, ratios 8, 5, 4, 2 (the
encoder runs them reversed), one residual block per scale (kernel 3 then 1, half width, 1x1 shortcut conv), ELU,
a 2-layer LSTM with a skip at the bottleneck, kernel-7 first and last convs, fully causal convolutions with
reflect padding and transposed convolutions trimmed on the right; residual VQ with Euclidean codebooks. Sizes
are read from the checkpoint, so small test checkpoints with the same keys load too. The 48 kHz model (stereo,
non-causal, time group norm, per-segment normalisation) is refused with a message.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelMismatch
from .rvq_net import CodeRates

RATIOS = (8, 5, 4, 2)


@dataclass(frozen=True)
class EncodecConfig(CodeRates):
    rate: int = 24000
    n_filters: int = 32
    dimension: int = 128
    lstm: int = 2
    n_q: int = 32
    codebook_size: int = 1024
    groups: int = 1
    hop: int = math.prod(RATIOS)


class CausalConv(nn.Module):
    """Conv1d padded on the left (reflect) by (k - 1) * dilation - (stride - 1), plus what the last window needs."""

    def __init__(self, cin, cout, k, stride=1, dilation=1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, stride, dilation=dilation)

    def forward(self, x):
        k, s, d = self.conv.kernel_size[0], self.conv.stride[0], self.conv.dilation[0]
        pad = (k - 1) * d - (s - 1)
        n = (x.shape[-1] - k + pad) / s + 1
        extra = (math.ceil(n) - 1) * s + (k - pad) - x.shape[-1]
        left, right = pad, extra
        if x.shape[-1] <= max(left, right):  # reflect needs a longer signal: zero-extend first, as EnCodec does
            grow = max(left, right) - x.shape[-1] + 1
            x = F.pad(F.pad(x, (0, grow)), (left, right), mode="reflect")[..., : -grow]
        else:
            x = F.pad(x, (left, right), mode="reflect")
        return self.conv(x)


class CausalConvTr(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.convtr = nn.ConvTranspose1d(cin, cout, k, stride)

    def forward(self, x):
        y = self.convtr(x)
        trim = self.convtr.kernel_size[0] - self.convtr.stride[0]
        return y[..., : y.shape[-1] - trim]


class ResBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.block = nn.Sequential(nn.ELU(), CausalConv(dim, dim // 2, 3), nn.ELU(), CausalConv(dim // 2, dim, 1))
        self.shortcut = CausalConv(dim, dim, 1)

    def forward(self, x):
        return self.shortcut(x) + self.block(x)


class SkipLSTM(nn.Module):
    def __init__(self, dim, layers):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers)

    def forward(self, x):
        t = x.permute(2, 0, 1)
        y, _ = self.lstm(t)
        return (y + t).permute(1, 2, 0)


def _encoder(cfg: EncodecConfig) -> nn.Sequential:
    nf, layers, mult = cfg.n_filters, [CausalConv(1, cfg.n_filters, 7)], 1
    for r in reversed(RATIOS):
        layers += [ResBlock(mult * nf), nn.ELU(), CausalConv(mult * nf, 2 * mult * nf, 2 * r, r)]
        mult *= 2
    if cfg.lstm:
        layers.append(SkipLSTM(mult * nf, cfg.lstm))
    layers += [nn.ELU(), CausalConv(mult * nf, cfg.dimension, 7)]
    return nn.Sequential(*layers)


def _decoder(cfg: EncodecConfig) -> nn.Sequential:
    nf, mult = cfg.n_filters, 2 ** len(RATIOS)
    layers = [CausalConv(cfg.dimension, mult * nf, 7)]
    if cfg.lstm:
        layers.append(SkipLSTM(mult * nf, cfg.lstm))
    for r in RATIOS:
        layers += [nn.ELU(), CausalConvTr(mult * nf, mult * nf // 2, 2 * r, r), ResBlock(mult * nf // 2)]
        mult //= 2
    layers += [nn.ELU(), CausalConv(nf, 1, 7)]
    return nn.Sequential(*layers)


class _Seq(nn.Module):
    def __init__(self, model: nn.Sequential):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class EuclideanRVQ(nn.Module):
    """Residual VQ over Euclidean codebooks; the rvq codec's quantizer interface (groups axis of size 1)."""

    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        self.embed = nn.ParameterList([nn.Parameter(torch.zeros(cfg.codebook_size, cfg.dimension), requires_grad=False)
                                       for _ in range(cfg.n_q)])

    def encode(self, z, n: int) -> torch.Tensor:
        """z (B, D, N) -> codes (B, 1, n, N)."""
        r = z.transpose(1, 2)
        codes = []
        for e in self.embed[:n]:
            dist = r.square().sum(-1, keepdim=True) - 2 * r @ e.t() + e.square().sum(-1)
            idx = dist.argmin(-1)
            r = r - e[idx]
            codes.append(idx)
        return torch.stack(codes, 1)[:, None]

    def decode(self, codes) -> torch.Tensor:
        """codes (B, 1, n, N) -> (B, D, N)."""
        return sum(self.embed[k][codes[:, 0, k]] for k in range(codes.shape[2])).transpose(1, 2)


class EncodecNet(nn.Module):
    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = _Seq(_encoder(cfg))
        self.quantizer = EuclideanRVQ(cfg)
        self.decoder = _Seq(_decoder(cfg))


def from_official(state: dict, rate: int = 24000) -> tuple[EncodecConfig, dict]:
    """An EnCodec state dict (keys ``encoder.model.*.conv.conv.weight_g`` ...) -> (config, our state dict)."""
    if any(".norm." in k for k in state) or "encoder.model.0.conv.conv.weight_v" not in state:
        raise ModelMismatch("not an EnCodec 24 kHz checkpoint (weight-normalised SEANet); the 48 kHz model "
                            "(time group norm, stereo) is not supported")
    v0 = state["encoder.model.0.conv.conv.weight_v"]
    if v0.shape[1] != 1:
        raise ModelMismatch(f"EnCodec checkpoint with {v0.shape[1]} input channels; only the mono 24 kHz model loads")
    n_q = len({m[1] for k in state if (m := re.match(r"quantizer\.vq\.layers\.(\d+)\._codebook\.embed$", k))})
    if n_q == 0:
        raise ModelMismatch("the EnCodec checkpoint has no quantizer codebooks")
    embed0 = state["quantizer.vq.layers.0._codebook.embed"]
    lstm = len({m[1] for k in state if (m := re.match(r"encoder\.model\.\d+\.lstm\.weight_ih_l(\d+)$", k))})
    cfg = EncodecConfig(rate=rate, n_filters=int(v0.shape[0]), dimension=int(embed0.shape[1]), lstm=lstm, n_q=n_q,
                        codebook_size=int(embed0.shape[0]))
    ours: dict = {}
    for k, v in state.items():
        if k.startswith("quantizer."):
            m = re.match(r"quantizer\.vq\.layers\.(\d+)\._codebook\.embed$", k)
            if m:
                ours[f"quantizer.embed.{m[1]}"] = v.float()
            continue  # EMA statistics (cluster_size, embed_avg, inited) are training state
        k2 = k.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".convtr.")
        if k2.endswith(".weight_g"):
            continue
        if k2.endswith(".weight_v"):
            g = state[k[: -len("weight_v")] + "weight_g"].float()
            v = v.float()
            norm = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
            ours[k2[: -len("_v")]] = g * v / norm  # torch weight_norm, dim 0
        else:
            ours[k2] = v.float()
    net = EncodecNet(cfg)
    missing = [k for k in net.state_dict() if k not in ours]
    unexpected = [k for k in ours if k not in net.state_dict()]
    if missing or unexpected:
        raise ModelMismatch(f"EnCodec checkpoint layout not recognised: {len(missing)} tensors missing "
                            f"({missing[:1]}), {len(unexpected)} unexpected ({unexpected[:1]})")
    try:
        net.load_state_dict(ours)
    except RuntimeError as e:
        raise ModelMismatch(f"EnCodec checkpoint shapes do not match: {str(e).splitlines()[1].strip()}") from None
    return cfg, ours
