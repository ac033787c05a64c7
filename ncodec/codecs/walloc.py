"""WaLLoC: wavelet packets + linear encoder + mean-scale hyperprior + light decoder (images; 1-D audio net).

Unit payload (one tile of at most ``TILE`` x ``TILE`` pixels, padded by edge replication to a multiple of 32):
    z stream  (ncodec.entropy indexed coding, table = z channel)
    ya stream (low-band slice; table = scale index from the fixed-point hyper-decoder)
    yb stream (other bands; table = scale index from the fixed-point channel context on decoded ya)
Codec params in HEAD: u16 tile size. The rate field holds the quality (0..100) actually used.

Audio: units are segments of ``SEGMENT`` frames; since codec version 2 each codes ``AUDIO_OVERLAP`` extra
frames on both sides and neighbours are cross-faded on decode (``base.crossfade_segments``), so a boundary
does not click and any unit still decodes alone. Version 1 files (no overlap) decode as before.
"""
from __future__ import annotations

import struct
from functools import lru_cache

import numpy as np
import torch

from .. import zoo
from ..container import Header, MediaKind, RateKind, Unit
from ..entropy import TableSet, cross_entropy_bits, decode_indexed, encode_indexed
from ..errors import BadInput, CorruptFile, UnsupportedVersion
from ..registry import register_codec
from .base import Codec, Encoded, Rate, crossfade_segments, image_tiles, pad_to, wavefront_steps
from .walloc_net import FixedPointEntropyNets, WallocConfig, WallocNet

TILE = 1024
SEGMENT = 1 << 16  # audio samples per unit
AUDIO_OVERLAP = 512  # version 2: samples each audio unit carries beyond its core on both sides (cross-faded)
Z_MAX = 1 << 15  # z symbols are clamped here (the escape path codes them exactly)


# ------------------------------------------------------------------------------ causal context model (version 3)
# Models from walloc-image-v3 on carry integer context models for the y (and z) symbols of images: each band is
# predicted from its causal neighbours (the linear predictor removes the spatial correlation the hyperprior leaves
# in the low bands: 0.93 between neighbours of the luma low band) and the residual is coded with one of
# ``NB`` shared tables, chosen by the hyperprior scale index (z: none) and the magnitude of the neighbours'
# residuals.
CM_OFFSETS = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, -2), (-2, 0))  # W NW N NE WW NN: earlier wavefront steps
CM_ENERGY = np.array([2, 2, 2, 2, 1, 1], np.int64)  # weights of |neighbour residual| in the energy E
CM_RES = 63  # residuals -63..63 have their own entry; the last entry (127) escapes to a varint
CM_PRED_BITS = 12  # predictor weights carry 12 fractional bits
CM_BIN_BITS = 4  # u + v carry 4 fractional bits of the table index
CM_PRECISION = 24  # table rows sum to 2**24
S_MAX = 1 << 30  # y symbols are clamped to +-S_MAX (encoder) / decoded values (decoder)
# encoder-side zero zone of y for images (see _quantise): values with |v| < 0.5 + IMAGE_DEADZONE become 0. Kodak
# (every 6th image, qualities 10-90), PSNR at equal rate at 0.41 / 0.63 / 0.92 bpp against a uniform rounding
# offset of 0.05 (itself +0.11 / +0.12 / +0.09 dB over plain rounding): zero zone 0.1 +0.11 / +0.09 / +0.07 dB;
# 0.1 for zeros with offset 0.02 (0.05) elsewhere +0.10 / +0.08 / +0.06 (+0.09 / +0.07 / +0.05). Audio keeps
# plain rounding (not measured there).
IMAGE_DEADZONE = 0.1


def cm_shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """a[..., y + dy, x + dx] with zeros outside the grid (the value of a missing neighbour)."""
    h, w = a.shape[-2:]
    out = np.zeros_like(a)
    ys, yd = slice(max(0, dy), h + min(0, dy)), slice(max(0, -dy), h - max(0, dy))
    xs, xd = slice(max(0, dx), w + min(0, dx)), slice(max(0, -dx), w - max(0, dx))
    out[..., yd, xd] = a[..., ys, xs]
    return out


