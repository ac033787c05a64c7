"""Library-level timings for issue #10, written to docs/results/api/results.md (and .json).

    python scripts/api_timing.py [--minutes 10] [--out docs/results/api]

1. Pillow: time to Image.open a .nc image (header only), against Image.open of the PNG of the same image
   (that opening loads no model is tested in tests/test_pillow.py, in a fresh process).
2. Audio: a synthetic speech-like signal of N minutes at 16 kHz is encoded once; then a 1-second range from the
   middle is read with ncodec.audio.read (segments decoded counted) and compared with decoding the whole file.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _best(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", default="docs/results/api")
    args = ap.parse_args()

    import ncodec
    import ncodec.audio
    from PIL import Image
    from skimage import data

    tmp = Path(tempfile.mkdtemp())
    img = data.astronaut()
    Image.fromarray(img).save(tmp / "a.png")
    (tmp / "a.nc").write_bytes(ncodec.encode(img, quality=50))

    def open_nc():
        with Image.open(tmp / "a.nc") as im:
            im.size

    def open_png():
        with Image.open(tmp / "a.png") as im:
            im.size

    t_nc, t_png = _best(open_nc, 20), _best(open_png, 20)

    rate = 16000
    n = int(args.minutes * 60 * rate)
    rng = np.random.default_rng(0)
    t = np.arange(n) / rate
    sig = (0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
           + 0.02 * rng.standard_normal(n)).astype(np.float32)
    t0 = time.perf_counter()
    info = ncodec.audio.write(tmp / "long.nc", sig, rate, quality=50)
    t_enc = time.perf_counter() - t0

    from ncodec.api import _codec

    codec = _codec("walloc")
    decoded = []
    original = codec.decode_segments

    def counting(header, units):
        decoded.append(len(units))
        return original(header, units)

    codec.decode_segments = counting
    mid = n // 2
    t_range = _best(lambda: ncodec.audio.read(tmp / "long.nc", mid, mid + rate), 3)
    segs_range = decoded[-1]
    t_full = _best(lambda: ncodec.audio.read(tmp / "long.nc"), 1)
    segs_full = decoded[-1]
    codec.decode_segments = original

    res = {
        "pillow_open_nc_ms": 1000 * t_nc, "pillow_open_png_ms": 1000 * t_png,
        "audio_minutes": args.minutes, "audio_file_kbps": info.kbps, "audio_encode_s": t_enc,
        "range_read_s": t_range, "range_segments_decoded": segs_range,
        "full_read_s": t_full, "full_segments_decoded": segs_full, "range_over_full": t_range / t_full,
        "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    md = [f"Command: `{res['command']}` (2-core CPU machine; best of several runs).", "",
          "| measurement | value |", "|---|---|",
          f"| Pillow `Image.open` of a .nc image (header only) | {res['pillow_open_nc_ms']:.2f} ms |",
          f"| Pillow `Image.open` of the PNG of the same image | {res['pillow_open_png_ms']:.2f} ms |",
          f"| audio file | {args.minutes:g} min, 16 kHz mono, {res['audio_file_kbps']:.1f} kbps, encoded in {t_enc:.1f} s |",
          f"| read 1 s from the middle | {t_range:.3f} s, {segs_range} segment(s) decoded |",
          f"| read the whole file | {t_full:.2f} s, {segs_full} segments |",
          f"| range / whole | {100 * res['range_over_full']:.2f} % |", ""]
    (out / "results.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
