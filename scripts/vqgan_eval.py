"""Kodak evaluation of the vqgan codec: every ladder rung against AVIF at twice the bytes, bits per index
(as coded, under the static context tables, the marginal, log2 K), and lost-index recovery (transformer vs neighbour interpolation).

    python scripts/vqgan_eval.py --data ../shared/corpus/eval/images/kodak --out docs/results/vqgan-kodak

Per image and rung: the .nc file's bytes (header included), PSNR, MS-SSIM; AVIF (Pillow libavif, 4:4:4, speed 6)
is run at qualities 0..40 on the same image and its MS-SSIM interpolated (linear in log bytes) at twice the
vqgan file's bytes; "below AVIF's range" when AVIF's smallest file is larger than that. With ``--drop`` the
decode is repeated with that fraction of indices dropped (seed 0): with the transformer, and with the neighbour
interpolation used when a model has none. With ``--redundancy K`` the files carry the clusters of the indices
among K codewords (the codec's redundancy units; their bits are in the file size and in ``bits_redundancy``),
and the drop removes that fraction of the indices and, independently, of the clusters.
"""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

AVIF_QUALITIES = [0, 1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40]


def avif_curve(img):
    from PIL import Image

    from ncodec.bench.metrics import ms_ssim

    out = []
    for q in AVIF_QUALITIES:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "AVIF", quality=q, subsampling="4:4:4", speed=6)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out.append((len(buf.getvalue()), ms_ssim(img, dec)))
    return sorted(out)


def at_bytes(curve, target):
    sizes = np.log([c[0] for c in curve])
    if target < curve[0][0]:
        return None
    return float(np.interp(np.log(target), sizes, [c[1] for c in curve]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--drop", type=float, default=0.2)
    ap.add_argument("--qualities", default="0,14,29,43,57,71,86,100")
    ap.add_argument("--redundancy", type=int, default=None)
    args = ap.parse_args()
    from PIL import Image

    import ncodec
    from ncodec import container
    from ncodec.api import _codec
    from ncodec.bench.metrics import ms_ssim, psnr

    files = sorted(Path(args.data).glob("*.png"))[: args.limit]
    codec = _codec("vqgan")
    model = codec.model()
    qualities = [float(q) for q in args.qualities.split(",")]
    rows = []
    for p in files:
        img = np.asarray(Image.open(p).convert("RGB"))
        px = img.shape[0] * img.shape[1]
        curve = avif_curve(img)
        for q in qualities:
            t0 = time.perf_counter()
            blob = ncodec.encode(img, codec="vqgan", quality=q,
                                 options={"redundancy": args.redundancy} if args.redundancy else None)
            t1 = time.perf_counter()
            dec = ncodec.decode(blob).data
            t2 = time.perf_counter()
            f = container.read(blob)
            bits = codec.bits(f.header, f.units)
            row = {"image": p.name, "quality": q, "k": model.cfg.rungs[model.rung_of(q)], "bytes": len(blob),
                   "bpp": 8 * len(blob) / px, "psnr": psnr(img, dec), "ms_ssim": ms_ssim(img, dec),
                   "encode_s": t1 - t0, "decode_s": t2 - t1, "indices": bits["indices"],
                   "bits_context": bits["context_bits"] / bits["indices"],
                   "bits_payload": (bits["payload_bits"] - bits["redundancy_bits"]) / bits["indices"],
                   "bits_marginal": bits["marginal_bits"] / bits["indices"],
                   "bits_uniform": bits["uniform_bits"] / bits["indices"],
                   "bits_redundancy": bits["redundancy_bits"] / bits["indices"],
                   "avif_ms_ssim_at_2x": at_bytes(curve, 2 * len(blob)), "avif_min_bpp": 8 * curve[0][0] / px,
                   "avif_min_ms_ssim": curve[0][1]}
            if args.drop > 0:
                d = ncodec.decode(blob, drop_indices=args.drop, seed=0).data
                tf, model.tf = model.tf, None
                try:
                    n = ncodec.decode(blob, drop_indices=args.drop, seed=0).data
                finally:
                    model.tf = tf
                row.update({"drop_psnr": psnr(img, d), "drop_ms_ssim": ms_ssim(img, d),
                            "drop_neighbour_psnr": psnr(img, n), "drop_neighbour_ms_ssim": ms_ssim(img, n)})
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    summary = []
    for q in qualities:
        rs = [r for r in rows if r["quality"] == q]
        mean = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if isinstance(rs[0][k], float) and
                k != "avif_ms_ssim_at_2x"}
        avif = [r["avif_ms_ssim_at_2x"] for r in rs]
        mean["avif_ms_ssim_at_2x"] = float(np.mean(avif)) if all(a is not None for a in avif) else None
        mean["images_below_avif_range_at_2x"] = sum(a is None for a in avif)
        # where 2x the bytes is below AVIF's smallest file, compare with that file (more than 2x the bytes)
        mean["wins_vs_avif_at_2x"] = sum(r["ms_ssim"] >= (r["avif_min_ms_ssim"] if a is None else a)
                                         for r, a in zip(rs, avif))
        mean["k"] = rs[0]["k"]
        summary.append(mean)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"command": "python scripts/vqgan_eval.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if v is not None), "model": model_id(), "images": len(files),
        "summary": summary, "rows": rows}, indent=1) + "\n")
    lines = ["| K | bpp | PSNR | MS-SSIM | AVIF MS-SSIM at 2x bytes | AVIF lowest: bpp, MS-SSIM | wins / images | bits/index coded "
             "| context tables | marginal | log2 K | PSNR, MS-SSIM with {:.0%} dropped (transformer) | (neighbours) | enc s | dec s |".format(args.drop),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        avif = "-" if s["avif_ms_ssim_at_2x"] is None else f"{s['avif_ms_ssim_at_2x']:.4f}"
        lines.append(f"| {s['k']} | {s['bpp']:.4f} | {s['psnr']:.2f} | {s['ms_ssim']:.4f} | {avif} "
                     f"({s['images_below_avif_range_at_2x']} below AVIF's range) "
                     f"| {s['avif_min_bpp']:.4f}, {s['avif_min_ms_ssim']:.4f} | {s['wins_vs_avif_at_2x']}/{len(files)} "
                     f"| {s['bits_payload']:.2f} | {s['bits_context']:.2f} | {s['bits_marginal']:.2f} | {s['bits_uniform']:.0f} "
                     f"| {s.get('drop_psnr', 0):.2f}, {s.get('drop_ms_ssim', 0):.4f} "
                     f"| {s.get('drop_neighbour_psnr', 0):.2f}, {s.get('drop_neighbour_ms_ssim', 0):.4f} "
                     f"| {s['encode_s']:.2f} | {s['decode_s']:.2f} |")
    (out / "README.md").write_text("# vqgan on Kodak\n\n`" + json.loads((out / "results.json").read_text())["command"]
                                   + "`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def model_id():
    from ncodec import zoo

    return zoo.find("vqgan", "image").id


if __name__ == "__main__":
    main()