class ContextModel:
    """Integer causal context model of y (or z) symbols (FORMAT.md section 4, version 3).

    For a stream of bands ``bands`` on an (H, W) grid, coded by wavefront steps over positions (all of a
    position's bands together): ``pred = (sum_k P[c, k] * s[n_k] + 2**11) >> 12`` over the neighbours n_k
    (``CM_OFFSETS``, 0 outside the grid), residual ``r = s - pred``, energy ``E = sum_k CM_ENERGY[k] * |r[n_k]|``,
    ``e`` = the number of thresholds <= E minus one, table ``clip((U[c, t] + V[c, e]) >> 4, 0, NB - 1)`` with t the
    hyperprior scale index. Every quantity is an integer: the tables chosen never depend on float rounding.
    """

    def __init__(self, pred, u, v, thresholds, freqs):
        self.pred, self.u, self.v, self.thresholds = (np.asarray(a, np.int64) for a in (pred, u, v, thresholds))
        freqs = np.asarray(freqs, np.int64)  # (NB, 2 * CM_RES + 2), rows summing to 2**CM_PRECISION
        if (freqs.ndim != 2 or freqs.shape[1] != 2 * CM_RES + 2 or np.any(freqs < 1)
                or np.any(freqs.sum(1) != 1 << CM_PRECISION) or self.thresholds[0] != 0
                or np.any(np.diff(self.thresholds) <= 0) or self.pred.shape[1] != len(CM_OFFSETS)
                or self.v.shape[1] != len(self.thresholds) or not len(self.u) == len(self.pred) == len(self.v)):
            raise ValueError("inconsistent walloc context-model tensors")
        self.rows = freqs.astype(np.float64) / (1 << CM_PRECISION)  # exact: integers times a power of two
        self.log_rows = -np.log2(self.rows)
        self._cdf = None  # the decoder's integer CDFs (lazy_cdf of rows), made on first use

    @classmethod
    def from_tensors(cls, tensors: dict, prefix: str = "cm") -> "ContextModel":
        return cls(*(tensors[f"{prefix}.{k}"].numpy() for k in ("pred", "u", "v", "thresholds", "freqs")))

    def tensors(self, prefix: str = "cm") -> dict:
        """The int32 arrays stored in a model file (``cm.*`` for y, ``cmz.*`` for z)."""
        freqs = np.round(self.rows * (1 << CM_PRECISION)).astype(np.int32)
        return {f"{prefix}.{k}": np.ascontiguousarray(a, dtype=np.int32) for k, a in
                (("pred", self.pred), ("u", self.u), ("v", self.v), ("thresholds", self.thresholds), ("freqs", freqs))}

    @property
    def n_tables(self) -> int:
        return len(self.rows)

    def _predict(self, b: np.ndarray, s_nb: np.ndarray) -> np.ndarray:
        """Prediction from the neighbours' symbols s_nb (6, ...); b indexes the bands, broadcastable to s_nb[0]."""
        acc = sum(self.pred[b, k] * s_nb[k] for k in range(len(CM_OFFSETS)))
        return (acc + (1 << (CM_PRED_BITS - 1))) >> CM_PRED_BITS

    def _energy_bin(self, r_nb: np.ndarray) -> np.ndarray:
        """Energy bin e from the neighbours' residuals r_nb (6, ...)."""
        return np.searchsorted(self.thresholds, np.einsum("k,k...->...", CM_ENERGY, np.abs(r_nb)), side="right") - 1

    def _tables(self, b: np.ndarray, t: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Table index from scale indices t and energy bins e; b indexes the bands, broadcastable to t."""
        return np.clip((self.u[b, t] + self.v[b, e]) >> CM_BIN_BITS, 0, self.n_tables - 1)

    def residuals(self, s: np.ndarray, bands: np.ndarray) -> np.ndarray:
        """Whole grid at once (encoder, fitting): symbols (nb, H, W) -> prediction residuals (nb, H, W)."""
        s = s.astype(np.int64)
        return s - self._predict(bands[:, None, None], np.stack([cm_shift(s, dy, dx) for dy, dx in CM_OFFSETS]))

    def energy_bins(self, r: np.ndarray) -> np.ndarray:
        """Whole grid: residuals (nb, H, W) -> energy bin e of every position (from its causal neighbours)."""
        return self._energy_bin(np.stack([cm_shift(r, dy, dx) for dy, dx in CM_OFFSETS]))

    def analyse(self, s: np.ndarray, t: np.ndarray, bands: np.ndarray):
        """Encoder side, whole grid at once: s, t (nb, H, W) ints -> residuals and table indices (H*W, nb) in
        position-major layout (the decoder computes the same integers step by step)."""
        r = self.residuals(s, bands)
        tab = self._tables(bands[:, None, None], t, self.energy_bins(r))
        nb = len(bands)
        return r.reshape(nb, -1).T, tab.reshape(nb, -1).T

    @property
    def cdf(self) -> np.ndarray:
        """The integer CDFs constriction derives from ``rows`` (``range_coder.lazy_cdf``), made on first use."""
        if self._cdf is None:
            from ..entropy.range_coder import lazy_cdf

            self._cdf = lazy_cdf(self.rows)
        return self._cdf

    def _code(self, encode: bool, sv: np.ndarray, words: np.ndarray, escapes: np.ndarray, t: np.ndarray,
              bands: np.ndarray) -> tuple[int, int, float]:
        """Run the compiled loop (``walloc_kernel.code_context``) over a stream of bands ``bands`` with scale
        indices t (nb, H, W); returns (words written, escapes written or used, model bits)."""
        from . import walloc_kernel

        nb, h, w = t.shape
        tv = np.ascontiguousarray(t.reshape(nb, -1).T, np.int64)
        if tv.size and (tv.min() < 0 or tv.max() >= self.u.shape[1]):
            raise ValueError("scale index outside the context model's range")  # computed by us, never read
        order, nbr = coded_order(h, w)
        n_words, n_esc, bits, status = walloc_kernel.code_context(
            encode, sv, words, escapes, self.cdf, self.log_rows, order, nbr, tv, self.pred[bands], self.u[bands],
            self.v[bands], self.thresholds, CM_ENERGY, CM_RES, CM_PRED_BITS, CM_BIN_BITS, S_MAX)
        if status == walloc_kernel.UNDECODABLE:
            raise CorruptFile("entropy decoding failed (invalid range-coder state); the file is damaged")
        if status == walloc_kernel.TOO_FEW_ESCAPES:
            raise CorruptFile("more escaped residuals than the stream lists; the file is damaged")
        if status == walloc_kernel.UNUSED_ESCAPES:
            raise CorruptFile("unused escaped residuals; the file is damaged")
        return n_words, n_esc, bits

    def encode(self, s: np.ndarray, t: np.ndarray, bands: np.ndarray) -> bytes:
        """Code symbols s (nb, H, W) with scale indices t (nb, H, W): ``escapes words`` (see FORMAT.md). The
        words are constriction's range code with ``Categorical(rows[k], perfect=False)`` per symbol (the same
        words, tested), written by the compiled loop."""
        from ..entropy.coding import _words_to_bytes, _zigzag, write_varint

        nb, n = len(s), s[0].size
        sv = np.zeros((n + 1, nb), np.int64)
        sv[:-1] = s.reshape(nb, -1).T
        words, escapes = np.empty(n * nb + 3, np.uint64), np.empty(n * nb, np.int64)
        n_words, n_esc, _ = self._code(True, sv, words, escapes, t, bands)
        out = bytearray()
        write_varint(out, n_esc)
        for v in escapes[:n_esc].tolist():
            write_varint(out, _zigzag(v))
        return bytes(out) + _words_to_bytes(words[:n_words].astype(np.uint32))

    def decode(self, data: bytes, pos: int, t: np.ndarray, bands: np.ndarray) -> tuple[np.ndarray, int, float]:
        """Inverse of :meth:`encode`: (symbols (nb, H, W) int64, position after the stream, model bits). The
        compiled loop decodes with the integer CDFs constriction derives from the rows (``range_coder``)."""
        from ..entropy.coding import _bytes_to_words, _unzigzag, read_varint

        nb, h, w = t.shape
        start_pos = pos
        n_esc, pos = read_varint(data, pos)
        if n_esc > nb * h * w:
            raise CorruptFile(f"{n_esc} escapes for {nb * h * w} symbols; the file is damaged")
        escapes = np.zeros(n_esc, np.int64)
        for i in range(n_esc):
            u, pos = read_varint(data, pos)
            v = _unzigzag(u)
            if not CM_RES < abs(v) <= 2 * S_MAX:  # checked before it meets an int64
                raise CorruptFile("escaped residual out of range; the file is damaged")
            escapes[i] = v
        esc_end = pos
        words, pos = _bytes_to_words(data, pos)
        sv = np.zeros((h * w + 1, nb), np.int64)
        _, _, bits = self._code(False, sv, words.astype(np.uint64), escapes, t, bands)
        bits += 8 * (esc_end - start_pos)  # the escape list and its count
        return sv[: h * w].T.reshape(nb, h, w), pos, bits


@lru_cache(maxsize=16)
def coded_order(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The flat positions of an (h, w) grid in coded order (wavefront steps, ``base.wavefront_steps``) and the
    flat indices of every position's ``CM_OFFSETS`` neighbours (6, h * w), ``h * w`` where a neighbour lies
    outside the grid. Cached and shared (read-only arrays)."""
    steps = [y * w + x for y, x in wavefront_steps(h, w)]
    order = np.concatenate(steps).astype(np.int64) if steps else np.zeros(0, np.int64)
    y, x = np.divmod(np.arange(h * w), w)
    nbr = np.stack([np.where((y + dy >= 0) & (x + dx >= 0) & (x + dx < w), (y + dy) * w + x + dx, h * w)
                    for dy, dx in CM_OFFSETS]).astype(np.int64)
    order.setflags(write=False)
    nbr.setflags(write=False)
    return order, nbr


