"""Media I/O. Images are uint8 (H, W, 3) RGB arrays; audio is float32 (frames, channels) plus a sample rate."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import BadInput

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
AUDIO_EXT = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
MAX_IMAGE_PIXELS = 1 << 28


def detect_media(name: str, head: bytes = b"") -> str:
    ext = Path(name).suffix.lower()
    if ext in IMAGE_EXT:
        return "image"
    if ext in AUDIO_EXT:
        return "audio"
    if head.startswith((b"\x89PNG", b"\xff\xd8", b"BM", b"GIF8")) or head[8:12] == b"WEBP":
        return "image"
    if head.startswith((b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM")):
        return "audio"
    raise BadInput(f"cannot tell the media kind of {name!r}: use an image (.png .jpg ...) or audio "
                   f"(.wav .flac ...) file")


def read_image(src: str | Path | bytes, exact: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) RGB. ``exact`` (lossless codecs): refuse what RGB cannot hold exactly (transparency,
    16-bit samples, CMYK) instead of converting it."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise BadInput(f"image of {im.width}x{im.height} is above the limit of {MAX_IMAGE_PIXELS} pixels")
            if im.mode not in ("RGB", "L", "RGBA", "P", "LA", "I;16", "1", "CMYK", "YCbCr"):
                raise BadInput(f"image mode {im.mode} is not supported; convert to 8-bit RGB")
            if exact:
                _check_exact(im)
                return np.asarray(im.convert("RGB"))
            return to_rgb8(im)
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        name = "input" if isinstance(src, bytes) else str(src)
        raise BadInput(f"cannot read image {name}: {exc}") from None


def to_rgb8(im) -> np.ndarray:
    """8-bit RGB for a lossy codec, with a :class:`ConversionWarning` for what is lost: 16-bit grey is rounded
    to 8 bits (Pillow's own conversion clips it at 255: a white image), an alpha channel is dropped."""
    import warnings

    from ..errors import ConversionWarning

    if im.mode == "I;16":
        grey = np.round(np.asarray(im, dtype=np.float64) / 257.0).astype(np.uint8)
        warnings.warn(ConversionWarning("16-bit samples rounded to 8 bits (lossy codecs code 8-bit RGB)"),
                      stacklevel=3)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if _has_transparency(im):
        warnings.warn(ConversionWarning("transparency dropped (lossy codecs code RGB only)"), stacklevel=3)
    return np.asarray(im.convert("RGB"))


def _has_transparency(im) -> bool:
    """Whether any pixel of a Pillow image is not fully opaque."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return bool((np.asarray(im.convert("RGBA"))[:, :, 3] != 255).any())
    return False


def _check_exact(im) -> None:
    if im.mode in ("I;16", "CMYK", "YCbCr"):
        raise BadInput(f"a lossless codec stores 8-bit RGB or grey; this image is {im.mode} (convert it first)")
    if _has_transparency(im):
        raise BadInput("a lossless codec stores 8-bit RGB or grey; this image has transparency, which would be "
                       "lost (flatten it first)")


def write_image(dest: str | Path, arr: np.ndarray, fmt: str | None = None) -> None:
    from PIL import Image

    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]  # grayscale
    Image.fromarray(np.ascontiguousarray(arr)).save(dest, format=fmt)


def write_audio(dest, data: np.ndarray, rate: int, fmt: str | None = None) -> None:
    import soundfile as sf

    kind = (fmt or Path(str(dest)).suffix.lstrip(".")).upper()
    sf.write(dest, np.clip(data, -1, 1), rate, format=fmt, subtype="PCM_16" if kind in ("WAV", "FLAC") else None)
