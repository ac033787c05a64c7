"""The codec contract: media in, container units out, and back."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..container import Header, RateKind, Unit


@dataclass
class Rate:
    """What the user asked for: exactly one of quality / bpp / kbps (or none: the codec default)."""

    quality: float | None = None
    bpp: float | None = None
    kbps: float | None = None


@dataclass
class Encoded:
    header: Header
    units: list[Unit]
    achieved: dict  # e.g. {"quality": 47.5} chosen by a rate search


class Codec:
    """Subclasses set ``media`` and ``version`` and implement encode/decode.

    ``encode`` returns a complete header and units; ``decode`` turns them back into an array (images: uint8
    HxWxC; audio: float32 frames x channels). ``decode_unit`` must work on one unit alone.
    """

    codec_id: str = ""
    version: int = 1
    media: tuple[str, ...] = ()
    default_quality: float = 50.0
    lossless: bool = False  # lossless codecs refuse inputs that RGB cannot hold exactly (read_image(exact=True))

    @classmethod
    def encoder_settings(cls) -> str:
        """Encoder defaults that change the files written but not the format or the model (e.g. a search width),
        e.g. "beam 4"; the bench tags its cached rows with them. Empty when there are none."""
        return ""

    def cached_model(self, media: str, model_id: str | None, weights_hash: bytes | None, load):
        """The installed model for ``media`` (the newest, or ``model_id``), loaded once by ``load(card)``;
        ``weights_hash`` (from a file's header) must match the installed weights."""
        from .. import zoo
        from ..errors import ModelMismatch

        card = zoo.find(self.codec_id, media, model_id)
        if card.codec != self.codec_id or card.media != media:
            raise ModelMismatch(f"model {card.id!r} is a {card.codec} {card.media} model, not a {self.codec_id} "
                                f"{media} model")
        if weights_hash is not None and weights_hash != card.hash8:
            raise ModelMismatch(f"this file needs model {card.id!r} with weights {weights_hash.hex()}..., but the "
                                f"installed one has {card.hash8.hex()}...; install the matching weights")
        cache = self.__dict__.setdefault("_models", {})
        if card.id not in cache:
            cache[card.id] = load(card)
        return cache[card.id]

    def check_rgb(self, data) -> None:
        """An 8-bit RGB image array of at least 1 x 1 pixels, or a clear error."""
        from ..errors import BadInput

        if data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] != 3:
            raise BadInput(f"{self.codec_id} needs an 8-bit RGB image, got array {data.shape} {data.dtype}")
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise BadInput(f"{self.codec_id} needs an image of at least 1x1 pixels, got {data.shape[1]}x{data.shape[0]}")

    def image_quality(self, data, media: str, rate: Rate) -> float:
        """Check an RGB image encode request of a quality-driven codec (``--bpp`` is searched by ncodec.api on
        the file size); returns the quality, 0..100."""
        from ..errors import BadInput

        name = self.codec_id
        if media != "image":
            raise BadInput(f"the {name} codec codes images, not {media}")
        self.check_rgb(data)
        if rate.kbps is not None:
            raise BadInput("--bitrate is for audio; use --quality or --bpp for images")
        if rate.bpp is not None:
            raise BadInput(f"{name} encodes at a quality; ncodec.encode(bpp=...) searches it")
        q = self.default_quality if rate.quality is None else float(rate.quality)
        if not 0 <= q <= 100:
            raise BadInput(f"quality {q} is outside 0..100")
        return q

    def encode(self, data, media: str, rate: Rate) -> Encoded:
        """``data``: uint8 HxWxC array for images; an ncodec.media.audio source for audio."""
        raise NotImplementedError

    def decode(self, header: Header, units: list[Unit]) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def rate_fields(rate: Rate) -> tuple[RateKind, float]:
        if rate.quality is not None:
            return RateKind.QUALITY, float(rate.quality)
        if rate.bpp is not None:
            return RateKind.BPP, float(rate.bpp)
        if rate.kbps is not None:
            return RateKind.KBPS, float(rate.kbps)
        return RateKind.NONE, 0.0


def fades(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raised-cosine cross-fade of n samples: (fade in, fade out), summing to 1."""
    w = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
    return w.astype(np.float32), (1 - w).astype(np.float32)


def crossfade_segments(segments):
    """Join overlapping decoded audio segments into contiguous blocks.

    ``segments`` yields ``(first sample, float32 (n, channels), shared)`` in time order, where the block's last
    ``shared`` samples are also the first ``shared`` samples of the next segment (0 for the last one). Where a
    segment follows its neighbour, the shared samples are cross-faded (:func:`fades`); where the neighbour is
    absent (a range read, a gap), each side is used as decoded. Yields ``(first sample, block)``."""
    pending = None  # (first sample, raw tail, faded-out tail) of the previous segment
    for first, y, shared in segments:
        if pending is not None and pending[0] == first and len(pending[1]) <= len(y):
            head = len(pending[1])
            y = y.copy()
            y[:head] = y[:head] * fades(head)[0][:, None] + pending[2]
        elif pending is not None:
            yield pending[0], pending[1]
        pending = None
        if shared:
            cut = len(y) - shared
            tail = y[cut:]
            pending = (first + cut, tail, tail * fades(shared)[1][:, None])
            y = y[:cut]
        yield first, y
    if pending is not None:
        yield pending[0], pending[1]


def tiles(n: int, tile: int) -> list[tuple[int, int]]:
    """Split length n into near-equal parts of at most ``tile``: [(start, length), ...]."""
    k = max(1, math.ceil(n / tile))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(edges[i], edges[i + 1] - edges[i]) for i in range(k)]


def pad_to(x, mult: int, ndim: int):
    """Pad the last ``ndim`` dims of torch tensor x by edge replication up to multiples of ``mult``."""
    import torch.nn.functional as F

    pads = []
    for n in reversed(x.shape[-ndim:]):
        pads += [0, (-n) % mult]
    return F.pad(x, pads, mode="replicate") if any(pads) else x


def image_tiles(data, tile: int, mult: int):
    """Yield ``((y0, x0, h, w), x)`` for the tiles of a uint8 HxWx3 array (:func:`tiles` on both sides): x is the
    tile as a float tensor (1, 3, h', w') in [0, 1], padded by :func:`pad_to` to multiples of ``mult``."""
    import numpy as np
    import torch

    for y0, th in tiles(data.shape[0], tile):
        for x0, tw in tiles(data.shape[1], tile):
            x = torch.from_numpy(np.array(data[y0 : y0 + th, x0 : x0 + tw])).permute(2, 0, 1)[None].float() / 255.0
            yield (y0, x0, th, tw), pad_to(x, mult, 2)


def wavefront_steps(h: int, w: int):
    """Wavefront steps over an h x w grid: the cells with ``2y + x = t`` (rows y ascending), t = 0 .. 2(h-1) + w-1.
    The causal neighbours W, NW, N, NE, WW, NN (and NNE) of a cell lie on earlier steps, so a whole step can be
    coded as one vectorised batch."""
    for t in range(2 * (h - 1) + w):
        y = np.arange(max(0, (t - w + 2) // 2), min(h - 1, t // 2) + 1)
        yield y, t - 2 * y
