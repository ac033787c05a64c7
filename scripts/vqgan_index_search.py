"""Would vqgan's encoder do better choosing indices by the decoded image instead of the nearest codeword?

    python scripts/vqgan_index_search.py --out docs/results/vqgan-index-search [--rung 3] [--images 4]

vqgan codes each 16 x 16 block by the codeword nearest its latent. Here, for each position, the C = 6 codewords
nearest the latent are candidates, and a coordinate search decodes the whole image with the positions of one
phase (every third row and column: 9 phases) set to their c-th candidate, keeping per position the candidate that
lowers a local error (the block and 8 pixels around it) the most; two sweeps. Two local errors: squared error,
and a multi-scale SSIM loss (1 - SSIM of 11-tap Gaussian windows at full, half and quarter resolution, which is
what the issue's MS-SSIM target weighs). Payload bytes from the codec's own index coding (version 3, adaptive) of
the chosen indices, PSNR and MS-SSIM from the decoded pixels. Kodak images 1, 7, 13, 19 by default. Decoding
stays as it is: this is an encoder-only change, and not shipped.

Also measured (``--prior``, Kodak 1, 4, .., 22 at K = 128 and 1024): the masked-index transformer as the prior of
phase groups 1-3, each given the groups before it: its cross-entropy against the bits the codec's adaptive
coding spends on those groups.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ncodec import zoo  # noqa: E402
from ncodec.bench.metrics import ms_ssim, psnr  # noqa: E402
from ncodec.codecs.vqgan import PHASES, VqganModel  # noqa: E402
from ncodec.codecs.vqgan_net import encode_indices, rung_logprobs  # noqa: E402

KODAK = ROOT.parent / "shared/corpus/eval/images/kodak"
CANDIDATES, STRIDE, SWEEPS = 6, 3, 2


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    k = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None].repeat(3, 1, 1, 1)
    f = lambda t: F.conv2d(F.pad(t, (5, 5, 5, 5), mode="replicate"), k, groups=3)  # noqa: E731
    ma, mb = f(a), f(b)
    va, vb, cab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * ma * mb + c1) * (2 * cab + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))).mean(1, keepdim=True)


def local_error(y: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per 16 x 16 block (h, w): the error around it (its block and 8 pixels on every side)."""
    if kind == "mse":
        e = ((y - x) ** 2).sum(1, keepdim=True)
    else:
        e = 0
        for lv in range(3):
            a, b = (F.avg_pool2d(y, 2**lv), F.avg_pool2d(x, 2**lv)) if lv else (y, x)
            m = 1 - ssim_map(a, b)
            e = e + (F.interpolate(m, scale_factor=2**lv, mode="nearest") if lv else m)
    return F.avg_pool2d(F.pad(e, (8, 8, 8, 8), mode="replicate"), 32, 16)[0, 0]


@torch.no_grad()
def search(model: VqganModel, x: torch.Tensor, r: int, kind: str | None) -> np.ndarray:
    cb = model.codebooks[r]
    z = model.net.analysis(x)[0].permute(1, 2, 0)
    cand = ((z[:, :, None, :] - cb[None, None]) ** 2).sum(-1).topk(CANDIDATES, dim=-1, largest=False).indices
    idx = cand[:, :, 0].clone()
    if kind is None:
        return idx.numpy()
    decode = lambda i: model.net.synthesis(cb[i].permute(2, 0, 1)[None]).clamp(0, 1)  # noqa: E731
    h, w = idx.shape
    for _ in range(SWEEPS):
        for py in range(STRIDE):
            for px in range(STRIDE):
                mask = torch.zeros(h, w, dtype=torch.bool)
                mask[py::STRIDE, px::STRIDE] = True
                best, best_err = idx.clone(), local_error(decode(idx), x, kind)
                for c in range(CANDIDATES):
                    trial = torch.where(mask, cand[:, :, c], idx)
                    err = local_error(decode(trial), x, kind)
                    better = mask & (err < best_err) & (trial != idx)
                    best, best_err = torch.where(better, trial, best), torch.where(better, err, best_err)
                idx = best
    return idx.numpy()


