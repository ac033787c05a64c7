"""RVQ audio codec (EnCodec/SoundStream style, optional group-residual VQ), bitrate chosen at encode time.

The model (ncodec.codecs.rvq_net) runs at an internal rate R (16 kHz) with one latent frame per ``hop`` samples;
input at any rate r is resampled to R for coding and back to r on decode, piece by piece (bounded memory).
Stereo is coded as mid and side, the side with half the codebooks (rounded down).

Timeline: the signal has N = ceil(ceil(frames * R / r) / hop) latent frames, cut into segments of S frames.
Unit i covers core frames [a, b) = [i*S, min(N, (i+1)*S)) and carries the codes of frames [a - O', b + O'')
(O' = min(O, a), O'' = min(O, N - b)): the decoded segments overlap by 2*O frames around every boundary and are
cross-faded there (raised cosine), so boundaries are inaudible while every unit still decodes alone.

Unit key: (first original-rate sample of the core, number of core samples, a, b - a). Core boundaries in
original samples are ceil(a * hop * r / R). Payload: one constriction stream (ncodec.entropy indexed coding)
with, channel by channel (mid, side), group by group, level by level, the codes of every carried frame; the
table of level k of group g is entry g * n_q + k of the model's integer code tables (frequencies counted on
the training audio). Version 2 units start with one flag bit per (channel, group, level) row: set where the row is
coded with a uniform table instead (cheaper there), so the codes never cost more than the nominal bitrate.
Version 3 (same bytes as 2; a magnitude-head decoder only): the decoded magnitudes pass a spectral-contrast
postfilter (``rvq_net.postfilter``); Griffin-Lim starts from a phase fixed by the absolute frame index
(``rvq_net.start_phase``), and the frames a unit shares with a neighbour (the cross-fade) take the phase of a
Griffin-Lim run on those frames' codes alone, held through the unit's own run. Both units compute that phase
identically, so the cross-fade joins signals in phase (version 2: unrelated phases, a dip of 1-2 dB and a
colouring every 5 s) while every unit still decodes alone.
Version 4 (written since stop 35): the same codes and decoding, coded with mcquic's adaptive model
(``mcquic_kernel``; FORMAT.md section 8): each row's table mixed with the counts of the codes the row has coded so
far in the unit, the codes one and two frames before tried first. On the eval audio at 6 kbps the codes cost 0.94
(speech) / 0.84 (music) of the nominal bitrate, against 0.996 / 0.972 in version 3.
Version 5 (written since stop 38): the same bytes as 4; Griffin-Lim (the unit's run and the cross-fades' runs)
starts from the phase that phase gradient heap integration (``rvq_kernel.pghi``) finds from the decoded
magnitudes, over PGHI_ITERS iterations (half for the cross-fades' runs) instead of 32 (16) from the frame-indexed
start phase, which only the entries too quiet for the integration keep. On the training clips of
scripts/rvq_steps.py: PESQ-WB 3.084 -> 3.090 at 6 kbps, 2.415 -> 2.516 at 3 kbps, phase reconstruction ~1.7x
faster (docs/results.md, stop 38).
Codec params in HEAD: u16 S, u16 O, u8 mid levels, u8 side levels, u8 stereo.
"""
from __future__ import annotations

import math
import struct

import numpy as np
import torch

from .. import zoo
from ..container import Header, MediaKind, RateKind, Unit
from ..entropy import TableSet, decode_indexed, encode_indexed, quantize_pmf
from ..entropy.coding import _bytes_to_words, _words_to_bytes
from ..errors import BadInput, CorruptFile, ModelMismatch, UnsupportedVersion
from ..registry import register_codec
from .base import Codec, Encoded, Rate, crossfade_segments
from .rvq_net import RvqConfig, RvqNet, griffin_lim, start_phase, stft_frames

