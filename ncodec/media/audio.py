"""Audio sources read piece by piece, so long files never sit in memory whole."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import BadInput, ConversionWarning

LOUD = "samples beyond full scale (|x| > 1) are clipped when decoded to an audio file"


def _check_scale(data: np.ndarray) -> bool:
    """Warn (once per source: returns True when it did) of float samples outside [-1, 1]: the codecs code them,
    but a decoded WAV / FLAC / Ogg file holds [-1, 1] only."""
    if data.size and float(np.abs(data).max()) > 1.0:
        warnings.warn(ConversionWarning(LOUD), stacklevel=3)
        return True
    return False


class ArraySource:
    def __init__(self, data: np.ndarray, rate: int):
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 0 or len(data) == 0 or data.size == 0:
            raise BadInput("the audio has no samples")
        if data.ndim > 2:
            raise BadInput(f"audio must be (frames,) or (frames, channels), got shape {data.shape}")
        if not np.isfinite(data).all():
            raise BadInput("the audio has NaN or infinite samples")
        self.data = data.reshape(len(data), -1)
        self.frames, self.channels, self.rate = len(self.data), self.data.shape[1], int(rate)
        _check_scale(self.data)

    def read(self, start: int, n: int) -> np.ndarray:
        return self.data[start : start + n]


class FileSource:
    """A soundfile-readable file; each ``read`` seeks and reads only the frames asked for."""

    def __init__(self, path):
        import soundfile as sf

        try:
            self.f = sf.SoundFile(path)
        except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            raise BadInput(f"cannot read audio {path}: {exc}") from None
        self.frames, self.channels, self.rate = self.f.frames, self.f.channels, self.f.samplerate
        if self.frames <= 0:
            raise BadInput(f"audio file {path} has no samples")
        self.loud = False  # warned of samples beyond full scale

    def read(self, start: int, n: int) -> np.ndarray:
        self.f.seek(start)
        out = self.f.read(n, dtype="float32", always_2d=True)
        if not np.isfinite(out).all():  # a float WAV can hold them
            raise BadInput(f"audio file {self.f.name} has NaN or infinite samples (from frame {start})")
        self.loud = self.loud or _check_scale(out)
        return out

    def close(self):
        self.f.close()
