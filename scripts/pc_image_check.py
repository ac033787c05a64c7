"""The pc image model on its training check split (every 10th training image, never fitted), full size and
2x box-downscaled, against PNG / WebP lossless / JPEG XL lossless; bits per pixel from whole files, every decode
checked exact.

    python scripts/pc_image_check.py --data ../shared/corpus --out docs/results/pc-image-check --limit 20
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ncodec.bench.lossless import run_one
from ncodec.train.data import IMAGE_EXT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/corpus")
    ap.add_argument("--out", default="docs/results/pc-image-check")
    ap.add_argument("--codecs", default="pc,png,webp-ll,jxl-ll")
    ap.add_argument("--limit", type=int, default=None, help="only the first N check images")
    args = ap.parse_args()
    files = sorted(p for p in (Path(args.data) / "train" / "images").rglob("*") if p.suffix.lower() in IMAGE_EXT)
    check = [f for i, f in enumerate(files) if i % 10 == 9][: args.limit]  # the split image_rows holds back
    codecs = args.codecs.split(",")
    rows = []
    for f in check:
        with Image.open(f) as im:
            im = im.convert("RGB")
            versions = {"full": np.asarray(im),
                        "half": np.asarray(im.resize((im.width // 2, im.height // 2), Image.Resampling.BOX))}
        for size, img in versions.items():
            for c in codecs:
                r = run_one(c, img)
                rows.append({"item": f.name, "size": size, "codec": c, **r})
                print(f"{f.name:40s} {size} {c:8s} {r['bpp']:.3f} bpp exact={r['exact']}", flush=True)
    summary = {}
    for size in ("full", "half"):
        for c in codecs:
            rs = [r for r in rows if r["codec"] == c and r["size"] == size]
            px = sum(r["pixels"] for r in rs)
            summary[f"{c} {size}"] = {"bpp": 8 * sum(r["bytes"] for r in rs) / px,
                                      "all_exact": all(r["exact"] for r in rs)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"command": "python scripts/pc_image_check.py " +
                                                  f"--data {args.data} --out {args.out}" + (f" --limit {args.limit}" if args.limit else ""),
                                                  "date": time.strftime("%Y-%m-%d"), "images": len(check),
                                                  "summary": summary, "rows": rows}, indent=1) + "\n")
    for k, v in summary.items():
        print(f"{k:16s} {v['bpp']:.3f} bpp exact={v['all_exact']}")


if __name__ == "__main__":
    main()