SEGMENT = 250  # latent frames per unit (5 s at 50 Hz)
OVERLAP = 3  # extra frames carried on each side of a boundary (cross-fade of 2 * OVERLAP frames, fewer before
# a last unit shorter than OVERLAP)
SHARED_MIN = 16  # codec version 3: latent frames of the run that sets a cross-fade's phase (mirrored codes)
CONTEXT = 12  # frames of audio the encoder sees beyond the carried ones (its receptive field)
PARAMS = struct.Struct("<HHBBB")
# codec version 4: weight of a row's static table against one coded code (mcquic_kernel's A). Eval audio, 30 s
# per file in units of 256 frames, real / nominal bits (version 3: speech 0.996 at 6 kbps, music 0.972): A = 512
# speech 0.943, music 0.838; A = 2048 0.955 / 0.864. Part of the format.
ADAPT = 512
PGHI_ITERS = 12  # codec version 5: Griffin-Lim iterations after the heap-integrated start phase. Part of the format.


class RvqModel:
    def __init__(self, tensors: dict, cfg, arch: str = "rvq"):
        self.cfg = cfg
        if arch == "encodec":  # an official EnCodec checkpoint, converted (ncodec.codecs.encodec_net)
            from .encodec_net import EncodecNet

            self.net = EncodecNet(cfg)
        else:
            self.net = RvqNet(cfg)
        self.net.load_state_dict({k[4:]: v.float() for k, v in tensors.items() if k.startswith("net.")})
        self.net.eval()
        # one table per (group, level): codebook_size codes + the escape entry of ncodec.entropy's tables
        freqs = tensors["codes.freqs"].numpy().reshape(cfg.groups * cfg.n_q, cfg.codebook_size + 1)
        # + one uniform table (log2 K bits a code), index groups * n_q: codec version 2 codes a row of codes with
        # it where the counted table would cost more, so no input costs more than the nominal bitrate
        self.uniform = len(freqs)
        flat = quantize_pmf(np.append(np.ones(cfg.codebook_size), 0.0))
        self.tables = TableSet.from_tables(list(freqs.astype(np.int64)) + [flat], [0] * (len(freqs) + 1))
        self.freqs = np.stack([self.tables.table(i) for i in range(len(freqs) + 1)]).astype(np.int64)
        self.bits = -np.log2(self.freqs / 2.0 ** 16)

    @classmethod
    def from_card(cls, card: zoo.ModelCard) -> "RvqModel":
        arch = card.card.get("arch", "rvq")
        if arch == "encodec":
            from .encodec_net import EncodecConfig

            return cls(zoo.load_tensors(card), EncodecConfig(**card.card["config"]), arch)
        if arch != "rvq":
            raise ModelMismatch(f"model {card.id!r} has architecture {arch!r}, unknown to this ncodec; upgrade ncodec")
        return cls(zoo.load_tensors(card), RvqConfig(**card.card["config"]))

    def table_index(self, levels: int, frames: int, uniform: np.ndarray | None = None) -> np.ndarray:
        """Table of every code of one channel, in payload order (group, level, frame); ``uniform``: one flag
        per (group, level) row, set where the row is coded with the uniform table."""
        g, k = np.meshgrid(np.arange(self.cfg.groups), np.arange(levels), indexing="ij")
        rows = (g * self.cfg.n_q + k).reshape(-1)
        if uniform is not None:
            rows = np.where(uniform, self.uniform, rows)
        return np.repeat(rows, frames)

    def cheaper_uniform(self, codes: np.ndarray, version: int = 4) -> np.ndarray:
        """codes (groups, levels, frames) -> one flag per (group, level) row: True where the uniform table
        codes the row in fewer bits than the row's counted table (version 4: each as the base of the adaptive
        model, the row coded alone)."""
        groups, levels, n = codes.shape
        tables = (np.arange(groups)[:, None] * self.cfg.n_q + np.arange(levels)[None]).reshape(-1)
        rows = codes.reshape(groups * levels, -1)
        if version >= 4:
            from .mcquic_kernel import encode_unit

            def cost(row, t):
                return len(encode_unit([(row, np.full(n, t, np.int64), 1, n)], self.freqs, adapt=ADAPT))

            return np.array([cost(r, self.uniform) < cost(r, t) for r, t in zip(rows, tables)], bool)
        counted = self.bits[tables[:, None], rows].sum(1)
        return (self.bits[self.uniform, rows].sum(1) < counted)

    def encode_rows(self, rows: list[np.ndarray], tables: list[int]) -> bytes:
        """Codec version 4: one adaptive stream (``mcquic_kernel``) of rows of codes, row i over table i."""
        from .mcquic_kernel import encode_unit

        words = encode_unit([(r, np.full(len(r), t, np.int64), 1, len(r)) for r, t in zip(rows, tables)],
                            self.freqs, adapt=ADAPT)
        return _words_to_bytes(words)

    def decode_rows(self, data: bytes, pos: int, tables: np.ndarray, n: int) -> np.ndarray:
        """Codec version 4: the rows of ``n`` codes of :meth:`encode_rows` from ``data[pos:]`` (which they must
        fill exactly), concatenated."""
        from .mcquic_kernel import OK, Decoder

        words, end = _bytes_to_words(data, pos)
        if end != len(data):
            raise CorruptFile(f"{len(data) - end} unexpected bytes at the end of an rvq unit; the file is damaged")
        dec = Decoder(words, self.freqs, ADAPT)
        out = []
        for t in tables:
            sym, status = dec.codebook(np.full(n, t, np.int64), 1, n)
            if status != OK:
                raise CorruptFile("rvq codes cannot be decoded; the file is damaged")
            out.append(sym)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    @torch.no_grad()
    def encode_frames(self, x: np.ndarray, levels: int) -> np.ndarray:
        """x: float32 samples at the internal rate (length a multiple of hop) -> codes (groups, levels, frames)."""
        z = self.net.encoder(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None])
        return self.net.quantizer.encode(z, levels)[0].numpy()

    @property
    def magnitude_head(self) -> bool:
        """Whether the decoder predicts magnitudes only (the phase is reconstructed: rvq-audio-v2)."""
        return getattr(self.cfg, "head", None) == "magnitude"

    @torch.no_grad()
    def decode_frames(self, codes: np.ndarray, phase_of: np.ndarray | None = None, first: int | None = None,
                      shared: tuple = (), pghi: bool = False) -> np.ndarray:
        """codes (groups, levels, frames) -> float32 samples at the internal rate. Magnitude head only:
        ``phase_of``: samples whose phase the output takes (the side channel takes the mid's); ``first``: the
        absolute index of the first latent frame, for codec version 3 (None: version 2): postfilter
        (``rvq_net.postfilter``) and phase reconstruction with ``shared``, the (start, stop) frame ranges
        (relative) that a neighbouring unit decodes too; ``pghi``: codec version 5's start phase (heap integration)
        and PGHI_ITERS iterations."""
        q = self.net.quantizer.decode(torch.from_numpy(codes.astype(np.int64))[None])
        if not self.magnitude_head:
            return self.net.decoder(q)[0, 0].numpy()
        dec = self.net.decoder
        if first is None:  # codec version 2
            return dec(q, None if phase_of is None else torch.from_numpy(phase_of)[None])[0, 0].numpy()
        if phase_of is not None:
            return griffin_lim(dec.magnitudes(q, post=True), self.cfg.n_fft, self.cfg.step, dec.window, 0,
                               torch.from_numpy(phase_of)[None])[0, 0].numpy()
        return self._phase_v3(codes, dec.magnitudes(q, post=True), first, shared, pghi)

    def _phase_v3(self, codes: np.ndarray, mag: torch.Tensor, first: int, shared: tuple,
                  pghi: bool = False) -> np.ndarray:
        """Codec version 3's Griffin-Lim: start phase by absolute frame; the ``shared`` frames hold a phase that
        the neighbouring unit computes identically (from those frames' codes alone, half the iterations).
        ``pghi`` (version 5): every run starts from the heap-integrated phase of its magnitudes (the frame-indexed
        phase kept only where they are too quiet), with PGHI_ITERS iterations."""
        cfg, dec = self.cfg, self.net.decoder
        per = cfg.hop // cfg.step  # STFT frames per latent frame
        iters = PGHI_ITERS if pghi else cfg.gl_iters

        def gl(m, phase, iters, hold=None):
            if pghi:
                from .rvq_kernel import pghi as integrate

                phase = torch.from_numpy(integrate(m[0].numpy(), cfg.step, cfg.n_fft, phase.numpy()))
            return griffin_lim(m, cfg.n_fft, cfg.step, dec.window, iters, phase=phase, hold=hold)

        bins = mag.shape[2]
        mask = torch.zeros(mag.shape[1], dtype=torch.bool)
        held = torch.zeros(mag.shape[1:])
        for a, b in shared:  # a neighbour decodes these frames too: both take the phase of a run on their codes alone
            # mirrored to SHARED_MIN frames: on shorter inputs the decoder's matrix products came out differently
            # under 1 and 2 threads here (~1e-6), which Griffin-Lim grew to several 16-bit levels
            left = max(0, SHARED_MIN - (b - a)) // 2
            right = max(0, SHARED_MIN - (b - a) - left)
            part = np.pad(codes[..., a:b], ((0, 0), (0, 0), (left, right)), mode="symmetric")
            mags = dec.magnitudes(self.net.quantizer.decode(torch.from_numpy(part[None].astype(np.int64))), post=True)
            y = gl(mags, start_phase((first + a - left) * per, mags.shape[1], bins), iters // 2)[:, 0]
            phase = torch.angle(stft_frames(y, cfg.n_fft, cfg.step, dec.window))[0]
            mask[a * per : b * per] = True
            held[a * per : b * per] = phase[left * per : (left + b - a) * per]
        start = start_phase(first * per, mag.shape[1], bins)
        return gl(mag, start, iters, (mask, held) if shared else None)[0, 0].numpy()

    def decode_channels(self, codes: list, samples: int, first: int | None = None, shared: tuple = (),
                        pghi: bool = False) -> np.ndarray:
        """Codes of each channel (mid, side; None = not coded) -> float32 (samples, channels); ``first``,
        ``shared``, ``pghi``: see :meth:`decode_frames` (the side channel takes the mid's phase)."""
        out = []
        for c in codes:
            if c is None:
                out.append(np.zeros(samples, np.float32))
            elif out and self.magnitude_head:
                out.append(self.decode_frames(c, phase_of=out[0], first=first))
            else:
                out.append(self.decode_frames(c, first=first, shared=shared, pghi=pghi))
        return np.stack(out, 1)


# ------------------------------------------------------------------------------------------ resampling
def _ratio(src: int, dst: int) -> tuple[int, int]:
    g = math.gcd(src, dst)
    return dst // g, src // g  # up, down


def resample_range(get, k0: int, k1: int, up: int, down: int) -> np.ndarray:
    """Output samples [k0, k1) of the signal ``get(p0, p1)`` (input samples, zeros outside the signal) resampled by
    up/down with scipy's polyphase filter, computed from a window with enough margin that the result does not
    depend on where the window starts (so pieces computed separately join up)."""
    from scipy.signal import resample_poly

    if up == down:
        return get(k0, k1)
    margin = 10 * max(up, down) // up + 16  # resample_poly's filter half-length, in input samples, plus slack
    p0 = ((k0 * down) // up - margin) // down * down
    p1 = -(-k1 * down // up) + margin
    y = resample_poly(get(p0, p1), up, down, axis=0)
    off = p0 * up // down
    return y[k0 - off : k1 - off].astype(np.float32)


def _padded_reader(read, total: int, channels: int):
    """get(p0, p1) over a reader of [0, total), zeros outside."""

    def get(p0: int, p1: int) -> np.ndarray:
        out = np.zeros((p1 - p0, channels), np.float32)
        lo, hi = max(p0, 0), min(p1, total)
        if hi > lo:
            out[lo - p0 : hi - p0] = read(lo, hi - lo)
        return out

    return get


class _Stream:
    """Contiguous internal-rate blocks in, original-rate blocks out (streaming resampler)."""

    def __init__(self, up: int, down: int, channels: int, frames: int):
        self.up, self.down, self.channels, self.frames = up, down, channels, frames
        self.buf = np.zeros((0, channels), np.float32)
        self.start = None  # internal index of buf[0]
        self.next_k = None  # next original-rate sample to emit
        self.margin = 10 * max(up, down) // up + 16 + down

    def _get(self, p0, p1):
        out = np.zeros((p1 - p0, self.channels), np.float32)
        lo, hi = max(p0, self.start), min(p1, self.start + len(self.buf))
        if hi > lo:
            out[lo - p0 : hi - p0] = self.buf[lo - self.start : hi - self.start]
        return out

    def push(self, first: int, block: np.ndarray, last: bool = False):
        """Append internal samples starting at ``first``; yield (first original sample, block) now computable."""
        if self.start is None:
            self.start, self.next_k = first, -(-first * self.up // self.down)
        elif first != self.start + len(self.buf):
            raise CorruptFile("audio segments do not join up")
        self.buf = np.concatenate([self.buf, block]) if len(self.buf) else block
        end = self.start + len(self.buf)
        if last:
            k_end = -(-end * self.up // self.down)
        else:
            k_end = max(self.next_k, (end - self.margin) * self.up // self.down)
        k_end = min(k_end, self.frames)
        if k_end > self.next_k:
            yield self.next_k, resample_range(self._get, self.next_k, k_end, self.up, self.down)
            self.next_k = k_end
            keep = max(0, (k_end * self.down) // self.up - self.margin - self.start)
            self.buf, self.start = self.buf[keep:], self.start + keep


@register_codec("rvq")
class RvqCodec(Codec):
    # 2: each unit starts with the uniform-table flags of its rows of codes; 3: postfilter, cross-fades in phase;
    # 4: the codes coded adaptively (mcquic_kernel); 5: Griffin-Lim from a heap-integrated phase (rvq_kernel)
    version = 5
    media = ("audio",)
    default_kbps = 6.0

    def model(self, model_id: str | None = None, weights_hash: bytes | None = None) -> RvqModel:
        return self.cached_model("audio", model_id, weights_hash, RvqModel.from_card)

    # ---------------------------------------------------------------------------------------- rate
    @staticmethod
    def levels(cfg: RvqConfig, rate: Rate, stereo: bool) -> tuple[int, int]:
        """(mid levels, side levels) per group for a requested bitrate (total kbps) or quality."""
        if rate.bpp is not None:
            raise BadInput("--bpp is for images; use --bitrate or --quality for audio")
        per_level = cfg.kbps(1)
        if rate.quality is not None:
            if not 0 <= rate.quality <= 100:
                raise BadInput(f"quality {rate.quality} is outside 0..100")
            mid = 1 + round(rate.quality / 100 * (cfg.n_q - 1))
            return mid, (mid // 2 if stereo else 0)
        kbps = RvqCodec.default_kbps if rate.kbps is None else rate.kbps
        top = cfg.n_q * per_level * (1.5 if stereo else 1)
        if not per_level <= kbps <= top + 1e-9:
            raise BadInput(f"rvq bitrate must be {per_level:g}..{top:g} kbps for "
                           f"{'stereo' if stereo else 'mono'} audio, got {kbps:g}")
        total = int(kbps / per_level + 1e-9)
        if not stereo:
            return total, 0
        mid = min(cfg.n_q, max(1, -(-2 * total // 3)))
        return mid, min(total - mid, mid // 2 if mid < cfg.n_q else cfg.n_q)

    # ---------------------------------------------------------------------------------------- encode
    def encode(self, src, media: str, rate: Rate, model: str | None = None, **info) -> Encoded:
        """``model``: a model id (e.g. a converted EnCodec checkpoint); default the newest rvq model."""
        if media != "audio":
            raise BadInput(f"the rvq codec codes audio, not {media}")
        if src.channels not in (1, 2):
            raise BadInput(f"rvq codes mono or stereo, got {src.channels} channels")
        if not 8000 <= src.rate <= 192000:
            raise BadInput(f"sample rate {src.rate} Hz is outside 8000..192000")
        card = zoo.find(self.codec_id, "audio", model)
        model = self.model(card.id)
        cfg = model.cfg
        stereo = src.channels == 2
        mid, side = self.levels(cfg, rate, stereo)
        up, down = _ratio(src.rate, cfg.rate)
        n_int = -(-src.frames * up // down)
        n_frames = -(-n_int // cfg.hop)

        def read(start, n):
            block = src.read(start, n)
            if stereo:
                block = np.stack([block.mean(1), (block[:, 0] - block[:, 1]) / 2], 1)
            return block

        get = _padded_reader(read, src.frames, 2 if stereo else 1)
        units = []
        for a in range(0, n_frames, SEGMENT):
            b = min(n_frames, a + SEGMENT)
            lo, hi = a - min(OVERLAP, a), b + min(OVERLAP, n_frames - b)
            x = resample_range(get, (lo - CONTEXT) * cfg.hop, (hi + CONTEXT) * cfg.hop, up, down)
            syms, idx, flags = [], [], []
            for ch, levels in enumerate((mid, side)[: 1 + stereo]):
                if levels == 0:
                    continue
                codes = model.encode_frames(x[:, ch], levels)[:, :, CONTEXT : CONTEXT + hi - lo]
                syms.append(codes.reshape(-1))
                flags.append(model.cheaper_uniform(codes, self.version))
                idx.append(model.table_index(levels, hi - lo, flags[-1]))
            s0, s1 = self._core_samples(a, b, n_frames, cfg, src.rate, src.frames)
            if self.version >= 4:
                rows = np.concatenate(syms).reshape(-1, hi - lo)
                data = model.encode_rows(list(rows), [int(i) for i in np.concatenate(idx)[:: hi - lo]])
            else:
                data = encode_indexed(np.concatenate(syms).astype(np.int32), np.concatenate(idx), model.tables)
            units.append(Unit((s0, s1 - s0, a, b - a),
                              np.packbits(np.concatenate(flags), bitorder="little").tobytes() + data))
        kbps = cfg.kbps(mid + side)
        header = Header(MediaKind.AUDIO, self.codec_id, self.version, (src.frames, src.channels), card.id,
                        card.hash8, RateKind.KBPS, float(kbps), 16, 0, src.rate,
                        params=PARAMS.pack(SEGMENT, OVERLAP, mid, side, stereo))
        return Encoded(header, units, {"kbps_nominal": kbps, "codebooks": [mid, side] if stereo else [mid]})

    @staticmethod
    def _core_samples(a: int, b: int, n_frames: int, cfg: RvqConfig, rate: int, frames: int) -> tuple[int, int]:
        up, down = _ratio(rate, cfg.rate)
        edge = lambda f: min(frames, -(-f * cfg.hop * down // up))  # noqa: E731
        return edge(a), (frames if b == n_frames else edge(b))

    # ---------------------------------------------------------------------------------------- decode
    def _layout(self, header: Header):
        if header.codec_version > self.version:
            raise UnsupportedVersion(f"rvq codec version {header.codec_version} is newer than this ncodec "
                                     f"({self.version}); upgrade ncodec")
        if header.media != MediaKind.AUDIO:
            raise CorruptFile("rvq file with a non-audio media kind")
        try:
            seg, ov, mid, side, stereo = PARAMS.unpack(header.params)
        except struct.error:
            raise CorruptFile("rvq parameters are malformed") from None
        model = self.model(header.model_id, header.weights_hash)
        frames, channels = header.shape
        if channels != 1 + stereo or seg == 0 or not 1 <= mid <= model.cfg.n_q or side > model.cfg.n_q \
                or not 8000 <= header.rate_num <= 192000:
            raise CorruptFile("rvq parameters do not match the stream")
        up, down = _ratio(model.cfg.rate, header.rate_num)  # internal -> original
        n_frames = -(-(-(-frames * down // up)) // model.cfg.hop)
        return model, seg, ov, (mid, side)[: 1 + stereo], n_frames, up, down

    def units_for_range(self, header: Header, units: list[Unit], start: int, stop: int) -> list[Unit]:
        """Units needed to decode original samples [start, stop) exactly as a full decode would."""
        model, seg, ov, _, n_frames, up, down = self._layout(header)
        lo_i = start * down // up - 64
        hi_i = -(-stop * down // up) + 64
        hop = model.cfg.hop
        return [u for u in units if (u.key[2] - ov) * hop < hi_i and (u.key[2] + u.key[3] + ov) * hop > lo_i]

    def _unit_codes(self, model: RvqModel, unit: Unit, levels, lo: int, hi: int, version: int) -> list[np.ndarray]:
        n, groups = hi - lo, model.cfg.groups
        if version >= 2:  # flags: one bit per (channel, group, level) row, set = the uniform table
            rows = groups * sum(levels)
            pos = -(-rows // 8)
            if len(unit.data) < pos:
                raise CorruptFile("rvq unit is shorter than its table flags; the file is damaged")
            flags = np.unpackbits(np.frombuffer(unit.data[:pos], np.uint8), count=rows, bitorder="little")
            flags = np.split(flags.astype(bool), np.cumsum([groups * l for l in levels])[:-1])
        else:
            pos, flags = 0, [None] * len(levels)
        idx = np.concatenate([model.table_index(l, n, f) for l, f in zip(levels, flags) if l])
        if version >= 4:
            syms = model.decode_rows(unit.data, pos, idx[::n], n)
        else:
            syms, _ = decode_indexed(unit.data, idx, model.tables, pos)
        if syms.size and (syms.min() < 0 or syms.max() >= model.cfg.codebook_size):
            raise CorruptFile("rvq code out of the codebook range; the file is damaged")
        out, pos = [], 0
        for l in levels:
            size = model.cfg.groups * l * n
            out.append(np.asarray(syms[pos : pos + size]).reshape(model.cfg.groups, l, n) if l else None)
            pos += size
        return out

    def _internal_blocks(self, header: Header, units: list[Unit]):
        """Yield (first internal sample, float32 (n, channels)) contiguous blocks, cross-faded at boundaries."""
        model, seg, ov, levels, n_frames, _, _ = self._layout(header)
        hop, channels = model.cfg.hop, len(levels)

        def decoded():
            for unit in sorted(units, key=lambda u: u.key[2]):
                a, n = unit.key[2], unit.key[3]
                b = a + n
                if n == 0 or n > seg or a % seg or b > n_frames or (b != n_frames and n != seg):
                    raise CorruptFile(f"segment {unit.key} does not fit the {n_frames}-frame signal")
                lo, hi = a - min(ov, a), b + min(ov, n_frames - b)
                if unit.data is None:  # damaged segment (lenient read): silence
                    y = np.zeros(((hi - lo) * hop, channels), np.float32)
                else:
                    codes = self._unit_codes(model, unit, levels, lo, hi, header.codec_version)
                    if header.codec_version >= 3:  # frames shared with the neighbours: [lo, a + ov), [b - ov, hi)
                        shared = ([(0, min(a + ov, hi) - lo)] if lo < a else []) + \
                                 ([(max(b - ov, lo) - lo, hi - lo)] if hi > b else [])
                        y = model.decode_channels(codes, (hi - lo) * hop, lo, tuple(shared),
                                                  pghi=header.codec_version >= 5)
                    else:
                        y = model.decode_channels(codes, (hi - lo) * hop)
                # shared with the next unit: [b - ov, hi), 2 * ov frames unless the next (last) unit is shorter than ov
                yield lo * hop, y, ((ov + hi - b) * hop if hi > b else 0)

        yield from crossfade_segments(decoded())

    def decode_segments(self, header: Header, units: list[Unit]):
        """Yield (first frame, float32 block) at the original rate, in order; memory bounded by one segment."""
        model, _, _, levels, n_frames, up, down = self._layout(header)
        frames, channels = header.shape
        stream = _Stream(up, down, len(levels), frames)
        prev = None  # one block of look-ahead, so the last one is pushed with last=True
        for first, block in self._internal_blocks(header, units):
            if prev is not None:
                yield from self._finish(stream.push(*prev), channels)
            prev = (first, block)
        if prev is not None:
            yield from self._finish(stream.push(*prev, last=True), channels)

    @staticmethod
    def _finish(pieces, channels: int):
        for first, block in pieces:
            if channels == 2:
                block = np.stack([block[:, 0] + block[:, 1], block[:, 0] - block[:, 1]], 1)
            yield first, np.clip(block, -1, 1).astype(np.float32)

    def decode(self, header: Header, units: list[Unit]) -> np.ndarray:
        frames, channels = header.shape
        out = np.zeros((frames, channels), dtype=np.float32)
        for start, block in self.decode_segments(header, units):
            out[start : start + len(block)] = block
        return out

    def symbols_digest(self, header: Header, units: list[Unit]) -> str:
        """SHA-256 over every unit's entropy-decoded codes: the exact layer."""
        import hashlib

        model, _, ov, levels, n_frames, _, _ = self._layout(header)
        h = hashlib.sha256()
        for unit in units:
            a, b = unit.key[2], unit.key[2] + unit.key[3]
            for c in self._unit_codes(model, unit, levels, a - min(ov, a), b + min(ov, n_frames - b),
                                      header.codec_version):
                if c is not None:
                    h.update(np.ascontiguousarray(c, dtype="<i8").tobytes())
        return h.hexdigest()
