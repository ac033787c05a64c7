"""Image benchmark: learned codecs through the real container, classical codecs through Pillow.

Settings (stated in every results file):
  jpeg   Pillow/libjpeg, 4:2:0, quality sweep          webp  method 6, quality sweep
  avif   Pillow (libavif), 4:4:4, speed 6, quality sweep jxl   pillow-jxl-plugin defaults, quality sweep
  j2k    OpenJPEG 9/7 (irreversible), rate mode, compression-ratio sweep
  learned codecs: ncodec.encode(..., quality=q), bpp from the whole .nc file
"""
from __future__ import annotations

import io
import time

import numpy as np

CLASSICAL = {
    "jpeg": ("JPEG", "quality", [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95],
             {"subsampling": "4:2:0"}),
    "webp": ("WEBP", "quality", [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95], {"method": 6}),
    "avif": ("AVIF", "quality", [0, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90],  # 0, 2: its lowest rates
             {"subsampling": "4:4:4", "speed": 6}),
    "jxl": ("JXL", "quality", [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95], {}),
    "j2k": ("JPEG2000", "bpp", [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
            {"irreversible": True, "quality_mode": "rates", "mct": 1}),
}
LEARNED_RATES = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
LEARNED_SWEEPS = {"vqgan": [0, 14, 29, 43, 57, 71, 86, 100],  # one quality per ladder rung (8 rungs)
                  # every second codebook count of mcquic-image-v2 (n = 1, 3, .., 15, 16 of 16)
                  "mcquic": [0, 13, 27, 40, 53, 67, 80, 93, 100]}
SETTINGS = {
    "jpeg": "Pillow libjpeg, 4:2:0", "webp": "Pillow libwebp, method 6", "avif": "Pillow libavif, 4:4:4, speed 6",
    "jxl": "pillow-jxl-plugin defaults (perceptual tuning)", "j2k": "Pillow OpenJPEG, 9/7 irreversible, colour transform (mct=1), rate mode",
}


def available(name: str) -> bool:
    if name in CLASSICAL:
        from PIL import features

        if name == "jxl":
            try:
                import pillow_jxl  # noqa: F401
            except ImportError:
                return False
            return True
        return features.check({"jpeg": "jpg", "webp": "webp", "avif": "avif", "j2k": "jpg_2000"}[name])
    from ..registry import CODEC_MODULES

    return name in CODEC_MODULES


def rates_for(name: str, override: list[float] | None = None) -> list[float]:
    if override:
        return override
    return CLASSICAL[name][2] if name in CLASSICAL else LEARNED_SWEEPS.get(name, LEARNED_RATES)


_WARMED: set = set()  # codecs that made their untimed round trip in this process


def warm_up(name: str) -> float | None:
    """Once per process and codec: one untimed round trip on a 64x64 noise image at the codec's middle setting, so
    that what a process does once per codec (imports, loading and checking a model, library set-up) does not land
    in the first image's timing. Returns its seconds, or None when this process had already warmed ``name`` up."""
    if name in _WARMED:
        return None
    _WARMED.add(name)
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    settings = rates_for(name)
    t0 = time.perf_counter()
    run_one(name, img, settings[len(settings) // 2])
    return time.perf_counter() - t0


def run_one(name: str, img: np.ndarray, rate: float) -> tuple[int, np.ndarray, float, float]:
    """Encode and decode one image: (file bytes, decoded uint8 RGB, encode s, decode s)."""
    from PIL import Image

    if name in CLASSICAL:
        if name == "jxl":
            import pillow_jxl  # noqa: F401  (registers the plugin)
        fmt, kind, _, extra = CLASSICAL[name]
        kw = dict(extra)
        if kind == "quality":
            kw["quality"] = int(rate)
        else:  # OpenJPEG rate mode: compression ratio against 24 bpp
            kw["quality_layers"] = [24.0 / rate]
        pil = Image.fromarray(img)
        buf = io.BytesIO()
        t0 = time.perf_counter()
        pil.save(buf, fmt, **kw)
        t1 = time.perf_counter()
        data = buf.getvalue()
        with Image.open(io.BytesIO(data)) as d:
            out = np.asarray(d.convert("RGB"))
        t2 = time.perf_counter()
        return len(data), out, t1 - t0, t2 - t1
    import ncodec

    t0 = time.perf_counter()
    blob = ncodec.encode(img, codec=name, quality=rate)
    t1 = time.perf_counter()
    out = ncodec.decode(blob).data
    t2 = time.perf_counter()
    return len(blob), out, t1 - t0, t2 - t1
