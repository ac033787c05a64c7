"""Two image models of one codec (walloc, or ``--codec mcquic``) on the same images: bytes, pixels and decode
time, quality by quality.

    python scripts/walloc_compare.py --data ../shared/corpus/eval/images/kodak --out docs/results/walloc-context
    python scripts/walloc_compare.py --data ../shared/corpus/eval/images/kodak --out docs/results/walloc-decoder \
        --base walloc-image-v3 --model walloc-image-v4
    python scripts/walloc_compare.py --data ../shared/corpus/eval/images/kodak --out docs/results/mcquic-decoder \
        --codec mcquic --base mcquic-image-v2 --model mcquic-image-v3 --qualities 0,27,53,80,100

Encodes every image with both models (``--base``, default walloc-image-v2; ``--model``, default walloc-image-v3)
at each quality and writes results.json with, per quality and model: the mean bpp (whole files), RGB PSNR and
MS-SSIM (means over the images) and the total decode time (one process, both models timed alike); plus whether
the two models wrote identical units (same symbols and probability model: a decoder fine-tune) and decoded to
identical pixels (same networks: a new probability model).
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
    ap.add_argument("--codec", default="walloc")
    args = ap.parse_args()

    import ncodec
    from ncodec import container
    from ncodec.bench.metrics import ms_ssim, psnr
    from ncodec.media import read_image

    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    models = (args.base, args.model)
    for m in models:  # load both before timing anything
        ncodec.decode(ncodec.encode(np.zeros((32, 32, 3), np.uint8), codec=args.codec, options={"model": m}))
    rows = []
    for q in [float(v) for v in args.qualities.split(",")]:
        sizes, dec_s = dict.fromkeys(models, 0), dict.fromkeys(models, 0.0)
        quality = {m: [] for m in models}
        pixels, same_pixels, same_units = 0, True, True
        for f in files:
            img = read_image(str(f))
            pixels += img.shape[0] * img.shape[1]
            decoded, units = [], []
            for m in models:
                blob = ncodec.encode(img, codec=args.codec, quality=q, options={"model": m})
                sizes[m] += len(blob)
                units.append([u.data for u in container.read(blob).units])
                t0 = time.perf_counter()
                decoded.append(ncodec.decode(blob).data)
                dec_s[m] += time.perf_counter() - t0
                quality[m].append((psnr(img, decoded[-1]), ms_ssim(img, decoded[-1])))
            same_pixels &= bool(np.array_equal(decoded[0], decoded[1]))
            same_units &= units[0] == units[1]
        row = {"quality": q, "images": len(files), "identical_units": same_units, "identical_pixels": same_pixels}
        for m in models:
            p, s = np.mean(quality[m], axis=0)
            row.update({f"{m}_bpp": 8 * sizes[m] / pixels, f"{m}_psnr": float(p), f"{m}_ms_ssim": float(s),
                        f"{m}_decode_s": dec_s[m]})
        row["size_change"] = sizes[args.model] / sizes[args.base] - 1
        row["psnr_change"] = row[f"{args.model}_psnr"] - row[f"{args.base}_psnr"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = (f"python scripts/walloc_compare.py --data {args.data} --out {args.out}"
           + "".join(f" --{k} {v}" for k, v, d in (("codec", args.codec, "walloc"),
                                                   ("base", args.base, "walloc-image-v2"),
                                                   ("model", args.model, "walloc-image-v3"),
                                                   ("qualities", args.qualities, "0,25,50,75,100")) if v != d))
    (out / "results.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
