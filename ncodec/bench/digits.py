"""Lossless digit-set benchmark (MNIST-type): the pc codec stores the whole set in one multi-item file;
PNG, WebP lossless and JPEG XL lossless store it one file per digit and as one tiled image. Bits per
dimension come from the bytes of the files written (the .nc header and item names included); every decode is
checked bit-exact."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .lossless import CODECS as CLASSICAL, SETTINGS, run_one


def load_digits(data: Path, start: int, count: int) -> np.ndarray:
    from ..train.pc import load_mnist

    imgs = load_mnist(data)
    if not 0 <= start < len(imgs):
        from ..errors import BadInput

        raise BadInput(f"--first {start} is outside the {len(imgs)} images of {data}")
    return imgs[start : start + count]


def _classical(name: str, img: np.ndarray) -> tuple[int, float, float, bool]:
    r = run_one(name, img)
    return r["bytes"], r["enc_s"], r["dec_s"], r["exact"]


def tile(imgs: np.ndarray, cols: int = 20) -> np.ndarray:
    n, h, w = imgs.shape
    rows = -(-n // cols)
    canvas = np.zeros((rows * h, cols * w), np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
    return canvas


def run_digits(codecs: list[str], data: Path, out: Path, start: int = 8000, count: int = 200,
               command: str = "", progress=None) -> dict:
    import ncodec

    imgs = load_digits(data, start, count)
    dims = imgs.size
    results = {}
    for c in codecs:
        if c in CLASSICAL:
            per = [_classical(c, im) for im in imgs]
            tb, te, td, tex = _classical(c, tile(imgs))
            results[c] = {"bits_per_dim": 8 * sum(p[0] for p in per) / dims, "exact": all(p[3] for p in per) and tex,
                          "tiled_bits_per_dim": 8 * tb / dims,
                          "encode_items_s": len(imgs) / sum(p[1] for p in per),
                          "decode_items_s": len(imgs) / sum(p[2] for p in per),
                          "setting": SETTINGS[c]}
        else:
            ncodec.decode_items(ncodec.encode_items(list(imgs[:1]), codec=c))  # load the model outside the timing
            t0 = time.perf_counter()
            blob = ncodec.encode_items(list(imgs), codec=c)
            t1 = time.perf_counter()
            back = ncodec.decode_items(blob)
            t2 = time.perf_counter()
            bare = ncodec.encode_items(list(imgs), codec=c, names=[""] * len(imgs))
            exact = all(np.array_equal(a[:, :, 0], im) for (_, a), im in zip(back, imgs))
            inf = ncodec.info(blob)
            results[c] = {"bits_per_dim": 8 * len(blob) / dims, "exact": exact, "file_bytes": len(blob),
                          "bits_per_dim_without_names": 8 * len(bare) / dims,
                          "encode_items_s": len(imgs) / (t1 - t0), "decode_items_s": len(imgs) / (t2 - t1),
                          "setting": f"one multi-item file, model {inf.model}"}
        if progress:
            progress(codecs.index(c) + 1, len(codecs), {"codec": c, **results[c]})
    summary = {"data": str(data), "items": f"{start}..{start + len(imgs) - 1}", "count": len(imgs),
               "command": command, "date": time.strftime("%Y-%m-%d"), "codecs": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "results.md").write_text(digits_markdown(summary))
    return summary


def digits_markdown(summary: dict) -> str:
    lines = [f"Data: `{summary['data']}` images {summary['items']} ({summary['count']} digits, 28x28, 8-bit). "
             f"Command: `{summary['command']}`", "",
             "| codec | bits/dim (one file per digit; pc: one set file) | bits/dim, one tiled image | exact | "
             "encode digits/s | decode digits/s |", "|---|---|---|---|---|---|"]
    for c, e in summary["codecs"].items():
        tiled = f"{e['tiled_bits_per_dim']:.3f}" if "tiled_bits_per_dim" in e else "-"
        lines.append(f"| {c} | {e['bits_per_dim']:.3f} | {tiled} | {e['exact']} | {e['encode_items_s']:.0f} | "
                     f"{e['decode_items_s']:.0f} |")
    lines += ["", "Settings: " + "; ".join(f"{k}: {v['setting']}" for k, v in summary["codecs"].items())]
    pcs = [c for c, e in summary["codecs"].items() if "bits_per_dim_without_names" in e]
    for c in pcs:
        e = summary["codecs"][c]
        lines.append(f"\n{c}: {e['file_bytes']} bytes; {e['bits_per_dim_without_names']:.3f} bits/dim when the item "
                     f"names are left out.")
    return "\n".join(lines) + "\n"
