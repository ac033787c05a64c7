"""Lossless image benchmark: PNG (optimize), WebP lossless (method 6), JPEG XL lossless; every decode checked
bit-exact. Learned lossless codecs join through the container once registered."""
from __future__ import annotations

import io
import time

import numpy as np

CODECS = {
    "png": ("PNG", {"optimize": True}),
    "webp-ll": ("WEBP", {"lossless": True, "method": 6, "quality": 100}),
    "jxl-ll": ("JXL", {"lossless": True}),
}
SETTINGS = {"png": "Pillow zlib, optimize=True", "webp-ll": "Pillow libwebp lossless, method 6, quality 100",
            "jxl-ll": "pillow-jxl-plugin lossless=True (defaults otherwise)"}


def run_one(name: str, img: np.ndarray) -> dict:
    from PIL import Image

    if name == "jxl-ll":
        import pillow_jxl  # noqa: F401
    model = ""
    if name in CODECS:
        fmt, kw = CODECS[name]
        buf = io.BytesIO()
        t0 = time.perf_counter()
        Image.fromarray(img).save(buf, fmt, **kw)
        t1 = time.perf_counter()
        data = buf.getvalue()
        with Image.open(io.BytesIO(data)) as d:
            out = np.asarray(d.convert(Image.fromarray(img).mode))
        t2 = time.perf_counter()
        nbytes = len(data)
    else:
        import ncodec

        t0 = time.perf_counter()
        blob = ncodec.encode(img, codec=name)
        t1 = time.perf_counter()
        out = ncodec.decode(blob).data
        t2 = time.perf_counter()
        nbytes = len(blob)
        from ..container import read_header

        model = read_header(blob).model_id
    px = img.shape[0] * img.shape[1]
    return {"bytes": nbytes, "bpp": 8 * nbytes / px, "bits_per_dim": 8 * nbytes / img.size,
            "exact": bool(np.array_equal(out, img)), "enc_s": t1 - t0, "dec_s": t2 - t1, "pixels": px,
            "model": model}
