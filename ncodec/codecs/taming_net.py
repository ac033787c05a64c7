"""The taming-transformers VQGAN (``VQModel``) architecture, for official checkpoints a user converts.

Module names follow the release's state dict (``encoder.down.{i}.block.{j}.norm1``, ``encoder.mid.attn_1.q``,
``decoder.up.{i}.upsample.conv``, ``quant_conv``, ``quantize.embedding`` ...), so a converted checkpoint loads
key for key; the configuration is read off the tensor shapes (:func:`config_from_state`). Images are in
[-1, 1] inside the network. Used by ncodec.codecs.vqgan through the same two calls as our own network:
``encode_indices`` and ``decode_latent``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F



@dataclass(frozen=True)
class TamingConfig:
    ch: int
    ch_mult: list
    num_res_blocks: int
    enc_attn: list  # per encoder level: attention blocks after its residual blocks
    dec_attn: list
    z_channels: int
    double_z: bool
    dim: int  # embed_dim
    codebook_size: int  # n_embed
    in_channels: int = 3
    out_ch: int = 3
    rungs: list | None = None
    arch: str = "taming"

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, c, h * w).transpose(1, 2) for m in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(o.transpose(1, 2).reshape(b, c, h, w))


class _Conv(nn.Module):
    """Holds ``.conv`` as the release's Downsample / Upsample modules do."""

    def __init__(self, c: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c, c, 3, 2 if down else 1, 0 if down else 1)

    def forward(self, x):
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


def _level(cin: int, cout: int, blocks: int, attn: bool, resample: str | None) -> nn.Module:
    m = nn.Module()
    m.block = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout) for j in range(blocks)])
    m.attn = nn.ModuleList([AttnBlock(cout) for _ in range(blocks)] if attn else [])
    if resample == "down":
        m.downsample = _Conv(cout, True)
    elif resample == "up":
        m.upsample = _Conv(cout, False)
    return m


def _run_level(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for j, block in enumerate(m.block):
        h = block(h)
        if len(m.attn):
            h = m.attn[j](h)
    return h


class Encoder(nn.Module):
    def __init__(self, cfg: TamingConfig):
        super().__init__()
        ch, mult, n = cfg.ch, cfg.ch_mult, len(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, 1, 1)
        ins = [ch] + [ch * m for m in mult[:-1]]
        self.down = nn.ModuleList([_level(ins[i], ch * mult[i], cfg.num_res_blocks, cfg.enc_attn[i],
                                          "down" if i < n - 1 else None) for i in range(n)])
        c = ch * mult[-1]
        self.mid, self.norm_out = _Mid(c), _norm(c)
        self.conv_out = nn.Conv2d(c, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for m in self.down:
            h = _run_level(m, h)
            if hasattr(m, "downsample"):
                h = m.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: TamingConfig):
        super().__init__()
        ch, mult, n = cfg.ch, cfg.ch_mult, len(cfg.ch_mult)
        c = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, 1, 1)
        self.mid = _Mid(c)
        ins = [ch * mult[i + 1] if i < n - 1 else c for i in range(n)]  # input channels of level i (run top down)
        self.up = nn.ModuleList([_level(ins[i], ch * mult[i], cfg.num_res_blocks + 1, cfg.dec_attn[i],
                                        "up" if i > 0 else None) for i in range(n)])
        self.norm_out = _norm(ch * mult[0])
        self.conv_out = nn.Conv2d(ch * mult[0], cfg.out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for m in reversed(self.up):
            h = _run_level(m, h)
            if hasattr(m, "upsample"):
                h = m.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class TamingNet(nn.Module):
    """``VQModel`` without its loss: encoder, quant_conv, codebook (``quantize.embedding``), post_quant_conv,
    decoder."""

    def __init__(self, cfg: TamingConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels if cfg.double_z else cfg.z_channels, cfg.dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.dim, cfg.z_channels, 1)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(cfg.codebook_size, cfg.dim)

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] -> latent (B, dim, H/16, W/16) before quantisation."""
        return self.quant_conv(self.encoder(x * 2 - 1))

    def synthesis(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, dim, h, w) -> image in [0, 1] (unclipped)."""
        return (self.decoder(self.post_quant_conv(z)) + 1) / 2

    def decode_latent(self, codebook: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.synthesis(codebook[idx].permute(0, 3, 1, 2))


def config_from_state(state: dict) -> TamingConfig:
    """Read the configuration of a ``VQModel`` state dict off its keys and shapes."""
    from ..errors import BadInput

    try:
        ch, cin = state["encoder.conv_in.weight"].shape[:2]
        levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
        blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
        mult = [state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)]
        z = state["decoder.conv_in.weight"].shape[1]
        n_embed, dim = state["quantize.embedding.weight"].shape
        return TamingConfig(
            ch=int(ch), ch_mult=mult, num_res_blocks=int(blocks),
            enc_attn=[f"encoder.down.{i}.attn.0.q.weight" in state for i in range(levels)],
            dec_attn=[f"decoder.up.{i}.attn.0.q.weight" in state for i in range(levels)],
            z_channels=int(z), double_z=state["encoder.conv_out.weight"].shape[0] == 2 * z, dim=int(dim),
            codebook_size=int(n_embed), in_channels=int(cin), out_ch=int(state["decoder.conv_out.weight"].shape[0]))
    except (KeyError, ValueError, AttributeError) as e:
        raise BadInput(f"not a taming-transformers VQGAN checkpoint (no {e})") from None


def model_state(state: dict) -> dict:
    """The tensors TamingNet holds (drops ``loss.*``: discriminator and LPIPS)."""
    keep = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.embedding.")
    return {k: v for k, v in state.items() if k.startswith(keep)}
