"""Implicit neural video codecs: NeRV (optionally with NeRV++ blocks) and NIRVANA-style group chaining.

Encoding is fitting: a small network maps a frame's time t to the whole frame. Frames are cut into groups
(container units); each group gets its own network, fitted on the CPU (or a GPU when there is one), its weights
quantised per tensor (steps chosen by rate-distortion around ``bits``, ``_Fitter.allocate_steps``; each weight
then rounded up or down as gradient descent on the frames' error chooses, ``_Fitter.learn_rounding``) and
entropy-coded with constriction (Gaussian tables chosen by an integer
index, so the decoder's tables never depend on float noise). Decoding evaluates the network at the wanted t
only, so any frame range decodes without touching the other groups.

Network (``NervConfig``): t -> sin/cos positional encoding (``pe`` levels, base 1.25) -> MLP embedding e ->
low-rank linear map to a (c0, H/32, W/32) grid -> four blocks (3x3 conv, pixel shuffle x2, FiLM from e, GELU)
-> 3x3 conv to 12 channels, pixel shuffle x2 (no layer runs at full resolution) -> sigmoid. NeRV++ blocks add a bilinear-upsampled skip (1x1 conv) around the upsampling and a
depthwise-separable residual conv after it.

``nirvana``: groups of 30 frames (nerv: 60) with widths scaled by sqrt(group / 60), so about as many parameters
per frame as nerv; group k's network starts from group k-1's fitted weights (a third of the steps) and is
coded as the integer residual of its quantised weights against group k-1's, on group k-1's quantisation
steps; every ``intra`` groups one is coded alone, so random access and damage stay bounded. Until stop 35 the
last quarter of each group's steps trained through the quantiser (straight-through), as NIRVANA's
quantisation-aware training; since then its weights are rounded as nerv's (learned rounding after the fit), and it
fits 1350 epochs per intra group instead of 900: 18 % fewer bits at equal PSNR (foreman, docs/results.md). The paper's patch-wise prediction is not done:
frames are predicted whole.

``prune`` (nerv): after 85% of the fitting time the smallest weight-matrix entries (a global magnitude
threshold) are set to zero and the rest fine-tuned with them held at zero, as NeRV prunes before quantising;
the zeros are ordinary integers to the decoder, cheap under the tensor's Gaussian table.

HEAD params: ``PARAMS`` (variant, group frames, pe levels, embed, rank, c0, 4 widths, bits, intra period).
Unit key: (first frame, frames, group index, reference group or 0xFFFF... see FORMAT.md section 9).
Payload: n_tensors:varint, per tensor `step:f32 scale:u8`, then one indexed stream of all weights' integers.
"""
from __future__ import annotations

import contextlib
import math
import os
import struct
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..container import Header, MediaKind, RateKind, Unit
from ..errors import BadInput, CorruptFile, UnsupportedVersion
from ..registry import register_codec
from .base import Codec, Encoded, Rate

PARAMS = struct.Struct("<BHBHBB4HBB")
UP = 32  # total upsampling: four blocks (x2 each) and the pixel-shuffled head (x2)
N_BLOCKS = 4
N_SCALES = 64
SCALE_MIN, SCALE_MAX = 0.05, 2000.0
# nerv and nirvana train the last quarter of a fit through the quantiser when the weights get this many bits or
# fewer (nirvana did at every quality until stop 35). Stop 23-31: 6, so quality < 30 (6 bits) used QAT, which then
# beat fitting, rounding and the small-tensor re-fit (basketballpass 22.49 -> 24.20 dB at 0.0271 -> 0.0275 bpp).
# Since stop 32 (learn_rounding) no quality does: at q5, 6 bits, default budget, QAT 0.0198 bpp / 24.00 dB against
# 0.0238 / 25.31 without it on basketballpass, and on foreman (60 frames, the bench) 0.0195 / 26.38 against 0.0188 /
# 27.15; nirvana likewise since stop 35 (docs/results/nirvana-rounding).
QAT_BITS = 5
# share of a group's time budget kept for the rate-distortion choice of the quantisation steps (allocate_steps)
ALLOC_SHARE = 0.06
ALLOC_FRAMES = 24  # frames whose error the step choice measures (evenly spaced over the group)
# without QAT: after the steps are chosen, every weight goes to the integer below or above it as learned on the
# frames (AdaRound-style, learn_rounding) for ROUND_SHARE of the group's budget; Adam at ROUND_LR, regulariser
# weight ROUND_BETA (chosen on basketballpass q30: lr 3e-3 / 1e-2 / 3e-2 / 1e-1 / 2e-1 gave 27.43 / 27.64 / 27.76 /
# 27.84 / 27.86 dB after 24 s, beta 0.1 / 1 / 10 at lr 1e-2 27.51 / 27.64 / 27.68; plain rounding 26.93, float 28.11)
ROUND_SHARE = 0.08
ROUND_LR, ROUND_BETA = 0.1, 1.0
FIT_BATCH = 4  # frames per fitting step
# Adam's peak learning rate of warm-started (nirvana inter) groups: lower than intra groups' (``fit_lr``), for
# smaller residuals to code
INTER_LR = 2e-3


