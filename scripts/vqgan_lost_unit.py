"""Kodak: one whole unit (phase group 1, a quarter of the indices) lost from vqgan files at quality 100, with and
without redundancy units; PSNR / MS-SSIM against the undamaged decode of the same file.

    python scripts/vqgan_lost_unit.py --data ../shared/corpus/eval/images/kodak --out docs/results/vqgan-lost-unit
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quality", type=float, default=100.0)
    ap.add_argument("--redundancy", default="0,16,32", help="cluster counts to compare (0: none)")
    ap.add_argument("--lost-group", type=int, default=1)
    args = ap.parse_args()
    from PIL import Image

    import ncodec
    from ncodec import container
    from ncodec.bench.metrics import ms_ssim, psnr

    rows = []
    for p in sorted(Path(args.data).glob("*.png")):
        img = np.asarray(Image.open(p).convert("RGB"))
        for k in (int(v) for v in args.redundancy.split(",")):
            blob = ncodec.encode(img, codec="vqgan", quality=args.quality, options={"redundancy": k} if k else None)
            clean = ncodec.decode(blob).data
            f = container.read(blob)
            damaged = ncodec.decode(container.write(f.header, [u for u in f.units if u.key[1] != args.lost_group])).data
            rows.append({"image": p.name, "redundancy": k, "bpp": 8 * len(blob) / (img.shape[0] * img.shape[1]),
                         "psnr": psnr(img, clean), "ms_ssim": ms_ssim(img, clean),
                         "d_psnr": psnr(img, damaged) - psnr(img, clean),
                         "d_ms_ssim": ms_ssim(img, damaged) - ms_ssim(img, clean)})
    lines = [f"| clusters | bpp | PSNR, MS-SSIM undamaged | group {args.lost_group} lost: dPSNR, dMS-SSIM |",
             "|---|---|---|---|"]
    summary = []
    for k in sorted({r["redundancy"] for r in rows}):
        rs = [r for r in rows if r["redundancy"] == k]
        m = {key: float(np.mean([r[key] for r in rs])) for key in ("bpp", "psnr", "ms_ssim", "d_psnr", "d_ms_ssim")}
        summary.append({"redundancy": k, **m})
        lines.append(f"| {k or '-'} | {m['bpp']:.4f} | {m['psnr']:.2f}, {m['ms_ssim']:.4f} "
                     f"| {m['d_psnr']:+.2f}, {m['d_ms_ssim']:+.4f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/vqgan_lost_unit.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    (out / "results.json").write_text(json.dumps({"command": command, "summary": summary, "rows": rows}, indent=1) + "\n")
    (out / "README.md").write_text(f"# vqgan, one unit lost (Kodak)\n\n`{command}`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
