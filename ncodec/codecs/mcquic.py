"""McQuic: multi-codebook residual VQ at two scales with cascaded integer code tables (images).

Networks in :mod:`ncodec.codecs.mcquic_net`. The rate is the number ``n`` of active codebooks (cascade order:
coarse 1/16 stage 1 groups, coarse stage 2 groups, then fine 1/8 stages); ``--quality q`` in 0..100 maps to
``n = 1 + round(q / 100 * (N - 1))`` and ``--bpp`` searches the quality on the final file size.

Unit payload (one tile of at most ``TILE`` x ``TILE`` pixels, padded by edge replication to a multiple of 16):
    the indices of each active codebook j in cascade order, row-major over its scale's latent grid; the static
    table of each index is ``bases[j] + context`` where the context comes from the parent codebook's index at the
    same place (``mcquic_net.context``). Codec version 1: one ncodec.entropy indexed stream per codebook with
    those tables. Version 2 (written now): one range-coded stream per unit whose model mixes each static table
    with the counts of the indices coded so far and first tries the neighbours' indices (``mcquic_kernel``);
    integers only in both.
Codec params in HEAD: u16 tile size, u8 active codebooks n. The rate field holds the quality used.
"""
from __future__ import annotations

import functools
import hashlib
import struct

import numpy as np
import torch

from .. import zoo
from ..container import Header, MediaKind, RateKind, Unit
from ..entropy import TableSet, cross_entropy_bits, decode_indexed, encode_indexed
from ..entropy.coding import _bytes_to_words, _words_to_bytes
from ..errors import BadInput, CorruptFile, ModelMismatch, UnsupportedVersion
from ..registry import register_codec
from .base import Codec, Encoded, Rate, image_tiles
from .mcquic_net import McquicConfig, McquicNet, context, parent, table_bases

TILE = 1024
RD_ALPHA = 0.5  # entropy-constrained index choice (encoder only; see McquicNet.encode_codes)
# paths the encoder's beam search keeps through each group's residual stages (1: the greedy choice stage by stage).
# Kodak images 1, 5, 19, 23 at qualities 27 / 53 / 80 / 100 (bpp, PSNR): greedy 0.2501 / 25.628, 0.6229 / 30.030,
# 0.9151 / 31.783, 1.1111 / 32.473; beam 2 0.2500 / 25.639, 0.6207 / 30.117, 0.9111 / 31.911, 1.1051 / 32.602;
# beam 4 0.2502 / 25.651, 0.6189 / 30.164, 0.9080 / 31.975, 1.1013 / 32.666 (encode ~2.5x slower); beam 8 +0.02 dB
# more at twice beam 4's time. The bitstream does not depend on it.
BEAM = 4
MAX_BEAM = 64
# codec version 2's encoder: a greedy pass first counts the tile's indices, then the beam search prices each index
# with the lengths of the mixture the adaptive coder will use (table and those counts) instead of the table alone,
# so it leans towards the codewords this tile uses anyway. Bitstream unchanged; encoding ~1.3x slower. 8 Kodak
# images at the bench's 9 qualities: BD-rate -3.2 % against pricing with the tables (every image -1.9 to -5.1 %).
ADAPTED_LENGTHS = True


