"""Does vqgan's encoder do better choosing indices by the decoded image instead of the nearest codeword?

    python scripts/vqgan_index_search.py --out docs/results/vqgan-index-search [--rung 3] [--images 24]

The codec's ``search`` option (``VqganModel.search_indices``, module docstring of ncodec.codecs.vqgan): for each
position the 6 codewords nearest its latent are candidates; a coordinate search decodes the whole tile with the
positions of one phase (every third row and column: 9 phases) set to their c-th candidate and keeps per position
the candidate that lowers the local error (the block and 8 pixels around it) the most; two sweeps. Two local
errors: squared ("mse") and 1 - SSIM on five scales weighted as MS-SSIM weighs them ("ms-ssim"). Through the
real codec: bpp from whole .nc files, PSNR and MS-SSIM of their decodes, encode seconds on this machine (one
image at a time, torch's threads). Decoding is unchanged: an encoder-only option.

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
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ncodec  # noqa: E402
from ncodec import zoo  # noqa: E402
from ncodec.bench.metrics import ms_ssim, psnr  # noqa: E402
from ncodec.codecs.vqgan import PHASES, VqganModel  # noqa: E402
from ncodec.codecs.vqgan_net import encode_indices, rung_logprobs  # noqa: E402

KODAK = ROOT.parent / "shared/corpus/eval/images/kodak"


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
    ap.add_argument("--images", type=int, default=24)
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
    quality = 100.0 * (1 - a.rung / (len(model.cfg.rungs) - 1))
    for i in range(1, 25, 24 // a.images)[: a.images]:
        img = np.asarray(Image.open(KODAK / f"kodim{i:02d}.png").convert("RGB"))
        for kind in ("nearest", "mse", "ms-ssim"):
            t0 = time.time()
            blob = ncodec.encode(img, codec="vqgan", quality=quality, options={"search": kind})
            secs = time.time() - t0
            out = ncodec.decode(blob).data
            rows.append({"image": f"kodim{i:02d}", "search": kind, "bpp": 8 * len(blob) / img.shape[0] / img.shape[1],
                         "psnr": psnr(img, out), "ms_ssim": ms_ssim(img, out), "encode_s": secs})
            print(json.dumps(rows[-1]), flush=True)
    means = {k: {m: round(float(np.mean([r[m] for r in rows if r["search"] == k])), 4)
                 for m in ("bpp", "psnr", "ms_ssim", "encode_s")} for k in ("nearest", "mse", "ms-ssim")}
    print(json.dumps(means, indent=1))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"command": "python scripts/vqgan_index_search.py "
                                                  + " ".join(sys.argv[1:]), "rung": a.rung,
                                                  "K": model.cfg.rungs[a.rung], "means": means, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
