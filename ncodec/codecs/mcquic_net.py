"""McQuic networks (torch only): wavelet packets + light conv encoder, two-scale multi-codebook residual VQ, decoder.

A CPU-sized take on McQuic (Zhu et al., "Unified Multivariate Gaussian Mixture for Efficient Neural Image
Compression"): the latent is quantised by *several codebooks per position* (``groups`` channel groups, each with a
residual stack of ``stages`` codebooks) at two scales, coarse (1/16) first; the fine latent (1/8) is coded as the
residual after a prediction from the decoded coarse latent (the cascade). Each codeword is a component mean of
the mixture; its probability is an integer frequency table conditioned on the codeword already decoded above it
in the cascade (see ncodec.codecs.mcquic), so decoding needs no float network to pick tables.

Front end and back end follow the WaLLoC lesson (GUIDE §4b): a fixed wavelet packet transform does most of the
work, so a small network converges in CPU hours.

Variable rate: the codebooks form one ordered list (coarse stage 1 groups, coarse stage 2 groups, ..., then
fine); a rate point ``n`` keeps the first ``n``. Training drops trailing codebooks at random (quantiser dropout)
and tells encoder and decoder ``n`` (rate-conditioned FiLM), so one model serves every rate.

Codebooks are online k-means (EMA) seeded from latent vectors, with dead codewords re-seeded during training
(see ncodec.train.mcquic); SimVQ's learned linear map was tried first and diverged once codebooks were seeded
from data (codewords = basis @ W with a large basis: every step of W moved them far). Utilisation is reported
at export.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

from .walloc_net import ResBlock, colour_init
from .wavelets import iwpt, wpt


@dataclass(frozen=True)
class McquicConfig:
    levels: int = 3  # wavelet packet levels: 3 * 4**levels bands at 1/2**levels
    ch: int = 128  # latent channels (both scales)
    width: int = 128  # encoder / decoder width
    n_res: int = 2  # decoder residual blocks
    groups: int = 2  # codebook groups per position (channels split into groups of ch / groups)
    coarse_stages: int = 2  # residual codebooks per group at 1/16
    fine_stages: int = 4  # residual codebooks per group at 1/8
    codebook_size: int = 1024

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def bands(self) -> int:
        return 3 * 4**self.levels

    @property
    def dim(self) -> int:
        return self.ch // self.groups

    @property
    def n_codebooks(self) -> int:
        return self.groups * (self.coarse_stages + self.fine_stages)

    @property
    def n_coarse(self) -> int:
        return self.groups * self.coarse_stages

    @property
    def stride(self) -> int:
        """Image sides must be multiples of this (wavelet levels + one more halving for the coarse scale)."""
        return 2 ** (self.levels + 1)

    def codebook(self, j: int) -> tuple[int, int, int]:
        """(scale 0 coarse / 1 fine, stage, group) of codebook ``j`` in cascade order."""
        scale = int(j >= self.n_coarse)
        k = j - scale * self.n_coarse
        return scale, k // self.groups, k % self.groups


class EmaVQ(nn.Module):
    """A codebook kept as an exponential moving average of the vectors assigned to each codeword (online
    k-means, as VQ-VAE-2 / EnCodec); no gradient reaches it. ``reseed`` replaces dead codewords."""

    def __init__(self, size: int, dim: int, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        self.register_buffer("embed", torch.randn(size, dim) * 0.1)
        self.register_buffer("count", torch.ones(size))
        self.register_buffer("total", self.embed.clone())

    def codebook(self) -> torch.Tensor:
        return self.embed

    @torch.no_grad()
    def reseed(self, rows: torch.Tensor, vectors: torch.Tensor) -> None:
        """Make codewords ``rows`` equal to ``vectors`` (initial seeding from data, or dead codes)."""
        self.embed[rows] = vectors
        self.count[rows] = 1.0
        self.total[rows] = vectors

    def forward(self, z: torch.Tensor):
        """z (N, dim) -> (codewords (N, dim), indices (N,), commitment loss)."""
        idx = nearest(z.detach(), self.embed)
        q = self.embed[idx]
        if self.training:
            with torch.no_grad():
                k = self.embed.shape[0]
                n = torch.bincount(idx, minlength=k).to(z.dtype)
                s = torch.zeros_like(self.total).index_add_(0, idx, z.detach())
                self.count.mul_(self.decay).add_(n, alpha=1 - self.decay)
                self.total.mul_(self.decay).add_(s, alpha=1 - self.decay)
                used = self.count > 1e-3
                self.embed[used] = self.total[used] / self.count[used, None]
        return q, idx, F.mse_loss(z, q.detach())


BEAM_CHUNK = 8192  # vectors per beam-search batch: (chunk x beam x codebook size) floats, 134 MB at 4 x 1024


def nearest(z: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of ``cb`` for each row of ``z`` (squared Euclidean)."""
    d = cb.pow(2).sum(1)[None] - 2 * z @ cb.T
    return d.argmin(1)