class McquicModel:
    """A loaded McQuic model: float networks, fp16 codebooks (used as float32), integer tables."""

    def __init__(self, tensors: dict, config: dict):
        config = dict(config)
        self.clusters = int(config.pop("clusters"))
        self.cfg = cfg = McquicConfig(**config)
        self.net = McquicNet(cfg)
        state = {k[4:]: v.float() for k, v in tensors.items() if k.startswith("net.")}
        missing, _ = self.net.load_state_dict(state, strict=False)
        if any(not k.startswith("vq.") for k in missing):
            raise ModelMismatch(f"McQuic weights lack {[k for k in missing if not k.startswith('vq.')][:3]}")
        self.net.eval()
        self.cbs = tensors["codebooks"].float()
        if tuple(self.cbs.shape) != (cfg.n_codebooks, cfg.codebook_size, cfg.dim):
            raise ModelMismatch(f"McQuic codebooks have shape {tuple(self.cbs.shape)}, the config needs "
                                f"{(cfg.n_codebooks, cfg.codebook_size, cfg.dim)}")
        self.cluster_map = tensors["clusters"].numpy().astype(np.int64)
        self.bases = table_bases(cfg, self.clusters)
        self.tables = TableSet.from_arrays(tensors["tables.freqs"].numpy(), tensors["tables.offsets"].numpy(),
                                           np.zeros(self.bases[-1], np.int32))
        # code lengths (bits) of every table's K regular entries, for the encoder's rate-aware index choice
        if np.any(np.diff(self.tables.offsets) != cfg.codebook_size + 1):
            raise ModelMismatch(f"McQuic tables must have {cfg.codebook_size} entries plus the escape")
        freqs = self.tables.freqs.astype(np.float64).reshape(-1, cfg.codebook_size + 1)[:, :-1]
        self.code_len = torch.from_numpy(-np.log2(freqs / 2**16)).float()
        self.freqs = self.tables.freqs.astype(np.int64).reshape(-1, cfg.codebook_size + 1)  # version 2's tables
        self.marginal = None
        if "marginal.freqs" in tensors:  # per-codebook tables without context, kept to measure the gain
            m = tensors["marginal.freqs"].numpy()
            self.marginal = TableSet.from_tables(list(m.astype(np.int64)), [0] * len(m))

    @classmethod
    def from_card(cls, card: zoo.ModelCard) -> "McquicModel":
        return cls(zoo.load_tensors(card), card.card["config"])

    def n_of(self, quality: float) -> int:
        return 1 + round(quality / 100.0 * (self.cfg.n_codebooks - 1))

    def table_ids(self, j: int, codes: list[np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
        """Flat table index of every index of codebook j (grid ``shape`` (B, h, w)) given codebooks 0 .. j-1."""
        return self.bases[j] + context(self.cfg, j, codes, self.cluster_map, shape).reshape(-1)

    def code_bits(self, j: int, codes: list, shape: tuple[int, int, int],
                  parent_codes: torch.Tensor | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B*h*w, K) code lengths of codebook j's indices given the indices chosen so far (encoder side; only
        j's parent in ``codes`` is read). ``parent_codes`` (B*h*w, P): candidate parent indices of the same scale
        (the paths of a beam search) instead; then (B*h*w, P, K). ``lengths``: (tables, K) bits to use instead of
        the tables' own (:meth:`adapted_lengths`)."""
        lengths = self.code_len if lengths is None else lengths
        if parent_codes is not None:
            p = parent(self.cfg, j)
            ctx = torch.from_numpy(self.cluster_map[p])[parent_codes]
            return lengths[self.bases[j] + ctx]
        return lengths[torch.from_numpy(self.table_ids(j, [None if c is None else np.asarray(c) for c in codes],
                                                       shape))]

    def adapted_lengths(self, codes: list[np.ndarray]) -> torch.Tensor:
        """(tables, K) code lengths in bits of codebook version 2's mixture ``A * table + 2**16 * count`` with the
        counts of each codebook's ``codes`` over the whole tile (codebooks without codes keep their tables')."""
        from .mcquic_kernel import ADAPT

        K = self.cfg.codebook_size
        out = self.code_len.clone()
        for j, c in enumerate(codes):
            lo, hi = self.bases[j], self.bases[j + 1]
            w = ADAPT * self.freqs[lo:hi, :K].astype(np.float64) + 2.0**16 * np.bincount(c.reshape(-1), minlength=K)
            out[lo:hi] = torch.from_numpy(-np.log2(w / w.sum(1, keepdims=True))).float()
        return out

    def grids(self, lengths: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """(coarse, fine) latent grid of a padded tile."""
        f = (lengths[0] // 2**self.cfg.levels, lengths[1] // 2**self.cfg.levels)
        return (f[0] // 2, f[1] // 2), f

    def grid_of(self, j: int, lengths) -> tuple[int, int]:
        return self.grids(lengths)[self.cfg.codebook(j)[0]]

    # ------------------------------------------------------------------------------------------- one unit
    @torch.no_grad()
    def encode_block(self, x: torch.Tensor, n: int, beam: int = BEAM, version: int = 2) -> bytes:
        """One unit's payload: codec ``version`` 2 (adaptive coding, :mod:`mcquic_kernel`) or 1 (the static
        tables' indexed streams)."""
        bits = self.code_bits
        if version >= 2 and ADAPTED_LENGTHS:
            first = [c.numpy() for c in self.net.encode_codes(x, n, self.cbs, self.code_bits, RD_ALPHA, 1)]
            bits = functools.partial(self.code_bits, lengths=self.adapted_lengths(first))
        codes = [c.numpy() for c in self.net.encode_codes(x, n, self.cbs, bits, RD_ALPHA, beam)]
        if version == 1:
            return b"".join(encode_indexed(c.reshape(-1).astype(np.int32), self.table_ids(j, codes, c.shape),
                                           self.tables) for j, c in enumerate(codes))
        from .mcquic_kernel import encode_unit

        words = encode_unit([(c.reshape(-1), self.table_ids(j, codes, c.shape), c.shape[1], c.shape[2])
                             for j, c in enumerate(codes)], self.freqs)
        return _words_to_bytes(words)

    def decode_codes(self, data: bytes, lengths: tuple[int, int], n: int,
                     version: int = 2) -> tuple[list[np.ndarray], list]:
        """Entropy-decode one unit (integers only): codes per codebook and each stream (symbols, tables)."""
        codes, streams, pos = [], [], 0
        K = self.cfg.codebook_size
        if version >= 2:
            from .mcquic_kernel import OK, Decoder

            words, pos = _bytes_to_words(data, 0)
            dec = Decoder(words, self.freqs)
        for j in range(n):
            shape = (1,) + self.grid_of(j, lengths)
            tidx = self.table_ids(j, codes, shape)
            if version >= 2:
                sym, status = dec.codebook(tidx, shape[1], shape[2])
                if status != OK:
                    raise CorruptFile(f"codebook {j}'s indices cannot be decoded; the file is damaged")
            else:
                sym, pos = decode_indexed(data, tidx, self.tables, pos)
            if sym.size and (sym.min() < 0 or sym.max() >= K):
                raise CorruptFile(f"codebook {j} index {int(sym.max())} is outside 0..{K - 1}; the file is damaged")
            codes.append(sym.astype(np.int64).reshape(shape))
            streams.append((sym, tidx))
        if pos != len(data):
            raise CorruptFile(f"{len(data) - pos} unexpected bytes at the end of a unit; the file is damaged")
        return codes, streams

    @torch.no_grad()
    def decode_block(self, data: bytes, lengths: tuple[int, int], n: int, version: int = 2) -> torch.Tensor:
        codes, _ = self.decode_codes(data, lengths, n, version)
        fine = self.grids(lengths)[1]
        return self.net.decode_codes([torch.from_numpy(c) for c in codes], fine, self.cbs)

    def bits(self, data: bytes, lengths: tuple[int, int], n: int, version: int = 2) -> dict:
        """Model cross-entropy of a unit's indices with the context tables and with per-codebook marginals."""
        codes, streams = self.decode_codes(data, lengths, n, version)
        ctx = sum(cross_entropy_bits(s, t, self.tables) for s, t in streams)
        out = {"context_bits": ctx, "payload_bits": 8 * len(data)}
        if self.marginal is not None:
            out["marginal_bits"] = sum(cross_entropy_bits(s, np.full(len(s), j), self.marginal)
                                       for j, (s, _) in enumerate(streams))
        out["uniform_bits"] = sum(len(s) for s, _ in streams) * float(np.log2(self.cfg.codebook_size))
        return out


@register_codec("mcquic")
class McquicCodec(Codec):
    version = 2
    media = ("image",)
    default_quality = 50.0
    quality_search = True  # --bpp: ncodec.api searches the quality on the final file size

    @classmethod
    def encoder_settings(cls) -> str:
        return f"beam {BEAM}" + (", adapted lengths" if ADAPTED_LENGTHS and cls.version >= 2 else "")

    def model(self, model_id: str | None = None, weights_hash: bytes | None = None) -> McquicModel:
        return self.cached_model("image", model_id, weights_hash, McquicModel.from_card)

    def encode(self, data, media: str, rate: Rate, model: str | None = None, beam: int | None = None,
               **info) -> Encoded:
        """``model``: an installed mcquic model id (default: the newest); ``beam``: paths of the encoder's index
        search (default ``BEAM``; 1 is the fastest, greedy choice)."""
        beam = BEAM if beam is None else beam
        if not isinstance(beam, int) or not 1 <= beam <= MAX_BEAM:
            raise BadInput(f"beam must be an integer in 1..{MAX_BEAM}, got {beam!r}")
        q = self.image_quality(data, media, rate)
        model_id = model
        model = self.model(model_id)
        card = zoo.find(self.codec_id, "image", model_id)
        n = model.n_of(q)
        h, w, _ = data.shape
        units = [Unit(key, model.encode_block(x, n, beam, self.version))
                 for key, x in image_tiles(data, TILE, model.cfg.stride)]
        header = Header(MediaKind.IMAGE, self.codec_id, self.version, (h, w, 3), card.id, card.hash8,
                        RateKind.QUALITY, q, 8, 2, params=struct.pack("<HB", TILE, n))
        return Encoded(header, units, {"quality": q, "codebooks": n})

    def _layout(self, header: Header, model: McquicModel) -> int:
        if header.codec_version > self.version:
            raise UnsupportedVersion(f"mcquic codec version {header.codec_version} is newer than this ncodec "
                                     f"({self.version}); upgrade ncodec")
        if header.media != MediaKind.IMAGE or header.shape[2] != 3:
            raise CorruptFile("mcquic file that is not an RGB image")
        try:
            tile, n = struct.unpack("<HB", header.params)
        except struct.error:
            raise CorruptFile("mcquic parameters are malformed") from None
        if tile != TILE or not 1 <= n <= model.cfg.n_codebooks:
            raise CorruptFile(f"mcquic tile {tile} / codebooks {n} out of range")
        return n

    def _units(self, header: Header, units: list[Unit], model: McquicModel):
        h, w, _ = header.shape
        for unit in units:
            y0, x0, th, tw = unit.key
            if y0 + th > h or x0 + tw > w or th == 0 or tw == 0 or th > TILE or tw > TILE:
                raise CorruptFile(f"tile {unit.key} lies outside the {h}x{w} image")
            s = model.cfg.stride
            yield unit, (th + (-th) % s, tw + (-tw) % s)

    def decode(self, header: Header, units: list[Unit]) -> np.ndarray:
        model = self.model(header.model_id, header.weights_hash)
        n = self._layout(header, model)
        h, w, _ = header.shape
        out = np.full((h, w, 3), 128, dtype=np.uint8)
        for unit, lengths in self._units(header, units, model):
            if unit.data is None:
                continue  # damaged tile (lenient read): left grey
            y0, x0, th, tw = unit.key
            x = model.decode_block(unit.data, lengths, n, header.codec_version)
            out[y0 : y0 + th, x0 : x0 + tw] = (x[0, :, :th, :tw] * 255.0).round().byte().permute(1, 2, 0).numpy()
        return out

    def symbols_digest(self, header: Header, units: list[Unit]) -> str:
        """SHA-256 over every unit's entropy-decoded codebook indices: the exact layer."""
        model = self.model(header.model_id, header.weights_hash)
        n = self._layout(header, model)
        digest = hashlib.sha256()
        for unit, lengths in self._units(header, units, model):
            for c in model.decode_codes(unit.data, lengths, n, header.codec_version)[0]:
                digest.update(np.ascontiguousarray(c, dtype="<i8").tobytes())
        return digest.hexdigest()

    def bits(self, header: Header, units: list[Unit]) -> dict:
        """Summed :meth:`McquicModel.bits` over the units of a file."""
        model = self.model(header.model_id, header.weights_hash)
        n = self._layout(header, model)
        total: dict = {}
        for unit, lengths in self._units(header, units, model):
            for k, v in model.bits(unit.data, lengths, n, header.codec_version).items():
                total[k] = total.get(k, 0) + v
        return total
