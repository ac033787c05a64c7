"""ncodec: neural codecs with one versioned file format (.nc).

>>> import ncodec
>>> blob = ncodec.encode("photo.png", quality=50)      # doctest: +SKIP
>>> img = ncodec.decode(blob).data                      # doctest: +SKIP

Heavy modules (torch, compressai) load only when a codec runs.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402  (stdlib only)
    BadInput, ConversionWarning, CorruptFile, LimitExceeded, ModelMismatch, NcodecError, UnknownCodec,
    UnsupportedVersion,
)


def __getattr__(name):  # lazy API: `import ncodec` stays cheap
    if name in ("encode", "decode", "info", "Info", "Decoded", "encode_items", "decode_items"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'ncodec' has no attribute {name!r}")


def _register_pillow() -> None:
    """Let Pillow open and save .nc images (``Image.open("x.nc")``); costs the import of PIL.Image only."""
    try:
        from . import pillow
    except ImportError:  # Pillow missing: the plugin is optional
        return
    pillow.register()


_register_pillow()

__all__ = ["encode", "decode", "info", "Info", "Decoded", "encode_items", "decode_items", "NcodecError", "CorruptFile", "UnsupportedVersion",
           "LimitExceeded", "UnknownCodec", "ModelMismatch", "BadInput", "ConversionWarning",
           "__version__"]
