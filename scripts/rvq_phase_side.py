"""What coded phase side information would buy the rvq codec: PESQ-WB against its bits per second.

    python scripts/rvq_phase_side.py [--model rvq-audio-v4] [--levels 6,12] [--out FILE]

Stop 31 (scripts/rvq_phase_limits.py) found the phase, not the coded magnitudes, to be what holds rvq back: the
decoded 6 kbps magnitudes with the input's own phase advances score PESQ-WB 4.16, with PGHI's estimate 3.09. Its
advances rounded to 3 bits each (all 32100 entries per second, open loop) gave 3.80, but that is ~100 kbps. This
study codes the phase *closed loop* and only where it matters:

- the decoder's heap integration (PGHI's rates from the decoded magnitudes, entries visited from the largest
  magnitude outwards, as codec version 5) is run by the encoder too; at each *selected* entry, when it is
  reached, the encoder sends the difference between the input's true phase and the phase the integration
  predicts there (the neighbour's phase plus PGHI's advance), rounded to one of L levels per turn; the decoder
  adds it. Every other entry takes the integration's phase from its (now corrected) neighbours. Errors cannot
  accumulate along the path: each coded entry is within half a level of the truth.
- selected entries: the spectral peaks of each frame (local maxima along frequency) within T dB of the frame's
  peak and within G dB of the clip's loudest entry, or every entry within those bounds;
- the cost is the empirical entropy of the rounded differences pooled over the clips (what an adaptive model
  approaches; the selection itself costs nothing, the decoder derives it from the decoded magnitudes, which a
  real format would have to make bit-exact first) in bits per second of audio;
- then 0 or 12 Griffin-Lim iterations (version 5 runs 12 from PGHI's phase).

The 8 training speech clips of scripts/rvq_steps.py (never the eval set). A study, nothing here is in the codec.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rvq_phase_limits import heap_integrate  # noqa: E402
from rvq_steps import training_speech  # noqa: E402

from ncodec.codecs.rvq_kernel import phase_rates  # noqa: E402


def selection(s: np.ndarray, frame_db: float, clip_db: float, peaks: bool) -> np.ndarray:
    """Entries (F, K) within ``frame_db`` of their frame's peak and ``clip_db`` of the clip's (log magnitudes
    ``s`` in nats), only local maxima along frequency if ``peaks``."""
    nat = math.log(10) / 20
    keep = (s > s.max(1, keepdims=True) - frame_db * nat) & (s > s.max() - clip_db * nat)
    if peaks:
        up = np.ones_like(keep)
        up[:, 1:] = s[:, 1:] > s[:, :-1]
        down = np.ones_like(keep)
        down[:, :-1] = s[:, :-1] >= s[:, 1:]
        keep &= up & down
    return keep


def entropy_bits(symbols: list[np.ndarray]) -> float:
    """Total empirical entropy (bits) of the pooled symbols."""
    v = np.concatenate([x[x > -9999] for x in symbols]) if symbols else np.zeros(0, np.int64)
    if not v.size:
        return 0.0
    _, counts = np.unique(v, return_counts=True)
    return float(-(counts * np.log2(counts / v.size)).sum())


def main():
    import torch
    from pesq import pesq

    from ncodec import zoo
    from ncodec.codecs import rvq_net
    from ncodec.codecs.rvq import RvqModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="rvq-audio-v4")
    ap.add_argument("--levels", default="6,12", help="codebook counts (2 per kbps)")
    ap.add_argument("--selections", default="peaks:20:50,peaks:30:50,all:10:50,all:20:50,all:30:50,all:60:60",
                    help="comma-separated KIND:FRAME_DB:CLIP_DB (KIND peaks or all)")
    ap.add_argument("--phase-levels", default="4,8,16", help="levels per turn of the coded corrections")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = RvqModel.from_card(zoo.find("rvq", "audio", args.model))
    cfg, dec = model.cfg, model.net.decoder
    clips = [x[: len(x) // cfg.hop * cfg.hop] for x in training_speech()]
    seconds = sum(len(x) for x in clips) / cfg.rate
    sels = [(k, float(a), float(b)) for k, a, b in (v.split(":") for v in args.selections.split(","))]
    plevels = [int(v) for v in args.phase_levels.split(",")]
    lines = [f"command: python scripts/rvq_phase_side.py {' '.join(sys.argv[1:])}",
             f"{len(clips)} training speech clips ({seconds:g} s), PESQ-WB means; side bits per second of audio "
             "(empirical entropy of the corrections, pooled); entries coded per second"]
    print(lines[-1], flush=True)

    def gl(mag, iters, phase):
        return rvq_net.griffin_lim(mag, cfg.n_fft, cfg.step, dec.window, iters,
                                   phase=torch.from_numpy(phase).float())[0, 0].numpy()

    for levels in [int(v) for v in args.levels.split(",")]:
        trials = [("PGHI (version 5's start)", None, 0)] + [(f"{k} within {a:g} dB of the frame, {b:g} of the clip, "
                                                           f"{L} levels", (k, a, b), L) for k, a, b in sels
                                                          for L in plevels]
        scores = {(t[0], it): [] for t in trials for it in (0, 12)}
        syms = {t[0]: [] for t in trials}
        for x in clips:
            xt = torch.from_numpy(x)[None]
            spec = rvq_net.stft_frames(xt, cfg.n_fft, cfg.step, dec.window)[0].numpy()
            codes = torch.from_numpy(model.encode_frames(x, levels).astype(np.int64))[None]
            mag = dec.magnitudes(model.net.quantizer.decode(codes), post=True)
            m = mag[0].numpy().astype(np.float64)
            s = np.log(m + 1e-12)
            rt, rf = phase_rates(s, cfg.step, cfg.n_fft)
            start = rvq_net.start_phase(0, m.shape[0], m.shape[1]).numpy().astype(np.float64)
            truth = np.angle(spec).astype(np.float64)
            floor = math.log(1e-5) + s.max()
            for name, sel, L in trials:
                mask = selection(s, sel[1], sel[2], sel[0] == "peaks") if sel else np.zeros(s.shape, np.bool_)
                phase, sym = heap_integrate(s, rt, rf, floor, start, False, truth, mask, L)
                syms[name].append(sym)
                for it in (0, 12):
                    scores[(name, it)].append(float(pesq(16000, x, gl(mag, it, phase)[: len(x)], "wb")))
        for name, _, _ in trials:
            coded = sum(int((v > -9999).sum()) for v in syms[name]) / seconds
            bps = entropy_bits(syms[name]) / seconds
            lines.append(f"{levels / 2:g} kbps codes | {name:<58} | {bps:7.0f} bit/s | {coded:6.0f} entries/s | "
                         f"PESQ-WB {np.mean(scores[(name, 0)]):.3f} (Griffin-Lim 12: {np.mean(scores[(name, 12)]):.3f})")
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