def to_vectors(y: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) -> (groups, B*H*W, C/groups)."""
    b, c, h, w = y.shape
    return y.reshape(b, groups, c // groups, h * w).permute(1, 0, 3, 2).reshape(groups, b * h * w, c // groups)


def from_vectors(v: torch.Tensor, shape) -> torch.Tensor:
    b, c, h, w = shape
    g = v.shape[0]
    return v.reshape(g, b, h * w, c // g).permute(1, 0, 3, 2).reshape(b, c, h, w)


class McquicNet(nn.Module):
    def __init__(self, cfg: McquicConfig):
        super().__init__()
        self.cfg = cfg
        c, w, bands = cfg.ch, cfg.width, cfg.bands
        self.colour = nn.Parameter(colour_init(3))
        self.colour_inv = nn.Parameter(torch.linalg.inv(colour_init(3)))
        self.rate_emb = nn.Embedding(cfg.n_codebooks + 1, 4 * w)  # FiLM (scale, shift) for encoder and decoder
        self.enc_in = nn.Conv2d(bands, w, 1)
        self.enc = nn.Sequential(ResBlock(w, 2), nn.Conv2d(w, c, 3, padding=1))
        self.enc_coarse = nn.Sequential(nn.Conv2d(c, w, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(w, c, 3, padding=1))
        self.pred = nn.Sequential(nn.Conv2d(c, 4 * w, 3, padding=1), nn.PixelShuffle(2), nn.GELU(),
                                  nn.Conv2d(w, c, 3, padding=1))
        self.dec_in = nn.Conv2d(c, w, 3, padding=1)
        self.dec = nn.Sequential(nn.GELU(), *[ResBlock(w, 2) for _ in range(cfg.n_res)], nn.Conv2d(w, bands, 3, padding=1))
        self.dec_lin = nn.Conv2d(c, bands, 1)
        self.vq = nn.ModuleList([EmaVQ(cfg.codebook_size, cfg.dim) for _ in range(cfg.n_codebooks)])
        with torch.no_grad():
            self.rate_emb.weight.zero_()
            self.dec[-1].weight.mul_(0.1)

    def _film(self, h: torch.Tensor, n: torch.Tensor, part: int) -> torch.Tensor:
        e = self.rate_emb(n)[:, 2 * part * self.cfg.width : 2 * (part + 1) * self.cfg.width]
        s, b = e.chunk(2, 1)
        return h * (1 + s[:, :, None, None]) + b[:, :, None, None]

    def _mix(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", m, x)

    # ------------------------------------------------------------------------------------------ pieces
    def analysis(self, x: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [0, 1] (sides multiples of cfg.stride), n (B,) active codebooks -> (fine y1, coarse y2)."""
        h = self.enc_in(wpt(self._mix(x - 0.5, self.colour), self.cfg.levels, 2))
        y1 = self.enc(self._film(h, n, 0))
        return y1, self.enc_coarse(y1)

    def synthesis(self, y1_hat: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        h = self.dec(self._film(self.dec_in(y1_hat), n, 1))
        bands = self.dec_lin(y1_hat) + h
        return self._mix(iwpt(bands, self.cfg.levels, 2), self.colour_inv) + 0.5

    def codebooks(self) -> list[torch.Tensor]:
        return [vq.codebook() for vq in self.vq]

    def quantize(self, y: torch.Tensor, first: int, stages: int, n: torch.Tensor, record: dict | None = None):
        """Residual multi-codebook VQ of one scale with codebooks ``first ..``; samples keep codebooks j < n.

        Returns (y_hat with straight-through gradient, vq loss). ``record`` (training) receives, per codebook,
        the vectors it quantised and the indices it chose."""
        g = self.cfg.groups
        r = to_vectors(y, g)
        total = torch.zeros_like(r)
        loss = 0.0
        hw = y.shape[2] * y.shape[3]
        for s in range(stages):
            qs = []
            for k in range(g):
                j = first + s * g + k
                q, i, l = self.vq[j](r[k])
                if record is not None:
                    record[j] = (r[k].detach(), i)
                keep = (n > j).repeat_interleave(hw).to(q.dtype)[:, None]
                qs.append(q * keep)
                loss = loss + l
            q = torch.stack(qs)
            total = total + q
            r = r - q.detach()
        any_on = (n > first).repeat_interleave(hw).to(y.dtype)[None, :, None]
        v = to_vectors(y, g)
        y_hat = from_vectors(total + (v - v.detach()) * any_on, y.shape)
        return y_hat, loss / (stages * g)

    def forward(self, x: torch.Tensor, n: torch.Tensor, quantize: bool = True, record: dict | None = None):
        """Training pass: (reconstruction, vq loss). ``quantize=False``: plain autoencoder (warm-up)."""
        cfg = self.cfg
        y1, y2 = self.analysis(x, n)
        if not quantize:
            return self.synthesis(y1, n), torch.zeros(())
        y2_hat, l2 = self.quantize(y2, 0, cfg.coarse_stages, n, record)
        p1 = self.pred(y2_hat)
        r_hat, l1 = self.quantize(y1 - p1, cfg.n_coarse, cfg.fine_stages, n, record)
        return self.synthesis(p1 + r_hat, n), 0.5 * (l1 + l2)

    # ------------------------------------------------------------------------------------------ inference
    def _codes_of_scale(self, y, first, stages, n, cbs, codes, code_bits, alpha, beam=1):
        g = self.cfg.groups
        b, _, h, w = y.shape
        if beam > 1:
            return self._beam_codes_of_scale(y, first, stages, n, cbs, codes, code_bits, alpha, beam)
        r = to_vectors(y, g)
        total = torch.zeros_like(r)
        for j in range(first, min(n, first + stages * g)):
            k = (j - first) % g
            if code_bits is None or alpha <= 0:
                i = nearest(r[k], cbs[j])
            else:  # entropy-constrained choice: squared error + lambda * code length (bits)
                d = cbs[j].pow(2).sum(1)[None] - 2 * r[k] @ cbs[j].T + r[k].pow(2).sum(1, keepdim=True)
                lam = alpha * d.min(1).values.mean() / math.log2(self.cfg.codebook_size)
                i = (d + lam * code_bits(j, codes, (b, h, w))).argmin(1)
            q = cbs[j][i]
            r[k] -= q
            total[k] += q
            codes.append(i.reshape(b, h, w))
        return from_vectors(total, y.shape)

    def _beam_codes_of_scale(self, y, first, stages, n, cbs, codes, code_bits, alpha, beam, chunk=BEAM_CHUNK):
        """:meth:`_codes_of_scale` by beam search: each group's vectors keep the ``beam`` best partial paths
        through its residual stages by squared error of the path's residual + lambda * the path's bits, instead
        of the best choice stage by stage (``beam=1`` is exactly that greedy choice). Groups go in order, so a
        group's first stage sees its parent's final index; vectors go ``chunk`` at a time (bounded memory; lambda
        is then per chunk, as it is per tile)."""
        g = self.cfg.groups
        b, _, h, w = y.shape
        js = list(range(first, min(n, first + stages * g)))
        slots = list(codes) + [None] * len(js)
        r0 = to_vectors(y, g)
        total = torch.zeros_like(r0)
        for k in range(g):
            mine = js[k::g]
            if not mine:
                continue
            bits0 = code_bits(mine[0], slots, (b, h, w)) if code_bits is not None and alpha > 0 else None
            best = torch.cat([self._beam_paths(r0[k][c : c + chunk], mine, cbs, code_bits, alpha, beam,
                                               None if bits0 is None else bits0[c : c + chunk])
                              for c in range(0, r0.shape[1], chunk)])
            for s, j in enumerate(mine):
                slots[j] = best[:, s].reshape(b, h, w)
                total[k] += cbs[j][best[:, s]]
        codes.extend(slots[len(codes):])
        return from_vectors(total, y.shape)

    def _beam_paths(self, r, mine, cbs, code_bits, alpha, beam, bits0):
        """Beam search of vectors r (N, dim) through codebooks ``mine`` (one group's stages, in order); bits0:
        (N, K) code lengths of the first stage (None: no rate term). Returns the best path's indices (N, stages)."""
        N, dim = r.shape
        res = r[:, None, :]  # (N, P, dim): the residual of each kept path
        rate = torch.zeros(N, 1)  # lambda * bits of each path so far
        paths = torch.zeros(N, 1, 0, dtype=torch.long)
        log2k = math.log2(self.cfg.codebook_size)
        for s, j in enumerate(mine):
            cb = cbs[j]
            P, K = res.shape[1], cb.shape[0]
            flat = res.reshape(N * P, dim)
            cost = torch.addmm(cb.pow(2).sum(1)[None], flat, cb.T, alpha=-2.0)  # + |r|^2: the squared error
            cost.add_((flat.pow(2).sum(1) + rate.expand(N, P).reshape(-1))[:, None])  # after each choice, + rate
            cost = cost.view(N, P, K)
            if bits0 is not None:
                lam = float(alpha * (cost[:, 0].min(1).values - rate[:, 0]).mean() / log2k)  # path 0: its error
                bits = bits0[:, None] if s == 0 else code_bits(j, None, None, paths[..., -1])  # (N, 1 | P, K)
                cost.add_(bits, alpha=lam)
            idx = cost.view(N, P * K).topk(min(beam, P * K), dim=1, largest=False).indices  # sorted: best first
            src, code = idx // K, idx % K
            if bits0 is not None:
                rate = rate.gather(1, src) + lam * bits.reshape(N, -1).gather(1, idx)
            res = res.gather(1, src[..., None].expand(-1, -1, dim)) - cb[code]
            paths = torch.cat([paths.gather(1, src[..., None].expand(-1, -1, s)), code[..., None]], 2)
        return paths[:, 0]

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor, n: int, cbs: torch.Tensor, code_bits=None,
                     alpha: float = 0.0, beam: int = 1) -> list[torch.Tensor]:
        """Indices of codebooks 0 .. n-1 ((B, h, w) each, coarse then fine) for images x; ``cbs`` (N, K, dim).

        Without ``code_bits`` each vector takes its nearest codeword. With it (``code_bits(j, codes so far,
        (B, h, w))`` -> (B*h*w, K) code lengths in bits), the choice minimises squared error + lambda * bits
        (entropy-constrained VQ), lambda = ``alpha`` x the mean nearest-codeword error / log2 K of that codebook
        on this input; later residual stages then quantise what the cheaper choice left."""
        cfg, nn_ = self.cfg, torch.full((x.shape[0],), n, dtype=torch.long)
        y1, y2 = self.analysis(x, nn_)
        codes: list[torch.Tensor] = []
        y2_hat = self._codes_of_scale(y2, 0, cfg.coarse_stages, n, cbs, codes, code_bits, alpha, beam)
        if n > cfg.n_coarse:
            self._codes_of_scale(y1 - self.pred(y2_hat), cfg.n_coarse, cfg.fine_stages, n, cbs, codes, code_bits,
                                 alpha, beam)
        return codes

    @torch.no_grad()
    def decode_codes(self, codes: list[torch.Tensor], fine_shape: tuple[int, int], cbs: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, 8h, 8w) from the indices of codebooks 0 .. len(codes)-1 (fine latent h x w)."""
        y1_hat = self.latent_of_codes(codes, fine_shape, cbs)
        return self.synthesis(y1_hat, torch.full((y1_hat.shape[0],), len(codes), dtype=torch.long)).clamp(0, 1)

    @torch.no_grad()
    def latent_of_codes(self, codes: list[torch.Tensor], fine_shape: tuple[int, int], cbs: torch.Tensor) -> torch.Tensor:
        """The decoded fine latent y1_hat (B, ch, h, w) (the synthesis input) of codebooks 0 .. len(codes)-1."""
        cfg, n = self.cfg, len(codes)
        b, g = codes[0].shape[0], cfg.groups
        lat = []
        for first, (h, w) in ((0, (fine_shape[0] // 2, fine_shape[1] // 2)), (cfg.n_coarse, fine_shape)):
            v = torch.zeros(g, b * h * w, cfg.dim)
            for j in range(first, min(n, first + (cfg.n_codebooks - cfg.n_coarse if first else cfg.n_coarse))):
                v[cfg.codebook(j)[2]] += cbs[j][codes[j].reshape(-1)]
            lat.append(from_vectors(v, (b, cfg.ch, h, w)))
        return self.pred(lat[0]) + lat[1]


# ------------------------------------------------------------------------------------ cascaded code contexts
# Codebook j's indices are coded with a table chosen by the index already decoded at the same place one step up
# the cascade (its *parent*): the previous group of coarse stage 1, the previous stage of the same group, and
# for fine stage 1 the coarse stage-1 index of the same group above it (plus which of the 4 fine positions under
# that coarse one). Parent indices are mapped to ``clusters`` classes by a stored integer table (k-means of the
# parent's codewords), so every table choice is integer arithmetic.

def parent(cfg: McquicConfig, j: int) -> int:
    """Codebook whose index selects codebook j's table, or -1 (the first codebook has one fixed table)."""
    scale, stage, group = cfg.codebook(j)
    if scale == 1 and stage == 0:
        return group  # coarse stage 1, same group
    if stage == 0:
        return j - 1 if group > 0 else -1
    return j - cfg.groups