class WallocModel:
    """A loaded WaLLoC model: float nets, integer tables and the fixed-point hyper-decoder."""

    def __init__(self, tensors: dict, cfg: WallocConfig):
        self.cfg = cfg
        self.net = WallocNet(cfg)
        self.net.load_state_dict({k[4:]: v.float() for k, v in tensors.items() if k.startswith("net.")})
        self.net.eval()
        self.fixed = FixedPointEntropyNets(self.net)
        # z is quantised around the per-channel median of its learned density (as compressai does); the offset
        # is stored as an integer in 1/2**A_BITS units. Models exported before it existed use offset 0.
        med = tensors.get("z.median_q")
        self.z_median_q = (med.to(torch.float64) if med is not None else torch.zeros(cfg.z_ch, dtype=torch.float64))
        self.z_median_q = self.z_median_q.reshape((1, -1) + (1,) * cfg.ndim)
        self.z_tables = TableSet.from_arrays(tensors["z.freqs"].numpy(), tensors["z.offsets"].numpy(),
                                             tensors["z.lo"].numpy())
        self.y_tables = TableSet.from_arrays(tensors["y.freqs"].numpy(), tensors["y.offsets"].numpy(),
                                             tensors["y.lo"].numpy())
        # walloc-image-v3 on: y symbols coded with the causal context model (codec version 3)
        self.context = ContextModel.from_tensors(tensors) if "cm.pred" in tensors else None
        # and z with its own (t = 0 for every z symbol), when the model has one
        self.z_context = ContextModel.from_tensors(tensors, "cmz") if "cmz.pred" in tensors else None
        if ((self.context is not None and self.context.u.shape != (cfg.latent, cfg.n_scales))
                or (self.z_context is not None and (self.context is None or self.z_context.u.shape != (cfg.z_ch, 1)))):
            raise ValueError("the walloc context model does not match the network configuration")

    @classmethod
    def from_card(cls, card: zoo.ModelCard) -> "WallocModel":
        return cls(zoo.load_tensors(card), WallocConfig(**card.card["config"]))

    def z_index(self, shape) -> np.ndarray:
        """Table index of each z symbol: its channel."""
        idx = torch.arange(self.cfg.z_ch).reshape((1, -1) + (1,) * self.cfg.ndim)
        return idx.expand(shape).reshape(-1).numpy()

    def rate_index(self, quality: float) -> torch.Tensor:
        return torch.tensor([quality / 100.0 * (self.cfg.n_rates - 1)], dtype=torch.float32)

    # ------------------------------------------------------------------------------------------- one unit
    @torch.no_grad()
    def symbols(self, x: torch.Tensor, quality: float, deadzone: float = 0.0) -> dict:
        """x: (B, C, *L) in [0, 1], lengths multiples of cfg.stride -> the integers a unit codes: z symbols,
        slice A and B symbols and their scale indices (tables of the Gaussian model, contexts of version 3), and
        ``y`` / ``mean`` in latent layout (``synthesis_input`` turns them into what the decoder synthesises)."""
        fx, one = self.fixed, 2**FixedPointEntropyNets.A_BITS
        y = self.net.analysis(x, self.rate_index(quality)).double()
        med = self.z_median_q / one
        z = torch.round(self.net.h_a(y.float()).double() - med).clamp(-Z_MAX, Z_MAX)
        mu, t = fx.hyper(z, self.z_median_q)
        pa, pb = self.net.perm_a, self.net.perm_b
        sym_a = _quantise(y[:, pa] - mu[:, pa] / one, deadzone)
        mu_b, t_b = fx.context(sym_a * one + mu[:, pa], mu[:, pb], t[:, pb])
        sym_b = _quantise(y[:, pb] - mu_b / one, deadzone)
        inv = torch.argsort(torch.cat((pa, pb)))
        return {"z": z.numpy().astype(np.int32), "a": sym_a.numpy().astype(np.int64),
                "ta": fx.scale_index(t[:, pa]).numpy(), "b": sym_b.numpy().astype(np.int64),
                "tb": fx.scale_index(t_b).numpy(),
                # latent layout, as decode_symbols returns them (see synthesis_input)
                "y": torch.cat((sym_a, sym_b), 1)[:, inv], "mean": torch.cat((mu[:, pa], mu_b), 1)[:, inv]}

    @staticmethod
    def synthesis_input(d: dict) -> torch.Tensor:
        """The latent the synthesis decodes, from the ``y`` and ``mean`` of :meth:`symbols` (encoder side, e.g.
        training a decoder) or :meth:`decode_symbols` (decoder): the same float32 values on both sides."""
        return (d["y"] + d["mean"] / 2**FixedPointEntropyNets.A_BITS).float()

    def encode_block(self, x: torch.Tensor, quality: float, deadzone: float = 0.0) -> bytes:
        """x: (B, C, *L) in [0, 1], lengths multiples of cfg.stride (B = 1 for images, channels for audio)."""
        d = self.symbols(x, quality, deadzone)
        if self.z_context is not None:
            z = d["z"][0].astype(np.int64)
            zs = self.z_context.encode(z, np.zeros_like(z), np.arange(self.cfg.z_ch))
        else:
            zs = encode_indexed(d["z"], self.z_index(d["z"].shape), self.z_tables)
        if self.context is not None:
            if x.shape[0] != 1:
                raise ValueError("the context model codes one image at a time")
            cm, pa, pb = self.context, self.net.perm_a.numpy(), self.net.perm_b.numpy()
            return zs + cm.encode(d["a"][0], d["ta"][0], pa) + cm.encode(d["b"][0], d["tb"][0], pb)
        return zs + encode_indexed(d["a"], d["ta"], self.y_tables) + encode_indexed(d["b"], d["tb"], self.y_tables)

    def decode_symbols(self, data: bytes, lengths: tuple[int, ...], batch: int = 1) -> dict:
        """Entropy-decode one unit with integer arithmetic only.

        Returns z symbols, y symbols and the y mean (times 2**8) in latent layout, and ``bits``: the model
        cross-entropy of the coded symbols (escape payloads at their byte size).
        """
        cfg, fx, one = self.cfg, self.fixed, 2**FixedPointEntropyNets.A_BITS
        zshape = (batch, cfg.z_ch) + tuple(n // cfg.stride for n in lengths)
        cm, cmz = self.context, self.z_context
        if cm is not None and batch != 1:
            raise CorruptFile("a context-coded walloc unit holds one image")
        if cmz is not None:
            zs, pos, bits = cmz.decode(data, 0, np.zeros(zshape[1:], np.int64), np.arange(cfg.z_ch))
            zs = np.clip(zs, -Z_MAX, Z_MAX).reshape(zshape)  # the encoder clamps there; only damage goes beyond
        else:
            zs, pos = decode_indexed(data, self.z_index(zshape), self.z_tables)
            bits = cross_entropy_bits(zs, self.z_index(zshape), self.z_tables)
        mu, t = fx.hyper(torch.from_numpy(zs.astype(np.float64)).reshape(zshape), self.z_median_q)
        pa, pb = self.net.perm_a, self.net.perm_b

        def stream(tidx, bands, pos):
            if cm is not None:
                v, pos, b = cm.decode(data, pos, tidx[0].numpy(), bands.numpy())
                return torch.from_numpy(v.astype(np.float64))[None], pos, b
            v, pos = decode_indexed(data, tidx.numpy(), self.y_tables, pos)
            b = cross_entropy_bits(v, tidx.numpy(), self.y_tables)
            return torch.from_numpy(v.astype(np.float64)).reshape(tidx.shape), pos, b

        ya, pos, b_a = stream(fx.scale_index(t[:, pa]), pa, pos)
        mu_b, t_b = fx.context(ya * one + mu[:, pa], mu[:, pb], t[:, pb])
        yb, pos, b_b = stream(fx.scale_index(t_b), pb, pos)
        if pos != len(data):
            raise CorruptFile(f"{len(data) - pos} unexpected bytes at the end of a unit; the file is damaged")
        inv = torch.argsort(torch.cat((pa, pb)))
        return {"z": zs, "y": torch.cat((ya, yb), 1)[:, inv], "mean": torch.cat((mu[:, pa], mu_b), 1)[:, inv],
                "bits": bits + b_a + b_b}

    @torch.no_grad()
    def decode_block(self, data: bytes, lengths: tuple[int, ...], quality: float, batch: int = 1) -> torch.Tensor:
        d = self.decode_symbols(data, lengths, batch)
        return self.net.synthesis(self.synthesis_input(d), self.rate_index(quality)).clamp(0, 1)


@register_codec("walloc")
class WallocCodec(Codec):
    # 2: audio units overlap their neighbours and are cross-faded; 3: images whose model has a causal context
    # model (walloc-image-v3 on) code their y symbols with it (other images and all audio are still written as 2)
    version = 3
    media = ("image", "audio")
    default_quality = 50.0
    quality_search = True  # --bpp / --bitrate: ncodec.api searches the quality on the final file size

    def model(self, media: str, model_id: str | None = None, weights_hash: bytes | None = None) -> WallocModel:
        return self.cached_model(media, model_id, weights_hash, WallocModel.from_card)

    # ----------------------------------------------------------------------------------------- images
    def encode(self, data, media: str, rate: Rate, model: str | None = None, **info) -> Encoded:
        if media == "audio":
            return self._encode_audio(data, rate, model)
        if media != "image":
            raise BadInput(f"the walloc codec codes images and audio, not {media}")
        self.check_rgb(data)
        card = zoo.find(self.codec_id, "image", model)
        model = self.model("image", card.id)
        h, w, _ = data.shape

        def build(quality: float) -> Encoded:
            units = [Unit(key, model.encode_block(x, quality, IMAGE_DEADZONE))
                     for key, x in image_tiles(data, TILE, model.cfg.stride)]
            version = self.version if model.context is not None else 2  # images change in version 3 only
            header = Header(MediaKind.IMAGE, self.codec_id, version, (h, w, 3), card.id, card.hash8,
                            RateKind.QUALITY, float(quality), 8, 2, params=struct.pack("<H", TILE))
            return Encoded(header, units, {"quality": float(quality)})

        if rate.kbps is not None:
            raise BadInput("--bitrate is for audio; use --quality or --bpp for images")
        if rate.bpp is not None:
            raise BadInput("walloc encodes at a quality; ncodec.encode(bpp=...) searches it")
        return build(self._quality(rate))

    def _quality(self, rate: Rate) -> float:
        q = self.default_quality if rate.quality is None else rate.quality
        if not 0 <= q <= 100:
            raise BadInput(f"quality {q} is outside 0..100")
        return float(q)

    def decode(self, header: Header, units: list[Unit]) -> np.ndarray:
        if header.codec_version > self.version:
            raise UnsupportedVersion(f"walloc codec version {header.codec_version} is newer than this ncodec "
                                     f"({self.version}); upgrade ncodec")
        if header.media == MediaKind.AUDIO:
            frames, channels = header.shape
            out = np.zeros((frames, channels), dtype=np.float32)
            for start, block in self.decode_segments(header, units):
                out[start : start + len(block)] = block
            return out
        if header.media != MediaKind.IMAGE:
            raise CorruptFile("walloc file with a non-image media kind")
        model = self.model("image", header.model_id, header.weights_hash)
        if model.context is not None and header.codec_version < 3:
            raise CorruptFile(f"walloc version {header.codec_version} file names {header.model_id}, a model with a "
                              "context model (version 3 on)")
        h, w, c = header.shape
        if c != 3:
            raise CorruptFile(f"walloc image with {c} channels")
        out = np.full((h, w, 3), 128, dtype=np.uint8)
        for unit in units:
            y0, x0, th, tw = unit.key
            if y0 + th > h or x0 + tw > w or th == 0 or tw == 0 or th > TILE or tw > TILE:
                raise CorruptFile(f"tile {unit.key} lies outside the {h}x{w} image")
            if unit.data is None:
                continue  # damaged tile (non-strict read): left grey
            x = model.decode_block(unit.data, _unit_lengths(unit.key, model.cfg.stride), header.rate_value)
            tile = (x[0, :, :th, :tw] * 255.0).round().byte().permute(1, 2, 0).numpy()
            out[y0 : y0 + th, x0 : x0 + tw] = tile
        return out

    # ----------------------------------------------------------------------------------------- audio
    def _encode_audio(self, src, rate: Rate, model_id: str | None = None) -> Encoded:
        """``src``: ncodec.media.audio ArraySource / FileSource. Mono coded as is; stereo as mid and side."""
        if src.channels not in (1, 2):
            raise BadInput(f"walloc audio codes mono or stereo, got {src.channels} channels")
        if not 8000 <= src.rate <= 192000:
            raise BadInput(f"sample rate {src.rate} Hz is outside 8000..192000")
        card = zoo.find(self.codec_id, "audio", model_id)
        model = self.model("audio", card.id)

        def build(quality: float) -> Encoded:
            units = []
            for start in range(0, src.frames, SEGMENT):
                n = min(SEGMENT, src.frames - start)
                pre, post = _overlaps(start, n, src.frames, AUDIO_OVERLAP)
                block = src.read(start - pre, pre + n + post)
                if block.shape[1] == 2:
                    block = np.stack([block.mean(1), (block[:, 0] - block[:, 1]) / 2], 1)
                x = torch.from_numpy(np.ascontiguousarray(block.T))[:, None] * 0.5 + 0.5
                units.append(Unit((start, n, pre, post), model.encode_block(pad_to(x, model.cfg.stride, 1), quality)))
            header = Header(MediaKind.AUDIO, self.codec_id, 2, (src.frames, src.channels), card.id,  # as in v2
                            card.hash8, RateKind.QUALITY, float(quality), 16, 0, src.rate,
                            params=struct.pack("<IBH", SEGMENT, src.channels == 2, AUDIO_OVERLAP))
            return Encoded(header, units, {"quality": float(quality)})

        if rate.bpp is not None:
            raise BadInput("--bpp is for images; use --quality or --bitrate for audio")
        if rate.kbps is not None:
            raise BadInput("walloc encodes at a quality; ncodec.encode(bitrate=...) searches it")
        return build(self._quality(rate))

    def _audio_layout(self, header: Header) -> tuple[int, int]:
        """(segment, overlap) of an audio file; version 1 files have no overlap."""
        try:
            if header.codec_version >= 2:
                seg, _, ov = struct.unpack("<IBH", header.params)
            else:
                (seg, _), ov = struct.unpack("<IB", header.params), 0
        except struct.error:
            raise CorruptFile("walloc audio parameters are malformed") from None
        if seg == 0 or seg > SEGMENT or ov > seg:
            raise CorruptFile(f"walloc audio segment {seg} / overlap {ov} is out of range")
        return seg, ov

    def _checked_span(self, header: Header, unit: Unit, seg: int, ov: int) -> tuple[int, int, int, int]:
        frames = header.shape[0]
        start, n, pre, post = unit.key
        if n == 0 or n > seg or start + n > frames or (pre, post) != _overlaps(start, n, frames, ov):
            raise CorruptFile(f"segment {unit.key} does not fit the {frames}-frame signal")
        return start, n, pre, post

    def units_for_range(self, header: Header, units: list[Unit], start: int, stop: int) -> list[Unit]:
        """Units needed to decode frames [start, stop) exactly as a full decode would (neighbours within a fade)."""
        return [u for u in units if u.key[0] - u.key[2] < stop and u.key[0] + u.key[1] + u.key[3] > start]

    def decode_segments(self, header: Header, units: list[Unit]):
        """Yield (first frame, float32 block) in time order, cross-faded where units overlap (version 2);
        memory bounded by one segment."""
        model = self.model("audio", header.model_id, header.weights_hash)
        frames, channels = header.shape
        if channels not in (1, 2):
            raise CorruptFile(f"walloc audio with {channels} channels")
        seg, ov = self._audio_layout(header)

        def decoded():
            for unit in sorted(units, key=lambda u: u.key[0]):
                start, n, pre, post = self._checked_span(header, unit, seg, ov)
                span = pre + n + post
                if unit.data is None:  # damaged segment (lenient read): silence
                    sig = np.zeros((span, channels), np.float32)
                else:
                    x = model.decode_block(unit.data, (span + (-span) % model.cfg.stride,), header.rate_value,
                                           batch=channels)
                    sig = ((x[:, 0, :span] - 0.5) * 2).numpy().T
                    if channels == 2:
                        sig = np.stack([sig[:, 0] + sig[:, 1], sig[:, 0] - sig[:, 1]], 1)
                # the last `post + pre(next)` = 2 * post samples are shared with the next unit
                yield start - pre, np.ascontiguousarray(sig, dtype=np.float32), 2 * post

        for first, block in crossfade_segments(decoded()):
            yield first, np.clip(block, -1, 1).astype(np.float32)

    def symbols_digest(self, header: Header, units: list[Unit]) -> str:
        """SHA-256 over every unit's entropy-decoded integers (z, y, fixed-point means): the exact layer."""
        import hashlib

        media = header.media.name.lower()
        model = self.model(media, header.model_id, header.weights_hash)
        h = hashlib.sha256()
        for unit in units:
            if media == "audio":
                n = unit.key[1] + unit.key[2] + unit.key[3]  # core plus the overlaps it carries (version 2)
                d = model.decode_symbols(unit.data, (n + (-n) % model.cfg.stride,), header.shape[1])
            else:
                d = model.decode_symbols(unit.data, _unit_lengths(unit.key, model.cfg.stride))
            for a in (d["z"], d["y"].numpy(), d["mean"].numpy()):
                h.update(np.ascontiguousarray(a, dtype="<i8" if a.dtype.kind in "iu" else "<f8").tobytes())
        return h.hexdigest()


def _quantise(v: torch.Tensor, deadzone: float) -> torch.Tensor:
    """Encoder's y rounding: to nearest, except that |v| < 0.5 + ``deadzone`` gives 0 (zeros are cheap). The
    decoder does not see the choice: any rounding gives a valid file."""
    s = torch.round(v)
    if deadzone:
        s = torch.where(v.abs() < 0.5 + deadzone, torch.zeros_like(s), s)
    return s.clamp(-S_MAX, S_MAX)


def _overlaps(start: int, n: int, frames: int, ov: int) -> tuple[int, int]:
    """Samples an audio unit carries before and after its core [start, start + n): at a boundary b both sides
    carry min(ov, frames - b), so a short last segment shares as much with its neighbour as it has."""
    return min(ov, start, frames - start), min(ov, frames - start - n)


def _unit_lengths(key, stride):
    _, _, th, tw = key
    return (th + (-th) % stride, tw + (-tw) % stride)