@dataclass(frozen=True)
class NervConfig:
    height: int
    width: int
    plus: bool = False  # NeRV++ blocks
    group: int = 60  # frames per group (unit)
    pe: int = 16
    embed: int = 64
    rank: int = 16
    c0: int = 16
    widths: tuple = (24, 24, 18, 12)
    bits: int = 8
    intra: int = 1  # nirvana: every intra-th group is coded alone (1: every group, plain NeRV)

    @property
    def grid(self) -> tuple[int, int]:
        return -(-self.height // UP), -(-self.width // UP)

    def pack(self) -> bytes:
        return PARAMS.pack(int(self.plus), self.group, self.pe, self.embed, self.rank, self.c0, *self.widths,
                           self.bits, self.intra)

    @classmethod
    def unpack(cls, params: bytes, height: int, width: int) -> "NervConfig":
        try:
            plus, group, pe, embed, rank, c0, *rest = PARAMS.unpack(params)
        except struct.error:
            raise CorruptFile("nerv parameters are malformed") from None
        widths, bits, intra = tuple(rest[:N_BLOCKS]), rest[N_BLOCKS], rest[N_BLOCKS + 1]
        cfg = cls(height, width, bool(plus), group, pe, embed, rank, c0, widths, bits, intra)
        if not (1 <= group <= 4096 and 1 <= pe <= 32 and 1 <= embed <= 1024 and 1 <= rank <= 256
                and 1 <= c0 <= 256 and all(1 <= w <= 512 for w in widths) and 2 <= bits <= 16 and intra >= 1
                and plus in (0, 1)):
            raise CorruptFile("nerv parameters are out of range")
        return cfg


def _shuffle2(x):
    """= torch.nn.functional.pixel_shuffle(x, 2) as a reshape, a permute and one copy: the same numbers, forward +
    backward 2-3x faster than torch's kernel on this CPU, where that kernel took a quarter of a fitting step
    (q30 CIF, batch 4: 22.5 -> 17.4 ms a step)."""
    b, c, h, w = x.shape
    return x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


def _net_class():
    """The torch module, defined on first use so importing this file does not import torch."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, embed, plus):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
            self.film = nn.Linear(embed, 2 * cout)
            self.plus = plus
            if plus:
                self.skip = nn.Conv2d(cin, cout, 1)
                self.dw = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
                self.pw = nn.Conv2d(cout, cout, 1)

        def forward(self, x, e):
            y = _shuffle2(self.conv(x))
            g, b = self.film(e)[:, :, None, None].chunk(2, 1)
            y = F.gelu(y * (1 + g) + b)
            if self.plus:
                y = y + self.skip(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
                y = y + self.pw(F.gelu(self.dw(y)))
            return y

    class NervNet(nn.Module):
        def __init__(self, cfg: NervConfig):
            super().__init__()
            self.cfg = cfg
            self.mlp = nn.Sequential(nn.Linear(2 * cfg.pe, cfg.embed), nn.GELU(), nn.Linear(cfg.embed, cfg.embed),
                                     nn.GELU())
            gh, gw = cfg.grid
            self.down = nn.Linear(cfg.embed, cfg.rank)
            self.grid = nn.Linear(cfg.rank, cfg.c0 * gh * gw)
            chans = (cfg.c0,) + tuple(cfg.widths)
            self.blocks = nn.ModuleList([Block(chans[i], chans[i + 1], cfg.embed, cfg.plus) for i in range(N_BLOCKS)])
            self.head = nn.Conv2d(chans[-1], 12, 3, padding=1)  # 3 colours x 2x2, pixel-shuffled to full size
            freqs = math.pi * 1.25 ** torch.arange(cfg.pe, dtype=torch.float32)
            self.register_buffer("freqs", freqs, persistent=False)

        def forward(self, t):
            """t: (B,) in [0, 1] -> (B, 3, H, W) in [0, 1]."""
            cfg = self.cfg
            a = t[:, None] * self.freqs
            e = self.mlp(torch.cat([torch.sin(a), torch.cos(a)], 1))
            gh, gw = cfg.grid
            x = self.grid(F.gelu(self.down(e))).view(-1, cfg.c0, gh, gw)
            for blk in self.blocks:
                x = blk(x, e)
            # the head's output + 0.5 without the sigmoid (stop 37) fitted 0.6-1.1 dB better on basketballpass and
            # 0.6-0.8 dB worse on foreman and bikes: docs/results/nerv-linear
            return torch.sigmoid(_shuffle2(self.head(x)))[:, :, : cfg.height, : cfg.width]

    return NervNet


def _scales(n: int) -> np.ndarray:
    return SCALE_MIN * (SCALE_MAX / SCALE_MIN) ** (np.arange(n) / (n - 1))


def _tables(version: int = 2):
    """The weight tables. Version 1: 64 zero-mean Gaussians (table = scale index). Version 2: 256 tables,
    index z * 64 + s: a spike at 0 of mass ZERO_MASS[z] mixed with the Gaussian of scale s of 64 (those of version 1), so pruned
    (sparse) tensors and near-constant ones are coded at their real cost."""
    from ..entropy import gaussian_tables, quantize_pmf
    from ..entropy.tables import TableSet

    if version not in _TABLES:
        if version == 1:
            _TABLES[1] = gaussian_tables(_scales(N_SCALES))
        else:
            base = gaussian_tables(_scales(N_SCALES_V2))
            tables, lo = [], []
            for z in ZERO_MASS:
                for i in range(N_SCALES_V2):
                    t = base.table(i).astype(np.int64)
                    if z:
                        pmf = t / t.sum() * (1 - z)
                        pmf[-int(base.lo[i])] += z  # symbol 0 sits at position -lo
                        t = quantize_pmf(pmf)
                    tables.append(t)  # z = 0: exactly the version 1 Gaussian
                    lo.append(int(base.lo[i]))
            _TABLES[2] = TableSet.from_tables(tables, lo)
    return _TABLES[version]


_TABLES: dict = {}
N_SCALES_V2 = 64
ZERO_MASS = (0.0, 0.4, 0.65, 0.85)
ESCAPE_BITS = 24  # rough cost of an escaped value, for the table choice only


def _scale_index(ints: np.ndarray) -> int:
    """Version 1 table for a tensor's integers: nearest scale to their RMS."""
    rms = math.sqrt(float(np.mean(ints.astype(np.float64) ** 2))) if ints.size else 0.0
    if rms <= SCALE_MIN:
        return 0
    return min(N_SCALES - 1, int(round(math.log(rms / SCALE_MIN) / math.log(SCALE_MAX / SCALE_MIN) * (N_SCALES - 1))))


def _best_table(ints: np.ndarray) -> int:
    """Version 2: the table with the fewest bits for these integers (an encoder choice, written in the file)."""
    return _table_cost(ints)[0]


def _table_cost(ints: np.ndarray) -> tuple[int, float]:
    """(version 2 table with the fewest bits for these integers, those bits: escapes estimated)."""
    tables = _tables(2)
    vals, counts = np.unique(ints.reshape(-1), return_counts=True)
    best, best_bits = 0, math.inf
    for k in range(len(tables)):
        t = tables.table(k).astype(np.float64)
        logp = np.log2(t / t.sum())
        pos = vals - int(tables.lo[k])
        inside = (pos >= 0) & (pos < len(t) - 1)
        bits = -(counts[inside] * logp[pos[inside]]).sum() + counts[~inside].sum() * (ESCAPE_BITS - logp[-1])
        if bits < best_bits:
            best, best_bits = k, bits
    return best, float(best_bits)


def _times(first: int, n: int, cfg: NervConfig):
    """t of frames first..first+n-1 inside their group (group-relative, in [0, 1])."""
    import torch

    span = max(cfg.group - 1, 1)
    return torch.arange(first, first + n, dtype=torch.float32) / span


def pack_weights(ints: list[np.ndarray], steps: list[float], version: int = 2) -> bytes:
    from ..entropy import encode_indexed
    from ..entropy.coding import write_varint

    out = bytearray()
    write_varint(out, len(ints))
    idx = []
    for q, s in zip(ints, steps):
        k = _best_table(q) if version >= 2 else _scale_index(q)
        out += struct.pack("<fB", s, k)
        idx.append(np.full(q.size, k, np.int64))
    flat = np.concatenate([q.reshape(-1) for q in ints]).astype(np.int32)
    return bytes(out) + encode_indexed(flat, np.concatenate(idx), _tables(version))


def unpack_weights(data: bytes, shapes: list[tuple], version: int = 2) -> tuple[list[np.ndarray], list[float]]:
    from ..entropy import decode_indexed
    from ..entropy.coding import read_varint

    try:
        n, pos = read_varint(data, 0)
        if n != len(shapes):
            raise CorruptFile(f"unit holds {n} tensors, the configuration needs {len(shapes)}")
        steps, idx = [], []
        for shp in shapes:
            s, k = struct.unpack_from("<fB", data, pos)
            pos += 5
            if not (math.isfinite(s) and s > 0) or k >= len(_tables(version)):
                raise CorruptFile("nerv tensor header is out of range")
            steps.append(s)
            idx.append(np.full(math.prod(shp), k, np.int64))
    except (struct.error, IndexError):
        raise CorruptFile("nerv unit is truncated") from None
    flat, _ = decode_indexed(data, np.concatenate(idx), _tables(version), pos)
    out, p = [], 0
    for shp in shapes:
        size = math.prod(shp)
        out.append(flat[p : p + size].reshape(shp))
        p += size
    return out, steps


def _fit_bf16(device: str) -> bool:
    """Whether fitting runs its forward and backward passes in bfloat16 (weights, Adam and the loss stay float32):
    only where the hardware has native bf16 units (CPU AVX512-BF16 / AMX, or a bf16 GPU); elsewhere bf16 is
    emulated and slower. ``NCODEC_FIT_BF16=0`` turns it off. Decoding is always float32. Measured on this 2-core
    Xeon (AMX), q30 on 60 CIF frames: 435 epochs in 120 s against 268 in float32."""
    import torch

    if os.environ.get("NCODEC_FIT_BF16", "1") == "0":
        return False
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported()) and torch.backends.mkldnn.is_available()
    except AttributeError:  # older torch: no query, no bf16 path
        return False


