"""Payload of the adaptive index coding (``ncodec/codecs/mcquic_kernel.py``) at several table weights A, for the
codecs that use it beside mcquic: vqgan (codec version 3) and rvq (codec version 4).

    python scripts/adaptive_weights.py --out docs/results/adaptive-weights

vqgan: the first 8 Kodak images (eval set), rungs K = 1024 / 128 / 16, every phase group's indices coded with the
static context tables (version 1, constriction) and adaptively at each A; payload bytes summed over images and
groups, varint word counts included. rvq: the eval audio (first 30 s of each file, mono mix at 16 kHz), 6 and 12
codebooks, in units of 256 frames as the codec cuts them; bits of the codes under version 3's coding (each row
with the cheaper of its counted table and the uniform one: the entropy of the static tables, no coder overhead)
and adaptively at each A (rows with their counted table; ``best base``: each row with whichever table codes it
shorter, as version 4's encoder chooses), against the nominal log2(K) bits per code.
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (128, 256, 512, 2048, 8192)


def vqgan_rows(data: Path) -> list[dict]:
    import torch

    from ncodec import zoo
    from ncodec.codecs.mcquic_kernel import encode_unit
    from ncodec.codecs.vqgan import PHASES, VqganModel, encode_indices
    from ncodec.media import read_image

    m = VqganModel.from_card(zoo.find("vqgan", "image", None))
    files = sorted(data.glob("*.png"))[:8]
    rows = []
    for r in (0, 3, 6):
        subs = []
        for f in files:
            img = read_image(f)
            h, w = img.shape[0] // 16 * 16, img.shape[1] // 16 * 16
            x = torch.from_numpy(img[:h, :w].copy()).permute(2, 0, 1)[None].float() / 255
            idx = encode_indices(m.net, x, m.codebooks[r])[0].numpy()
            subs += [idx[py::2, px::2] for py, px in PHASES]
        static = sum(len(m.encode_group(s, r, 1)) for s in subs)
        row = {"codec": "vqgan", "k": m.cfg.rungs[r], "images": len(files), "static_bytes": static}
        for a in WEIGHTS:
            n = sum(4 * len(encode_unit([(s.reshape(-1), np.zeros(0, np.int64), *s.shape)], m.adaptive_freqs(r),
                                        m.classes[r], m.n_classes(r), a)) + 1 for s in subs)
            row[f"A{a}"] = round(n / static - 1, 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def rvq_rows(data: Path) -> list[dict]:
    import scipy.signal
    import soundfile as sf

    from ncodec import zoo
    from ncodec.codecs.mcquic_kernel import encode_unit
    from ncodec.codecs.rvq import RvqModel

    m = RvqModel.from_card(zoo.find("rvq", "audio", None))
    rows = []
    for kind in ("speech", "music"):
        units = {6: [], 12: []}
        for f in sorted(glob.glob(str(data / kind / "*"))):
            x, sr = sf.read(f, dtype="float32")
            x = x.mean(1) if x.ndim > 1 else x
            if sr != m.cfg.rate:
                x = scipy.signal.resample_poly(x, m.cfg.rate, sr).astype(np.float32)
            for levels in units:
                codes = np.asarray(m.encode_frames(x[: m.cfg.rate * 30], levels)).reshape(levels, -1)
                units[levels] += [codes[:, a : a + 256] for a in range(0, codes.shape[1], 250)]
        for levels, us in units.items():
            nominal = sum(u.size for u in us) * np.log2(m.cfg.codebook_size)
            static = sum(m.bits[m.uniform if fl else k, u[k]].sum()
                         for u in us for k, fl in enumerate(m.cheaper_uniform(u[None], 3)))
            row = {"codec": "rvq", "audio": kind, "codebooks": levels, "units": len(us),
                   "static": round(float(static / nominal), 4)}

            def bits(u, t, a):
                return 32 * len(encode_unit([(u, np.full(len(u), t, np.int64), 1, len(u))], m.freqs, adapt=a))

            for a in WEIGHTS:
                plain = sum(32 * len(encode_unit([(u[k], np.full(u.shape[1], k, np.int64), 1, u.shape[1])
                                                  for k in range(levels)], m.freqs, adapt=a)) for u in us)
                best = sum(min(bits(u[k], k, a), bits(u[k], m.uniform, a)) for u in us for k in range(levels))
                row[f"A{a}"] = round(plain / nominal, 4)
                row[f"A{a}_best_base"] = round(best / nominal, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared/corpus/eval/images/kodak"))
    ap.add_argument("--audio", default=str(ROOT.parent / "shared/corpus/eval/audio"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = vqgan_rows(Path(args.kodak)) + rvq_rows(Path(args.audio))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
