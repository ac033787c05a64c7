"""Video in the style of PyAV: iterate a .nc video's frames as numpy arrays, with random access.

>>> import ncodec.video                                     # doctest: +SKIP
>>> video = ncodec.video.open("clip.nc")                    # doctest: +SKIP
>>> len(video), video.fps, video.shape                      # doctest: +SKIP
>>> for frame in video: ...                                 # uint8 (H, W, 3), group by group  # doctest: +SKIP
>>> part = video[30:40]                                     # decodes only the groups holding 30..39  # doctest: +SKIP

Implicit neural codecs (nerv, nirvana) evaluate their network at the wanted frames only, so random access
costs only those frames (plus, for nirvana, rebuilding the weights from the last intra group).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import numpy as np

from . import container
from .errors import BadInput


class VideoReader:
    def __init__(self, src, strict: bool = True):
        from .api import _codec, _info, _read_bytes

        data = _read_bytes(src)
        self._file = container.read(data, strict=strict)
        h = self._file.header
        if h.media != container.MediaKind.VIDEO:
            raise BadInput(f"this .nc file holds {h.media.name.lower()}, not video")
        self._codec = _codec(h.codec_id)
        self.info = _info(self._file, len(data))
        self.shape: tuple[int, int, int, int] = tuple(h.shape)
        self.fps = Fraction(h.rate_num, h.rate_den or 1) if h.rate_num else Fraction(25)

    def __len__(self) -> int:
        return self.shape[0]

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames start..stop-1 one by one; only the groups holding them are decoded, one group at a time."""
        start, stop, _ = slice(start, stop).indices(len(self))
        if stop <= start:
            return
        for _, block in self._codec.decode_frames(self._file.header, self._file.units, start, stop):
            yield from block

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_frames()

    def __getitem__(self, key) -> np.ndarray:
        """``video[i]`` one frame (H, W, 3); ``video[a:b]`` / ``video[a:b:s]`` an array (n, H, W, 3)."""
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            if step < 1:
                raise BadInput("video slices need a positive step")
            frames = list(self.iter_frames(a, b))[::step]
            return np.stack(frames) if frames else np.zeros((0,) + self.shape[1:], np.uint8)
        i = int(key)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {key} is outside 0..{len(self) - 1}")
        return next(self.iter_frames(i, i + 1))


def open(src, strict: bool = True) -> VideoReader:  # noqa: A001 - mirrors av.open / soundfile
    """A .nc video (path or bytes)."""
    return VideoReader(src, strict)