class _Fitter:
    """Fits one group's network; quantisation per tensor (symmetric, ``bits``), QAT at the end at ``QAT_BITS``
    bits or fewer, else learned rounding after the fit."""

    def __init__(self, cfg: NervConfig, device: str):
        import torch

        self.cfg, self.device = cfg, device
        torch.manual_seed(0)
        self.net = _net_class()(cfg).to(device)
        self.bf16 = _fit_bf16(device)

    def _autocast(self):
        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast("cuda" if self.device == "cuda" else "cpu", dtype=torch.bfloat16)

    def names(self):
        return [k for k, _ in self.net.named_parameters()]

    def steps_for(self, bits: int | None = None) -> list[float]:
        """The uniform rule: each tensor's largest weight on the top integer of ``bits`` (default the config's)."""
        top = 2 ** ((bits or self.cfg.bits) - 1) - 1
        return [max(float(p.detach().abs().max()), 1e-8) / top for p in self.net.parameters()]

    def allocate_steps(self, x, t, max_s: float) -> list[float]:
        """Per-tensor steps by rate-distortion: from the uniform rule at the config's bits, each tensor in turn
        tries its step x4, x2 and x0.5 and keeps the change that lowers MSE + lambda * bits, lambda being the
        slope of the uniform rule between bits - 1 and bits + 1 on these frames (x (n, 3, H, W) in [0, 1] at
        times t). Weights feeding few outputs (MLP, FiLM) end coarser, the head and last blocks finer. Stops
        after one pass or ``max_s`` seconds. Measured on 20 foreman frames (q30, 7 bits, 120 s fit): 49.7 kB
        -> 44.7 kB at the same PSNR (31.63 dB); a second pass gained nothing more."""
        import torch

        params = list(self.net.parameters())
        orig = [p.detach().clone() for p in params]  # the float32 weights; MSE below is a float32 decode
        start = time.time()
        if len(t) > ALLOC_FRAMES:  # evenly spaced frames stand for the group: the pass stays well inside max_s
            pick = torch.linspace(0, len(t) - 1, ALLOC_FRAMES).round().long()
            x, t = x[pick], t[pick]

        def tensor_bits(i, step):
            return _table_cost(np.round(orig[i].double().cpu().numpy() / step).astype(np.int64))[1]

        @torch.no_grad()
        def mse(steps):
            for p, o, st in zip(params, orig, steps):
                p.copy_(torch.round(o / st) * st)
            err = sum(float(((self.net(t[i : i + 8]) - x[i : i + 8]) ** 2).sum()) for i in range(0, len(t), 8))
            for p, o in zip(params, orig):
                p.copy_(o)
            return err / x.numel()

        def point(steps):
            return mse(steps), sum(tensor_bits(i, st) for i, st in enumerate(steps))

        lo, hi = point(self.steps_for(self.cfg.bits - 1)), point(self.steps_for(self.cfg.bits + 1))
        lam = max(lo[0] - hi[0], 0.0) / max(hi[1] - lo[1], 1.0)
        steps = self.steps_for()
        bits = [tensor_bits(i, st) for i, st in enumerate(steps)]
        cost = mse(steps) + lam * sum(bits)
        for i in range(len(steps)):
            if time.time() - start > max_s:
                break
            best = None
            for fac in (4.0, 2.0, 0.5):
                trial = steps[:i] + [steps[i] * fac] + steps[i + 1 :]
                b_i = tensor_bits(i, trial[i])
                c = mse(trial) + lam * (sum(bits) - bits[i] + b_i)
                if c < cost and (best is None or c < best[0]):
                    best = (c, trial, b_i)
            if best:
                cost, steps, bits[i] = best
        return steps

    def learn_rounding(self, frames: np.ndarray, steps: list[float], max_s: float, max_iters: int) -> None:
        """Round every weight onto its step, up or down as learned (AdaRound, Nagel et al. 2020, on the whole
        network at once): w = step * (floor(w / step) + h), h = a rectified sigmoid of a free variable started at
        the fractional part, trained on the frames' MSE (batches of FIT_BATCH frames, Adam at ROUND_LR) for
        ``max_s`` seconds or ``max_iters`` steps; from a fifth of the way a regulariser (weight ROUND_BETA, its
        exponent annealed 20 -> 2) pushes each h to 0 or 1. Leaves the network on the chosen integers times their
        steps. Measured on basketballpass (50 frames, q30, 254 s fit, 2 threads; same bytes): float 28.11 dB,
        nearest integers 26.93, the re-fit of the small tensors this replaced 27.34 (24 s) / 27.36 (48 s), this
        27.84 (24 s)."""
        import torch
        import torch.nn.functional as F
        from torch.func import functional_call

        x, t = self.target(frames)
        names = [k for k, _ in self.net.named_parameters()]
        params = list(self.net.parameters())
        floors = [torch.floor(p.detach() / s) for p, s in zip(params, steps)]
        rest = [(p.detach() / s - f).clamp(0.01, 0.99) for p, s, f in zip(params, steps, floors)]
        lo, hi = -0.1, 1.1  # the sigmoid stretched to (lo, hi), then clipped to [0, 1]: h reaches 0 and 1
        free = [torch.nn.Parameter(torch.logit((r - lo) / (hi - lo))) for r in rest]

        def soft(v):
            return (torch.sigmoid(v) * (hi - lo) + lo).clamp(0, 1)

        opt = torch.optim.Adam(free, lr=ROUND_LR)
        gen = torch.Generator().manual_seed(2)
        n_weights = sum(v.numel() for v in free)
        start = time.time()
        for it in range(max_iters):
            frac = max(it / max_iters, (time.time() - start) / max(max_s, 1e-9))
            if frac >= 1:
                break
            b = torch.randperm(len(t), generator=gen)[:FIT_BATCH]
            weights = {k: s * (f + soft(v)) for k, s, f, v in zip(names, steps, floors, free)}
            with self._autocast():
                y = functional_call(self.net, weights, (t[b],))
            loss = F.mse_loss(y.float(), x[b])
            if frac > 0.2:
                power = 20 - 18 * frac
                loss = loss + ROUND_BETA / n_weights * sum(
                    (1 - (2 * soft(v) - 1).abs().pow(power)).sum() for v in free)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for p, s, f, v in zip(params, steps, floors, free):
                p.copy_((f + (soft(v) >= 0.5).to(f.dtype)) * s)
        self._apply_masks()

    qat_steps = None  # the steps QAT trained on, once it started
    masks = None  # pruning: 0/1 masks of the weight matrices, re-applied after every step

    def prune(self, fraction: float) -> None:
        """Zero the smallest ``fraction`` of all weight-matrix entries (global magnitude pruning, as NeRV);
        biases and norms stay. Later fitting keeps them at zero, and zeros cost little in the entropy coder."""
        import torch

        weights = [p for p in self.net.parameters() if p.dim() > 1]
        mags = torch.cat([p.detach().abs().flatten() for p in weights])
        k = int(fraction * mags.numel())
        if k < 1:
            return
        thr = mags.kthvalue(k).values
        self.masks = {id(p): (p.detach().abs() > thr).to(p.dtype) for p in weights}
        self._apply_masks()

    def _apply_masks(self) -> None:
        import torch

        if self.masks:
            with torch.no_grad():
                for p in self.net.parameters():
                    if id(p) in self.masks:
                        p.mul_(self.masks[id(p)])

    def fit(self, frames: np.ndarray, first: int, epochs: int, budget_s: float, lr: float, qat=None,
            progress=None, state=None, save=None):
        """frames (n, H, W, 3) uint8 of this group, frame indices first.. (group-relative). Returns final PSNR."""
        import torch
        import torch.nn.functional as F

        net = self.net
        x, t = self.target(frames, first)
        opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
        start_epoch = 0
        if state is not None:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            start_epoch = state["epoch"]
            self.qat_steps = state.get("qat_steps")
        batch = max(1, min(len(frames), FIT_BATCH))
        t0, last_save = time.time(), time.time()
        gen = torch.Generator().manual_seed(start_epoch)
        psnr = float("nan")
        spent = state.get("spent", 0.0) if state else 0.0  # seconds of fitting before a resume
        for ep in range(start_epoch, epochs):
            # progress = the larger of the epoch and time-budget fractions: the cosine schedule ends (and QAT
            # starts) on time whichever limit comes first
            frac = max(ep / epochs, (spent + time.time() - t0) / budget_s)
            if frac >= 1:
                break
            for g in opt.param_groups:
                g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, (ep + 1) / 5)
            order = torch.randperm(len(frames), generator=gen)
            mse_sum = 0.0
            for i in range(0, len(frames), batch):
                b = order[i : i + batch]
                if qat is not None and self.qat_steps is None and frac >= 0.75:
                    self.qat_steps = (self.allocate_steps(x, t, ALLOC_SHARE * budget_s) if qat == "auto"
                                      else list(qat))
                with self._autocast():
                    if self.qat_steps is not None:
                        y = self._qat_forward(t[b], self.qat_steps)
                    else:
                        y = net(t[b])
                loss = F.mse_loss(y.float(), x[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                self._apply_masks()
                mse_sum += loss.item() * len(b)
            psnr = 10 * math.log10(1 / max(mse_sum / len(frames), 1e-12))
            if ep == start_epoch:  # torch's one-time set-up (first backward pass) is not fitting time
                t0 = time.time()
            if progress:
                progress(ep + 1, epochs, psnr)
            if save and time.time() - last_save > 30:
                save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": ep + 1,
                      "spent": spent + time.time() - t0, "qat_steps": self.qat_steps})
                last_save = time.time()
        return psnr

    def target(self, frames: np.ndarray, first: int = 0):
        """(x (n, 3, H, W) in [0, 1], times t) of a group's frames (group-relative indices from ``first``)."""
        import torch

        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).to(self.device)
        return x, _times(first, len(frames), self.cfg).to(self.device)

    def _qat_forward(self, t, steps):
        """Forward pass with every weight rounded to its step (straight-through gradients)."""
        import torch
        from torch.func import functional_call

        params = {}
        for (name, p), s in zip(self.net.named_parameters(), steps):
            params[name] = p + (torch.round(p / s) * s - p).detach()
        return functional_call(self.net, params, (t,))

    def quantise(self, steps, ref_ints=None) -> list[np.ndarray]:
        """Integers of every parameter on ``steps``; with ``ref_ints``, the residual against them."""
        out = []
        for k, (p, s) in enumerate(zip(self.net.parameters(), steps)):
            q = np.round(p.detach().cpu().double().numpy() / s).astype(np.int64)
            out.append(q - ref_ints[k] if ref_ints is not None else q)
        return out

    def load_ints(self, ints, steps):
        import torch

        with torch.no_grad():
            for p, q, s in zip(self.net.parameters(), ints, steps):
                p.copy_(torch.from_numpy((q.astype(np.float64) * s).astype(np.float32)).reshape(p.shape))