@torch.no_grad()
def transformer_prior(model: VqganModel, r: int) -> dict:
    """Bits of phase groups 0-3 as coded, and the transformer's cross-entropy of groups 1-3."""
    coded, tf = np.zeros(4), np.zeros(4)
    for i in range(1, 25, 3):
        img = np.asarray(Image.open(KODAK / f"kodim{i:02d}.png").convert("RGB"))
        idx = encode_indices(model.net, torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255,
                             model.codebooks[r])[0].numpy()
        group = np.zeros(idx.shape, np.int64)
        for g, (py, px) in enumerate(PHASES):
            group[py::2, px::2] = g
            coded[g] += 8 * len(model.encode_group(np.ascontiguousarray(idx[py::2, px::2]), r))
        for g in range(1, 4):
            known = group < g
            lat = model.codebooks[r][torch.from_numpy(np.where(known, idx, 0))]
            lp = rung_logprobs(model.tf(lat[None], torch.from_numpy(known)[None]), model.maps[r], model.cfg.rungs[r])
            mine = torch.from_numpy(group[~known] == g)  # the unknown positions in torch.nonzero order
            tf[g] -= float(lp[mine].gather(1, torch.from_numpy(idx[~known][mine.numpy()])[:, None]).sum()) / np.log(2)
    return {"K": model.cfg.rungs[r], "coded_bits_per_group": coded.tolist(), "transformer_bits_groups_1_3": tf.tolist(),
            "saving_groups_1_3": round(1 - tf[1:].sum() / coded[1:].sum(), 4),
            "saving_file_payload": round(1 - (coded[0] + tf[1:].sum()) / coded.sum(), 4)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rung", type=int, default=3, help="ladder rung (3: K = 128, about 0.027 bpp)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--prior", action="store_true", help="only the transformer-prior measurement")
    a = ap.parse_args()
    model = VqganModel.from_card(zoo.find("vqgan", "image", "vqgan-image-v1"))
    if a.prior:
        rows = [transformer_prior(model, r) for r in (model.cfg.rungs.index(128), model.cfg.rungs.index(1024))]
        print(json.dumps(rows, indent=1))
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "prior.json").write_text(json.dumps({"command": "python scripts/vqgan_index_search.py "
                                                    + " ".join(sys.argv[1:]), "rows": rows}, indent=1))
        return
    rows = []
    for i in range(1, 25, 24 // a.images)[: a.images]:
        img = np.asarray(Image.open(KODAK / f"kodim{i:02d}.png").convert("RGB"))
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
        for kind in (None, "mse", "ms-ssim"):
            t0 = time.time()
            idx = search(model, x, a.rung, kind)
            secs = time.time() - t0
            payload = sum(len(model.encode_group(np.ascontiguousarray(idx[py::2, px::2]), a.rung)) for py, px in PHASES)
            with torch.no_grad():
                y = model.net.synthesis(model.codebooks[a.rung][torch.from_numpy(idx)].permute(2, 0, 1)[None])
            out = (y.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().byte().numpy()
            rows.append({"image": f"kodim{i:02d}", "search": kind or "nearest", "payload_bpp":
                         8 * payload / img.shape[0] / img.shape[1], "psnr": psnr(img, out), "ms_ssim": ms_ssim(img, out),
                         "seconds": secs})
            print(json.dumps(rows[-1]), flush=True)
    means = {k: {m: round(float(np.mean([r[m] for r in rows if r["search"] == k])), 4)
                 for m in ("payload_bpp", "psnr", "ms_ssim", "seconds")} for k in ("nearest", "mse", "ms-ssim")}
    print(json.dumps(means, indent=1))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"command": "python scripts/vqgan_index_search.py "
                                                  + " ".join(sys.argv[1:]), "rung": a.rung,
                                                  "K": model.cfg.rungs[a.rung], "means": means, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