def n_contexts(cfg: McquicConfig, j: int, clusters: int) -> int:
    p = parent(cfg, j)
    if p < 0:
        return 1
    return clusters * (4 if cfg.codebook(p)[0] != cfg.codebook(j)[0] else 1)


def table_bases(cfg: McquicConfig, clusters: int) -> list[int]:
    """First table of each codebook in the flat table set (plus the total at the end)."""
    out = [0]
    for j in range(cfg.n_codebooks):
        out.append(out[-1] + n_contexts(cfg, j, clusters))
    return out


def context(cfg: McquicConfig, j: int, codes: list, cluster_map, shape: tuple[int, int, int]):
    """Context (0 .. n_contexts-1) of every index of codebook j, from the indices decoded before it.

    ``codes``: the (B, h, w) integer arrays of codebooks 0 .. j-1 (numpy); ``cluster_map``: (n_codebooks,
    codebook_size) ints; ``shape``: (B, H, W) of codebook j's grid. Returns a (B, H, W) numpy int array."""
    import numpy as np

    p = parent(cfg, j)
    if p < 0:
        return np.zeros(shape, np.int64)
    c = np.asarray(cluster_map[p])[codes[p]]
    if cfg.codebook(p)[0] == cfg.codebook(j)[0]:
        return c
    b, h, w = c.shape
    up = np.repeat(np.repeat(c, 2, 1), 2, 2)
    child = (np.arange(2 * h)[:, None] % 2) * 2 + (np.arange(2 * w)[None] % 2)
    return up * 4 + child[None]