class _Decoder:
    """Dequantised networks per group, built on demand (nirvana: following references)."""

    def __init__(self, header: Header, units: list[Unit]):
        frames, h, w, c = header.shape
        if c != 3:
            raise CorruptFile(f"nerv video with {c} channels")
        self.cfg = NervConfig.unpack(header.params, h, w)
        if not 1 <= header.codec_version <= 2:
            raise UnsupportedVersion(f"nerv codec version {header.codec_version} is not 1 or 2")
        self.version = header.codec_version
        self.units = units
        self.frames = frames
        self.shapes = None
        self.cache: dict[int, tuple] = {}

    def _net(self):
        net = _net_class()(self.cfg)
        net.eval()
        if self.shapes is None:
            self.shapes = [tuple(p.shape) for p in net.parameters()]
        return net

    def ints(self, g: int, depth: int = 0):
        """(integers, steps) of group g's weights (after adding references)."""
        if g in self.cache:
            return self.cache[g]
        if g >= len(self.units) or depth > 4096:
            raise CorruptFile(f"group {g} is missing")
        unit = self.units[g]
        first, n, gi, ref = unit.key
        if gi != g or first != g * self.cfg.group or n < 1 or n > self.cfg.group or first + n > self.frames:
            raise CorruptFile(f"group {unit.key} does not fit the video")
        if unit.data is None:
            raise CorruptFile(f"group {g} is damaged")
        if self.shapes is None:
            self._net()
        ints, steps = unpack_weights(unit.data, self.shapes, self.version)
        if ref:
            if g == 0:
                raise CorruptFile("the first group cannot have a reference")
            prev, steps = self.ints(g - 1, depth + 1)
            ints = [a + b for a, b in zip(ints, prev)]
        self.cache[g] = (ints, steps)
        if len(self.cache) > 8:
            self.cache.pop(next(iter(self.cache)))
        return ints, steps

    def frames_of(self, g: int, a: int, b: int) -> np.ndarray:
        """Frames a..b-1 (absolute indices, inside group g) as uint8 (n, H, W, 3)."""
        import torch

        ints, steps = self.ints(g)
        net = self._net()
        with torch.no_grad():
            for p, q, s in zip(net.parameters(), ints, steps):
                p.copy_(torch.from_numpy((q.astype(np.float64) * s).astype(np.float32)).reshape(p.shape))
            out = []
            t = _times(a - g * self.cfg.group, b - a, self.cfg)
            for i in range(0, len(t), 8):
                y = net(t[i : i + 8])
                out.append((y * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
        return np.concatenate(out)


def _quality_config(q: float, h: int, w: int, plus: bool, group: int, intra: int, scale: float = 1.0,
                    bits: int | None = None) -> NervConfig:
    """Quality 0..100 -> network width and, unless ``bits`` is given, 6..8 bits; ``scale`` multiplies the widths."""
    base = (8 + q / 100 * 40) * scale  # widest block
    widths = tuple(max(4, int(round(base * f))) for f in (1.0, 1.0, 0.75, 0.5))
    if bits is None:
        bits = 6 if q < 30 else 7 if q < 60 else 8
    return NervConfig(h, w, plus, group, 16, 64, 16, max(4, int(round(base / 2))), widths, bits, intra)


def _param_count(cfg: NervConfig) -> int:
    gh, gw = cfg.grid
    chans = (cfg.c0,) + tuple(cfg.widths)
    n = 2 * cfg.pe * cfg.embed + cfg.embed * cfg.embed + 2 * cfg.embed + cfg.embed * cfg.rank + cfg.rank
    n += cfg.rank * cfg.c0 * gh * gw + cfg.c0 * gh * gw
    for i in range(N_BLOCKS):
        n += 9 * chans[i] * chans[i + 1] * 4 + chans[i + 1] * 4 + cfg.embed * 2 * chans[i + 1] + 2 * chans[i + 1]
        if cfg.plus:
            n += chans[i] * chans[i + 1] + chans[i + 1] + 10 * chans[i + 1] + chans[i + 1] ** 2 + chans[i + 1]
    return n + 9 * chans[-1] * 12 + 12


class _NervBase(Codec):
    version = 2  # 2: zero-inflated weight tables chosen by cost (1: Gaussians by RMS; still decoded)
    media = ("video",)
    chained = False  # nirvana
    default_group = 60
    default_intra = 1
    default_epochs = 300
    # bits of the uniform step rule that the step allocation starts from, at every quality (None: 6 / 7 / 8 below
    # q30 / below q60 / from q60, as before stop 33). On basketballpass, per halving of the bytes, one bit less cost
    # 1.3-1.5 dB (nerv, learned rounding; 0.1 from 8 to 7 bits) and 1.05-1.1 dB (nirvana, QAT) where a narrower
    # network cost 1.7-2.75 and 2.0; from 6 to 5 bits 1.9-2.9 (nerv): docs/results/nerv-bits.
    bits = 6
    # Adam's peak learning rate of intra groups. 7.5e-3 from quality 45 (nerv) was tried at stop 36: better on
    # basketballpass at q60 / q100, not on foreman (docs/results/nerv-batch)
    fit_lr = 5e-3

    def encode(self, src, media: str, rate: Rate, progress=None, time_budget: float | None = None,
               checkpoint=None, plus: bool = False, epochs: int | None = None, prune: float = 0.0,
               **info) -> Encoded:
        import torch


        if media != "video":
            raise BadInput(f"the {self.codec_id} codec codes video, not {media}")
        h, w, n = src.height, src.width, src.count
        if h < 8 or w < 8 or h * w > 4096 * 2304:
            raise BadInput(f"frame size {w}x{h} is outside 8x8..4096x2304")
        if rate.kbps is not None:
            raise BadInput("--bitrate is for audio; use --quality or --bpp for video")
        group = min(self.default_group, n)
        if rate.bpp is not None:
            q = self._quality_for_bpp(rate.bpp, h, w, n, plus, group)
        else:
            q = 50.0 if rate.quality is None else float(rate.quality)
        if not 0 <= q <= 100:
            raise BadInput(f"quality {q} is outside 0..100")
        cfg = _quality_config(q, h, w, plus, group, self.default_intra, self.width_scale(group), self.bits)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # default budget: 6 s per CIF frame on this class of machine (issue target: 10 min / 100 CIF frames)
        budget = time_budget if time_budget is not None else 6.0 * n * (h * w) / (352 * 288)
        epochs = self.default_epochs if epochs is None else epochs
        if epochs < 1:
            raise BadInput(f"epochs must be >= 1, got {epochs}")
        if not 0 <= prune < 1:
            raise BadInput(f"prune is a fraction of the weights in 0..0.95, got {prune}")
        if prune and self.chained:
            raise BadInput("pruning is for nerv; nirvana codes weight residuals between groups")
        units, prev = [], None
        ckpt = _Checkpoint(checkpoint, {"codec": self.codec_id, "cfg": asdict(cfg), "frames": n, "shape": [h, w],
                                        "quality": q, "epochs": epochs, "prune": prune}) if checkpoint else None
        n_groups = -(-n // group)
        # each group's share of the budget: its frames, for nirvana weighted 1.6 (intra) / 0.85 (inter), so that
        # the shares add up to the whole budget
        weights = [min(group, n - g * group) * ((1.6 if g % cfg.intra == 0 else 0.85) if self.chained else 1.0)
                   for g in range(n_groups)]
        for gi, (first, frames) in enumerate(src.groups(group)):
            intra = not self.chained or gi % cfg.intra == 0
            done = ckpt.unit(gi) if ckpt else None
            fitter = _Fitter(cfg, device)
            if done is None:
                if prev is not None and self.chained:
                    fitter.net.load_state_dict(prev[0].net.state_dict())
                # intra groups: steps from the weights' ranges when QAT starts (or after fitting, plain NeRV);
                # inter groups: the reference group's steps, so the residual is an integer difference
                # the last quarter of the fit goes through the quantiser only at QAT_BITS bits or fewer (nirvana
                # did at every quality until stop 35; learned rounding now, docs/results/nirvana-rounding)
                qat = ("auto" if intra else prev[2]) if cfg.bits <= QAT_BITS else None
                # group 0 of nirvana takes the full share, later (warm-started) groups a third as many steps
                g_epochs = epochs if intra else max(1, epochs // 3)
                g_budget = budget * weights[gi] / sum(weights)
                state = ckpt.state(gi) if ckpt else None
                report = (lambda e, E, p, gi=gi: progress(gi, n_groups, e, E, p)) if progress else None
                # warm-started groups fine-tune with a lower rate: smaller weight residuals to code
                # pruned: the last 15% fine-tunes the survivors; without QAT, ALLOC_SHARE + ROUND_SHARE is kept for
                # the steps and the learned rounding
                share = (0.85 if prune else 1.0) - (0.0 if qat is not None else ROUND_SHARE if not intra
                                                    else ALLOC_SHARE + ROUND_SHARE)
                fitter.fit(frames, 0, g_epochs, g_budget * share, lr=self.fit_lr if intra else INTER_LR, qat=qat,
                           progress=report, state=state,
                           save=(lambda s, gi=gi: ckpt.save_state(gi, s)) if ckpt else None)
                if prune:
                    fitter.prune(prune)
                    fitter.fit(frames, 0, max(1, g_epochs // 5), g_budget * 0.15, lr=1e-3, progress=report)
                if fitter.qat_steps is not None:
                    steps = fitter.qat_steps
                else:  # the fit left ALLOC_SHARE + ROUND_SHARE of the budget for this (inter groups: the
                    # reference's steps, so the residual is an integer difference; ROUND_SHARE only)
                    steps = (fitter.allocate_steps(*fitter.target(frames), ALLOC_SHARE * g_budget) if intra
                             else prev[2])
                    fitter.learn_rounding(frames, steps, ROUND_SHARE * g_budget,
                                          max(1, g_epochs // 10) * -(-len(frames) // FIT_BATCH))
                ints = fitter.quantise(steps)
                payload_ints = ints if intra else [a - b for a, b in zip(ints, prev[1])]
                data = pack_weights(payload_ints, steps)
                if ckpt:
                    ckpt.save_unit(gi, data)
            else:
                data = done
                shapes = [tuple(p.shape) for p in fitter.net.parameters()]
                payload_ints, steps = unpack_weights(data, shapes)
                ints = payload_ints if intra else [a + b for a, b in zip(payload_ints, prev[1])]
            fitter.load_ints(ints, steps)
            prev = (fitter, ints, steps)
            units.append(Unit((first, len(frames), gi, 0 if intra else 1), data))
        fps = src.fps
        header = Header(MediaKind.VIDEO, self.codec_id, self.version, (n, h, w, 3), "", b"\0" * 8,
                        RateKind.QUALITY, q, 8, 2, fps.numerator, fps.denominator, params=cfg.pack())
        if ckpt:
            ckpt.finish()
        achieved = {"quality": q, "params_per_group": _param_count(cfg)}
        if prune:
            achieved["pruned"] = prune
        return Encoded(header, units, achieved)

    def width_scale(self, group: int) -> float:
        """Width factor of a group's network (nerv: 1; nirvana scales it to its group length)."""
        return 1.0

    def _quality_for_bpp(self, bpp: float, h: int, w: int, n: int, plus: bool, group: int) -> float:
        """Largest quality whose estimated size (parameters x ~bits x 0.75 after entropy coding) fits."""
        if not bpp > 0:
            raise BadInput(f"target bpp must be > 0, got {bpp}")
        best = None
        for q in np.linspace(0, 100, 101):
            cfg = _quality_config(float(q), h, w, plus, group, self.default_intra, self.width_scale(group),
                                  self.bits)
            bits = _param_count(cfg) * cfg.bits * 0.75 * -(-n // group)
            if bits / (h * w * n) <= bpp:
                best = float(q)
        if best is None:
            raise BadInput(f"{bpp} bpp is below the smallest {self.codec_id} network for this video")
        return best

    def decode(self, header: Header, units: list[Unit]) -> np.ndarray:
        frames, h, w, _ = header.shape
        out = np.zeros((frames, h, w, 3), np.uint8)
        for a, block in self.decode_frames(header, units, 0, frames):
            out[a : a + len(block)] = block
        return out

    def decode_frames(self, header: Header, units: list[Unit], a: int, b: int):
        """Yield (first frame, uint8 frames) for frames a..b-1, group by group; only the groups needed run."""
        if header.codec_version > self.version:
            raise UnsupportedVersion(f"{self.codec_id} codec version {header.codec_version} is newer than this "
                                     f"ncodec ({self.version}); upgrade ncodec")
        if header.media != MediaKind.VIDEO:
            raise CorruptFile(f"{self.codec_id} file with a non-video media kind")
        dec = _Decoder(header, units)
        g_size = dec.cfg.group
        if len(units) != -(-header.shape[0] // g_size):
            raise CorruptFile(f"{len(units)} groups for {header.shape[0]} frames of groups of {g_size}")
        for g in range(a // g_size, -(-b // g_size)):
            lo, hi = max(a, g * g_size), min(b, (g + 1) * g_size, header.shape[0])
            if hi > lo:
                yield lo, dec.frames_of(g, lo, hi)

    def symbols_digest(self, header: Header, units: list[Unit]) -> str:
        import hashlib

        dec = _Decoder(header, units)
        hsh = hashlib.sha256()
        for g in range(len(units)):
            ints, steps = dec.ints(g)
            for q in ints:
                hsh.update(np.ascontiguousarray(q, dtype="<i8").tobytes())
            hsh.update(np.asarray(steps, dtype="<f4").tobytes())
        return hsh.hexdigest()


class _Checkpoint:
    """Resumable encode: finished groups' payloads and the running group's fit state in a folder."""

    def __init__(self, folder, signature: dict):
        import json
        from pathlib import Path

        self.dir = Path(folder)
        sig = json.dumps(signature, sort_keys=True)
        meta = self.dir / "encode.json"
        if meta.exists():
            if meta.read_text() != sig:
                raise BadInput(f"checkpoint folder {self.dir} belongs to another encode (other input or settings); "
                               f"delete it or choose another output")
            self.resumed = True
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta.write_text(sig)
            self.resumed = False

    def unit(self, g: int):
        p = self.dir / f"group{g:05d}.bin"
        return p.read_bytes() if p.exists() else None

    def save_unit(self, g: int, data: bytes):
        tmp = self.dir / f"group{g:05d}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.dir / f"group{g:05d}.bin")
        (self.dir / f"group{g:05d}.pt").unlink(missing_ok=True)

    def state(self, g: int):
        import torch

        p = self.dir / f"group{g:05d}.pt"
        return torch.load(p, map_location="cpu", weights_only=True) if p.exists() else None

    def save_state(self, g: int, state: dict):
        import torch

        tmp = self.dir / f"group{g:05d}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.dir / f"group{g:05d}.pt")

    def finish(self):
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


@register_codec("nerv")
class NervCodec(_NervBase):
    chained = False
    default_group = 60
    # the time budget ends the fit: on an idle 2-core machine 300 epochs of q30 on 60 CIF frames took 145 s of the
    # 360 s budget (29.61 dB); 1000 epochs used the budget (363 s) for 30.00 dB at 3 % fewer bits
    default_epochs = 5000


@register_codec("nirvana")
class NirvanaCodec(_NervBase):
    chained = True
    # foreman 60 frames, q30, 2 idle cores (bpp, PSNR, encode s): groups of 10 with nerv's widths, 300 epochs
    # 0.262, 27.71, 61; 900 epochs 0.269, 30.31, 183; 1800 0.281, 30.70, 316. With 900 epochs and widths scaled by
    # sqrt(group / 60) (about as many parameters per frame as nerv): groups of 20 0.075, 27.63, 158; groups of 30
    # 0.059, 27.73, 225 (full widths: 0.110, 29.93, 288). A group's weights cost about its own frames' worth, the
    # residual of the next group still ~70 % of that, so longer groups win.
    default_group = 30
    default_intra = 6
    # with learned rounding (stop 35), basketballpass 50 frames, bytes / dB: q30 900 epochs 36245 / 26.50, 1350
    # 33834 / 26.75, 1800 33134 / 26.43 (the time budget ends it first); q60 900 64362 / 28.40, 1350 70881 / 28.74
    default_epochs = 1350

    def width_scale(self, group: int) -> float:
        return math.sqrt(group / 60)

    @classmethod
    def encoder_settings(cls) -> str:
        # QAT in every group and 900 epochs until stop 35
        return f"{'learned rounding, ' if cls.bits > QAT_BITS else ''}{cls.default_epochs} epochs"
