"""Does fine-tuning the ladder rungs help? Each rung's fine-tuned codebook against the same k-means start
(recomputed exactly as ncodec.train.vqgan.ladder does), on Kodak, nearest-codeword indices.

    python scripts/vqgan_ladder.py --run runs/vqgan --data ../shared/corpus/eval/images/kodak --out docs/results/vqgan-ladder
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--step", type=int, default=1, help="use every N-th image")
    args = ap.parse_args()
    from PIL import Image

    from ncodec.bench.metrics import ms_ssim, psnr
    from ncodec.codecs.mcquic_net import nearest
    from ncodec.codecs.vqgan_net import encode_indices
    from ncodec.train import vqgan
    from ncodec.train.mcquic import kmeans

    run = Path(args.run)
    net = vqgan.load_autoencoder(run)
    rungs = vqgan.load_ladder(run)
    big = net.vq.embed.clone()
    sampler, _ = vqgan._sampler(None, 128, 777)  # the ladder's usage count: same crops, same seed
    z = vqgan._latents(net, sampler, 512).reshape(-1, net.cfg.dim)
    usage = torch.bincount(nearest(z, big), minlength=net.cfg.codebook_size).double()
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(args.data).glob("*.png"))[:: args.step]]
    rows = []
    for rung in rungs[1:]:
        k = rung["k"]
        _, cent = kmeans(big.double().numpy(), k, iters=30, seed=k, weights=usage.numpy(), centroids=True)
        res = {"k": k}
        for name, cb in (("kmeans", torch.from_numpy(cent).float()), ("fine_tuned", rung["codebook"])):
            ps, ms = [], []
            for img in images:
                x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
                with torch.no_grad():
                    y = net.decode_latent(cb, encode_indices(net, x, cb)).clamp(0, 1)
                d = (y[0] * 255).round().byte().permute(1, 2, 0).numpy()
                ps.append(psnr(img, d))
                ms.append(ms_ssim(img, d))
            res[f"{name}_psnr"], res[f"{name}_ms_ssim"] = float(np.mean(ps)), float(np.mean(ms))
        rows.append(res)
        print(json.dumps(res), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"command": "python scripts/vqgan_ladder.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items()), "images": len(images), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
