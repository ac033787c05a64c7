"""The codec contract: media in, container units out, and back."""
from __future__ import annotations

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
