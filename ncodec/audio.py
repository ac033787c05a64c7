"""Audio in the style of soundfile: ``read``, ``write``, ``blocks``.

>>> import ncodec.audio                                           # doctest: +SKIP
>>> ncodec.audio.write("speech.nc", samples, 16000, bitrate=12)   # doctest: +SKIP
>>> part, rate = ncodec.audio.read("speech.nc", start=16000, stop=32000)   # doctest: +SKIP

A range read decodes only the container units (segments) that overlap it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from . import container
from .errors import BadInput


def _open(src, strict: bool):
    from .api import _codec, _read_bytes

    data = _read_bytes(src)
    f = container.read(data, strict=strict)
    if f.header.media != container.MediaKind.AUDIO:
        raise BadInput(f"this .nc file holds {f.header.media.name.lower()}, not audio")
    codec = _codec(f.header.codec_id)
    if not hasattr(codec, "decode_segments"):
        raise BadInput(f"codec {f.header.codec_id!r} has no segment decoder")
    return f, codec


def _segments_overlapping(units, start: int, stop: int):
    return [u for u in units if u.key[0] < stop and u.key[0] + u.key[1] > start]


def read(src, start: int = 0, stop: int | None = None, strict: bool = True) -> tuple[np.ndarray, int]:
    """Samples ``[start, stop)`` (frames; negative values count from the end) as float32 (frames, channels),
    and the sample rate. Only the segments overlapping the range are decoded."""
    f, codec = _open(src, strict)
    frames, channels = f.header.shape
    start, stop, _ = slice(start, stop).indices(frames)
    out = np.zeros((max(stop - start, 0), channels), np.float32)
    if stop > start:
        if hasattr(codec, "units_for_range"):  # codecs whose segments overlap say which units a range needs
            units = codec.units_for_range(f.header, f.units, start, stop)
        else:
            units = _segments_overlapping(f.units, start, stop)
        for first, block in codec.decode_segments(f.header, units):
            lo, hi = max(first, start), min(first + len(block), stop)
            if hi > lo:
                out[lo - start : hi - start] = block[lo - first : hi - first]
    return out, f.header.rate_num


def blocks(src, strict: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a long file: yields (first frame, float32 block) one segment at a time (bounded memory)."""
    f, codec = _open(src, strict)
    yield from codec.decode_segments(f.header, f.units)


def write(dest, data: np.ndarray, samplerate: int, bitrate: float | None = None, quality: float | None = None,
          codec: str | None = None, overwrite: bool = True):
    """Encode float samples (frames[, channels]) in [-1, 1] to ``dest`` (path); returns its ``ncodec.Info``."""
    from . import api

    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise BadInput(f"audio must be (frames,) or (frames, channels), got shape {arr.shape}")
    path = Path(os.fspath(dest))
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    blob = api.encode(arr, codec=codec, quality=quality, bitrate=bitrate, media="audio", sample_rate=samplerate,
                      name=path.with_suffix(".wav").name)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(blob)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return api.info(blob)
