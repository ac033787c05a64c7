"""Would mcquic's encoder choose better indices under the decoder's own metric instead of plain squared latent error?

    python scripts/mcquic_metric.py --out docs/results/mcquic-metric

The beam search (``McquicNet._beam_paths``) ranks candidate codewords by the squared error of the fine latent, but
a latent error e costs about e' M e in pixels, with M = E[J' J] the synthesis's Jacobian Gram matrix. Here M is
estimated per codebook count n on 6 training photos (Hutchinson probes: M ~ E[g g'] for g = J' v, v ~ N(0, I)
over the output), factored per codebook group (M_kk = L L'), and the shipped search runs on r L against codebooks
C L, so its distances are M's within each group (the quarter of M's weight across the groups is left out).
Kodak images 2, 5, ..., 23 at the bench's 9 qualities, bpp from whole files: per-image BD-rate of the metric
encoder against the shipped one (results.json), and the latent and pixel errors at n = 8 and 16 on kodim05.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ncodec  # noqa: E402
from ncodec import zoo  # noqa: E402
from ncodec.bench.metrics import bd_rate, psnr  # noqa: E402
from ncodec.codecs.mcquic import McquicModel  # noqa: E402
from ncodec.codecs.mcquic_net import BEAM_CHUNK, McquicNet, from_vectors, to_vectors  # noqa: E402

CORPUS = ROOT.parent / "shared/corpus"
QUALITIES = [0, 13, 27, 40, 53, 67, 80, 93, 100]


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255


def metric(net, images, n: int, probes: int = 8, crop: int = 256) -> torch.Tensor:
    """E[J' J] (ch x ch) of the synthesis at the fine latent, averaged over positions, images and probes."""
    gen = torch.Generator().manual_seed(0)
    m = torch.zeros(net.cfg.ch, net.cfg.ch)
    for img in images:
        x, nn_ = tensor(img[:crop, :crop]), torch.tensor([n])
        with torch.no_grad():
            y1, _ = net.analysis(x, nn_)
        y1 = y1.clone().requires_grad_(True)
        out = net.synthesis(y1, nn_)
        for _ in range(probes):
            (g,) = torch.autograd.grad(out, y1, torch.randn(out.shape, generator=gen), retain_graph=True)
            g = g[0].reshape(net.cfg.ch, -1)
            m += g @ g.T / g.shape[1]
    return m / (probes * len(images))


def group_factors(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky factors L_k (M_kk = L_k L_k') of the two codebook groups' diagonal blocks of metric ``m``."""
    d = m.shape[0] // 2
    return torch.linalg.cholesky(m[:d, :d]), torch.linalg.cholesky(m[d:, d:])


def use_metric(factors: dict) -> None:
    """Make the fine scale's beam search rank by the metric of ``factors[n]``: the shipped search, run on the
    residual vectors and the codebooks of each group mapped by its L_k (Euclidean distances there are the
    metric's). Only the indices are kept (the fine scale's returned latent is not used by ``encode_codes``)."""
    shipped = McquicNet._beam_codes_of_scale

    def beam_codes(self, y, first, stages, n, cbs, codes, code_bits, alpha, beam, chunk=BEAM_CHUNK):
        if first != self.cfg.n_coarse or n not in factors:
            return shipped(self, y, first, stages, n, cbs, codes, code_bits, alpha, beam, chunk)
        g = self.cfg.groups
        v = to_vectors(y, g)
        mapped = from_vectors(torch.stack([v[k] @ factors[n][k] for k in range(g)]), y.shape)
        cbs_mapped = torch.stack([cb @ factors[n][self.cfg.codebook(j)[2]] for j, cb in enumerate(cbs)])
        return shipped(self, mapped, first, stages, n, cbs_mapped, codes, code_bits, alpha, beam, chunk)

    McquicNet._beam_codes_of_scale = beam_codes


def curve(paths) -> list[dict]:
    rows = []
    for p in paths:
        img = load(p)
        for q in QUALITIES:
            blob = ncodec.encode(img, codec="mcquic", quality=q)
            rows.append({"image": Path(p).name, "quality": q, "bpp": 8 * len(blob) / img.shape[0] / img.shape[1],
                         "psnr": psnr(img, ncodec.decode(blob).data)})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = McquicModel.from_card(zoo.find("mcquic", "image", "mcquic-image-v2"))
    net = model.net
    train = [load(p) for p in sorted(glob.glob(str(CORPUS / "train/images/sun_hays80/*")))[:6]]
    metrics = {n: metric(net, train, n) for n in range(net.cfg.n_coarse + 1, net.cfg.n_codebooks + 1)}
    kodak = [CORPUS / f"eval/images/kodak/kodim{i:02d}.png" for i in range(2, 25, 3)]
    report = {"command": "python scripts/mcquic_metric.py " + " ".join(sys.argv[1:])}
    for name, m in (("group 0", metrics[16][:64, :64]), ("group 1", metrics[16][64:, 64:])):
        e = torch.linalg.eigvalsh(m)
        report[f"metric n=16 {name}: eigenvalue max / min"] = round(float(e[-1] / e[0]), 1)
    x = tensor(load(kodak[1]))
    errors = {}

    @torch.no_grad()
    def measure(label):
        for n in (8, 16):
            nn_ = torch.tensor([n])
            codes = net.encode_codes(x, n, model.cbs, model.code_bits, 0.5, 4)
            yh = net.latent_of_codes(codes, (x.shape[2] // 8, x.shape[3] // 8), model.cbs)
            y1, _ = net.analysis(x, nn_)
            e = (yh - y1)[0].reshape(net.cfg.ch, -1)
            pix = float(((net.synthesis(yh, nn_).clamp(0, 1) - x) ** 2).mean())
            errors[f"kodim05 n={n} {label}"] = {"latent squared error": round(float((e**2).sum(0).mean()), 4),
                                                "metric error": round(float(((e.T @ metrics[n]) * e.T).sum(1).mean()), 6),
                                                "pixel PSNR": round(-10 * float(np.log10(pix)), 3)}
        return curve(kodak)

    base = measure("shipped")
    use_metric({n: group_factors(m) for n, m in metrics.items()})
    new = measure("metric")
    report["errors"] = errors
    per_image = {}
    for img in sorted({r["image"] for r in base}):
        ra, rb = [r for r in base if r["image"] == img], [r for r in new if r["image"] == img]
        per_image[img] = round(bd_rate([r["bpp"] for r in ra], [r["psnr"] for r in ra],
                                       [r["bpp"] for r in rb], [r["psnr"] for r in rb]), 2)
    report["BD-rate of the metric encoder vs shipped, per image (%)"] = per_image
    report["mean"] = round(float(np.mean(list(per_image.values()))), 2)
    report["per quality (bpp, PSNR): shipped -> metric"] = {
        q: [round(np.mean([r["bpp"] for r in base if r["quality"] == q]), 4),
            round(np.mean([r["psnr"] for r in base if r["quality"] == q]), 3),
            round(np.mean([r["bpp"] for r in new if r["quality"] == q]), 4),
            round(np.mean([r["psnr"] for r in new if r["quality"] == q]), 3)] for q in QUALITIES}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**report, "rows": {"shipped": base, "metric": new}}, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
