"""Where the pc image model spends its bits: per colour residual, for exactly-zero residuals, and per bin of green
error activity (context 0), computed from the shipped integer tables exactly as the encoder codes them.

    python scripts/pc_image_bits.py ../shared/corpus/eval/images/kodak/kodim20.png [--model pc-image-v2] [--every 1]
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from ncodec.codecs import pc_image as P
from ncodec.codecs.pc import PcCodec


def image_bits(tree: P.CondTree, img: np.ndarray, every: int = 1, chunk: int = 20000):
    """(contexts, symbols, bits) of every ``every``-th pixel: bits[:, i] = -log2 p of residual i (G, R, B)."""
    st = P.State.of_image(img)
    idx = np.arange(0, img.shape[0] * img.shape[1], every)
    ctx, sym = st.rows(idx)
    bits = np.zeros(sym.shape)
    for a in range(0, len(idx), chunk):
        c, s = ctx[a : a + chunk], sym[a : a + chunk]

        def step(i, pmf, s=s, a=a):
            bits[a : a + len(s), i] = -np.log2(P.probabilities(pmf)[np.arange(len(s)), s[:, i]])
            return s[:, i]

        tree.code(c, step)
    return ctx, sym, bits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--model", default=None, help="pc image model id (default: the newest installed)")
    ap.add_argument("--every", type=int, default=1, help="use every N-th pixel (faster)")
    args = ap.parse_args()
    card, tree = PcCodec().model(args.model, kind="image")
    for path in args.images:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        ctx, sym, bits = image_bits(tree, img, args.every)
        zero = sym == 128
        print(f"{path} ({card.id}): {bits.sum(1).mean():.3f} bits/pixel of residuals (header and alpha not counted)")
        for i, name in enumerate("GRB"):
            z = bits[zero[:, i], i]
            print(f"  {name}: {bits[:, i].mean():.3f} bits; exactly 0 for {100 * zero[:, i].mean():.1f} % of pixels, "
                  f"costing {z.mean() if len(z) else 0:.3f} bits each")
        print("  activity bin | pixels % | bits/pixel | bits %   (G, R, B bits)")
        for b in np.unique(ctx[:, 0]):
            m = ctx[:, 0] == b
            g, r, bl = bits[m].mean(0)
            print(f"  {b:12d} | {100 * m.mean():8.1f} | {bits[m].sum(1).mean():10.3f} | "
                  f"{100 * bits[m].sum() / bits.sum():6.1f}   ({g:.2f}, {r:.2f}, {bl:.2f})")


if __name__ == "__main__":
    main()
