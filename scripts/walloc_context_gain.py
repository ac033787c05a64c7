"""Bytes of walloc files with and without the causal context model, same encoder and same pixels.

    python scripts/walloc_context_gain.py --data ../shared/corpus/eval/images/kodak --out docs/results/walloc-context

Encodes every image with the base model (``--base``, default walloc-image-v2: Gaussian tables chosen by the
hyperprior) and with the context model (``--model``, default walloc-image-v3 = the same networks + cm.* / cmz.*)
at each quality, checks that both decode to identical pixels, and writes results.json with the mean bpp of each
and the size change.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default="walloc-image-v2")
    ap.add_argument("--model", default="walloc-image-v3")
    ap.add_argument("--qualities", default="0,25,50,75,100")
    args = ap.parse_args()

    import ncodec
    from ncodec.media import read_image

    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rows = []
    for q in [float(v) for v in args.qualities.split(",")]:
        sizes = {args.base: 0, args.model: 0}
        pixels = 0
        same = True
        dec_s = {args.base: 0.0, args.model: 0.0}
        for f in files:
            img = read_image(str(f))
            pixels += img.shape[0] * img.shape[1]
            decoded = []
            for m in (args.base, args.model):
                blob = ncodec.encode(img, codec="walloc", quality=q, options={"model": m})
                sizes[m] += len(blob)
                t0 = time.perf_counter()
                decoded.append(ncodec.decode(blob).data)
                dec_s[m] += time.perf_counter() - t0
            same &= bool(np.array_equal(decoded[0], decoded[1]))
        row = {"quality": q, "images": len(files), "identical_pixels": same,
               f"{args.base}_bpp": 8 * sizes[args.base] / pixels, f"{args.model}_bpp": 8 * sizes[args.model] / pixels,
               "size_change": sizes[args.model] / sizes[args.base] - 1,
               f"{args.base}_decode_s": dec_s[args.base], f"{args.model}_decode_s": dec_s[args.model]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = (f"python scripts/walloc_context_gain.py --data {args.data} --out {args.out}"
           + (f" --qualities {args.qualities}" if args.qualities != "0,25,50,75,100" else ""))
    (out / "results.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
