"""Does the phase reconstruction hold rvq-audio-v2 back? PESQ-WB of Griffin-Lim from different starting phases.

    python scripts/rvq_phase_start.py [--files 8] [--levels 12]

Every 19th LibriSpeech file of ../shared/corpus/train/audio/speech (first 8 s), coded with ``--levels`` codebooks
(no container). Griffin-Lim runs on the decoded magnitudes from: the seeded random phase (what codec versions 2
and 3 start from), and harmonic phases integrated from the decoded fundamental (argmax of its softmax; each bin
takes the phase of its nearest harmonic, + pi k for the frame's non-centred window), at 0 / 16 / 32 iterations;
then the same two starts on the *original* magnitudes (the ceiling of magnitude-only coding).
"""
from __future__ import annotations

import argparse
import glob
import math
from pathlib import Path

import numpy as np


def main():
    import soundfile as sf
    import torch
    from pesq import pesq

    from ncodec import zoo
    from ncodec.codecs.rvq import RvqModel
    from ncodec.codecs.rvq_net import griffin_lim, stft_frames

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--levels", type=int, default=12)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[2] / "shared/corpus/train/audio/speech"
    files = sorted(glob.glob(str(root / "**/*.flac"), recursive=True))[::19][: args.files]
    model = RvqModel.from_card(zoo.find("rvq", "audio", "rvq-audio-v2"))
    cfg, dec = model.cfg, model.net.decoder
    f0s = torch.logspace(math.log10(cfg.f0_min), math.log10(cfg.f0_max), cfg.f0_bins)
    bins = cfg.n_fft // 2 + 1
    k = torch.arange(bins, dtype=torch.float32)

    def harmonic(logits):
        f0 = f0s[logits.argmax(-1)]  # (1, frames)
        turns = torch.cumsum(2 * math.pi * f0 * cfg.step / cfg.rate, -1)[..., None]
        h = torch.clamp(torch.round(k * cfg.rate / cfg.n_fft / f0[..., None]), min=1)
        return h * turns + math.pi * k

    def random(mag):
        gen = torch.Generator().manual_seed(0)
        return torch.rand(mag.shape, generator=gen) * (2 * math.pi)

    scores = {}
    for path in files:
        x, _ = sf.read(path, dtype="float32")
        x = x[: 8 * 16000]
        x = x[: len(x) // cfg.hop * cfg.hop]
        codes = model.encode_frames(x, args.levels)
        with torch.no_grad():
            q = model.net.quantizer.decode(torch.from_numpy(codes.astype(np.int64))[None])
            _, logits = dec.logmag(q, with_f0=True)
            mag = dec.magnitudes(q)
            true = stft_frames(torch.from_numpy(x)[None], cfg.n_fft, cfg.step, dec.window).abs()
            runs = {f"random start, {n} iterations": (mag, random(mag), n) for n in (16, 24, 32, 64)}
            runs.update({f"harmonic start, {n} iterations": (mag, harmonic(logits), n) for n in (0, 16, 32)})
            runs["original magnitudes, random start, 32"] = (true, random(true), 32)
            runs["original magnitudes, harmonic start, 32"] = (true, harmonic(logits), 32)
            for name, (m, phase, n) in runs.items():
                y = griffin_lim(m, cfg.n_fft, cfg.step, dec.window, n, phase=phase)[0, 0].numpy()
                scores.setdefault(name, []).append(pesq(16000, x, y[: len(x)], "wb"))
    print(f"{len(files)} files, {args.levels} codebooks, PESQ-WB mean")
    for name, v in scores.items():
        print(f"{name:42s} {np.mean(v):.3f}")


if __name__ == "__main__":
    main()
