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

import numpy as np
import torch

from .. import zoo
from ..container import Header, MediaKind, RateKind, Unit
from ..entropy import TableSet, decode_indexed, encode_indexed
from ..errors import BadInput, CorruptFile, UnsupportedVersion
from ..registry import register_codec
from .base import Codec, Encoded, Rate, crossfade_segments, image_tiles, pad_to
from .walloc_net import FixedPointEntropyNets, WallocConfig, WallocNet

TILE = 1024
SEGMENT = 1 << 16  # audio samples per unit
AUDIO_OVERLAP = 512  # version 2: samples each audio unit carries beyond its core on both sides (cross-faded)
Z_MAX = 1 << 15  # z symbols are clamped here (the escape path codes them exactly)


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
    def encode_block(self, x: torch.Tensor, quality: float) -> bytes:
        """x: (1, C, *L) in [0, 1], lengths multiples of cfg.stride."""
        fx, one = self.fixed, 2**FixedPointEntropyNets.A_BITS
        y = self.net.analysis(x, self.rate_index(quality)).double()
        med = self.z_median_q / one
        z = torch.round(self.net.h_a(y.float()).double() - med).clamp(-Z_MAX, Z_MAX)
        mu, t = fx.hyper(z, self.z_median_q)
        pa, pb = self.net.perm_a, self.net.perm_b
        sym_a = torch.round(y[:, pa] - mu[:, pa] / one).clamp(-(2**30), 2**30)
        mu_b, t_b = fx.context(sym_a * one + mu[:, pa], mu[:, pb], t[:, pb])
        sym_b = torch.round(y[:, pb] - mu_b / one).clamp(-(2**30), 2**30)
        return b"".join([
            encode_indexed(z.numpy().astype(np.int32), self.z_index(z.shape), self.z_tables),
            encode_indexed(sym_a.numpy().astype(np.int32), fx.scale_index(t[:, pa]).numpy(), self.y_tables),
            encode_indexed(sym_b.numpy().astype(np.int32), fx.scale_index(t_b).numpy(), self.y_tables),
        ])

    def decode_symbols(self, data: bytes, lengths: tuple[int, ...], batch: int = 1) -> dict:
        """Entropy-decode one unit with integer arithmetic only.

        Returns z symbols, y symbols and the y mean (times 2**8) in latent layout, and ``streams``: each
        stream's (symbols, table indices, table set), from which the model cross-entropy follows.
        """
        cfg, fx, one = self.cfg, self.fixed, 2**FixedPointEntropyNets.A_BITS
        zshape = (batch, cfg.z_ch) + tuple(n // cfg.stride for n in lengths)
        zs, pos = decode_indexed(data, self.z_index(zshape), self.z_tables)
        mu, t = fx.hyper(torch.from_numpy(zs.astype(np.float64)).reshape(zshape), self.z_median_q)
        pa, pb = self.net.perm_a, self.net.perm_b
        ta = fx.scale_index(t[:, pa])
        ya, pos = decode_indexed(data, ta.numpy(), self.y_tables, pos)
        ya = torch.from_numpy(ya.astype(np.float64)).reshape(ta.shape)
        mu_b, t_b = fx.context(ya * one + mu[:, pa], mu[:, pb], t[:, pb])
        tb = fx.scale_index(t_b)
        yb, pos = decode_indexed(data, tb.numpy(), self.y_tables, pos)
        if pos != len(data):
            raise CorruptFile(f"{len(data) - pos} unexpected bytes at the end of a unit; the file is damaged")
        yb = torch.from_numpy(yb.astype(np.float64)).reshape(tb.shape)
        inv = torch.argsort(torch.cat((pa, pb)))
        streams = [(zs, self.z_index(zshape), self.z_tables), (ya.numpy().astype(np.int32), ta.numpy(), self.y_tables),
                   (yb.numpy().astype(np.int32), tb.numpy(), self.y_tables)]
        return {"z": zs, "y": torch.cat((ya, yb), 1)[:, inv], "mean": torch.cat((mu[:, pa], mu_b), 1)[:, inv],
                "streams": streams}

    @torch.no_grad()
    def decode_block(self, data: bytes, lengths: tuple[int, ...], quality: float, batch: int = 1) -> torch.Tensor:
        d = self.decode_symbols(data, lengths, batch)
        y_hat = (d["y"] + d["mean"] / 2**FixedPointEntropyNets.A_BITS).float()
        return self.net.synthesis(y_hat, self.rate_index(quality)).clamp(0, 1)


@register_codec("walloc")
class WallocCodec(Codec):
    version = 2  # 2: audio units overlap their neighbours and are cross-faded (images as in version 1)
    media = ("image", "audio")
    default_quality = 50.0
    quality_search = True  # --bpp / --bitrate: ncodec.api searches the quality on the final file size

    def model(self, media: str, model_id: str | None = None, weights_hash: bytes | None = None) -> WallocModel:
        return self.cached_model(media, model_id, weights_hash, WallocModel.from_card)

    # ----------------------------------------------------------------------------------------- images
    def encode(self, data, media: str, rate: Rate, **info) -> Encoded:
        if media == "audio":
            return self._encode_audio(data, rate)
        if media != "image":
            raise BadInput(f"the walloc codec codes images and audio, not {media}")
        if data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] != 3:
            raise BadInput(f"walloc needs an 8-bit RGB image, got array {data.shape} {data.dtype}")
        card = zoo.find(self.codec_id, "image")
        model = self.model("image", card.id)
        h, w, _ = data.shape

        def build(quality: float) -> Encoded:
            units = [Unit(key, model.encode_block(x, quality)) for key, x in image_tiles(data, TILE, model.cfg.stride)]
            header = Header(MediaKind.IMAGE, self.codec_id, self.version, (h, w, 3), card.id, card.hash8,
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
    def _encode_audio(self, src, rate: Rate) -> Encoded:
        """``src``: ncodec.media.audio ArraySource / FileSource. Mono coded as is; stereo as mid and side."""
        if src.channels not in (1, 2):
            raise BadInput(f"walloc audio codes mono or stereo, got {src.channels} channels")
        if not 8000 <= src.rate <= 192000:
            raise BadInput(f"sample rate {src.rate} Hz is outside 8000..192000")
        card = zoo.find(self.codec_id, "audio")
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
            header = Header(MediaKind.AUDIO, self.codec_id, self.version, (src.frames, src.channels), card.id,
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


def _overlaps(start: int, n: int, frames: int, ov: int) -> tuple[int, int]:
    """Samples an audio unit carries before and after its core [start, start + n): at a boundary b both sides
    carry min(ov, frames - b), so a short last segment shares as much with its neighbour as it has."""
    return min(ov, start, frames - start), min(ov, frames - start - n)


def _unit_lengths(key, stride):
    _, _, th, tw = key
    return (th + (-th) % stride, tw + (-tw) % stride)
