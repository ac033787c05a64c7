"""How codec version 3's rvq postfilter was chosen: PESQ-WB, STOI and mel distance by contrast setting.

    python scripts/rvq_postfilter.py [--levels 12] [--model rvq-audio-v2] [--settings 17x1.15,9x1.3,...]

Training audio only (never the eval set): every 19th LibriSpeech file from the 4th (first 8 s) and the first six
music files of ../shared/corpus/train/audio/music (first 10 s, resampled to 16 kHz), coded with ``--levels``
codebooks of ``--model`` (no container) and decoded by Griffin-Lim (32 iterations) from the plain decoded
magnitudes and from ``rvq_net.postfilter`` at several (bins, gain) settings. Shipped: 9 bins, gain 1.3.
"""
from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np


def main():
    import soundfile as sf
    import torch
    from pesq import pesq
    from pystoi import stoi
    from scipy.signal import resample_poly

    from ncodec import zoo
    from ncodec.bench.audio import mel_distance
    from ncodec.codecs import rvq_net
    from ncodec.codecs.rvq import RvqModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", type=int, default=12)
    ap.add_argument("--model", default="rvq-audio-v2", help="installed rvq model (the setting was chosen on v2)")
    ap.add_argument("--settings", default="17x1.15,17x1.3,17x1.5,9x1.3",
                    help="postfilter settings BINSxGAIN to compare with none (stop 28's by default)")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[2] / "shared/corpus/train/audio"
    speech = sorted(glob.glob(str(root / "speech/**/*.flac"), recursive=True))[3::19][:8]
    music = [m for m in sorted(glob.glob(str(root / "music/**/*.*"), recursive=True))
             if m.endswith((".flac", ".wav"))][:6]
    model = RvqModel.from_card(zoo.find("rvq", "audio", args.model))
    cfg, dec = model.cfg, model.net.decoder
    settings = [None] + [(int(b), float(g)) for b, g in (t.split("x") for t in args.settings.split(","))]

    def decodes(x):
        x = x[: len(x) // cfg.hop * cfg.hop]
        q = model.net.quantizer.decode(torch.from_numpy(model.encode_frames(x, args.levels).astype(np.int64))[None])
        out, shipped = {}, (rvq_net.POST_BINS, rvq_net.POST_GAIN)
        with torch.no_grad():
            for s in settings:
                rvq_net.POST_BINS, rvq_net.POST_GAIN = s or shipped
                mag = dec.magnitudes(q, post=s is not None)
                out[s] = rvq_net.griffin_lim(mag, cfg.n_fft, cfg.step, dec.window, cfg.gl_iters)[0, 0].numpy()
        rvq_net.POST_BINS, rvq_net.POST_GAIN = shipped
        return x, out

    res = {}
    for path in speech:
        x, _ = sf.read(path, dtype="float32")
        x, out = decodes(x[: 8 * 16000])
        for s, y in out.items():
            r = res.setdefault(s, {"pesq": [], "stoi": [], "mel": [], "music mel": []})
            r["pesq"].append(pesq(16000, x, y, "wb"))
            r["stoi"].append(stoi(x, y, 16000))
            r["mel"].append(mel_distance(x[:, None], y[:, None], 16000))
    for path in music:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        x = x.mean(1)[: 10 * sr]
        x = resample_poly(x, 16000, sr).astype(np.float32) if sr != 16000 else x
        x, out = decodes(x)
        for s, y in out.items():
            res[s]["music mel"].append(mel_distance(x[:, None], y[:, None], 16000))
    print(f"{args.model}: {len(speech)} speech + {len(music)} music files, {args.levels} codebooks; means")
    print("postfilter (bins, gain) | speech PESQ-WB | STOI | mel distance | music mel distance")
    for s, r in res.items():
        print(f"{str(s or 'none'):23s} | {np.mean(r['pesq']):.3f} | {np.mean(r['stoi']):.3f} | "
              f"{np.mean(r['mel']):.4f} | {np.mean(r['music mel']):.4f}")


if __name__ == "__main__":
    main()
