"""PESQ-WB and STOI of rvq models or training checkpoints on training audio, to follow a run step by step.

    python scripts/rvq_steps.py rvq-audio-v2 runs/rvq-harm3/checkpoint.pt [--levels 6,12] [--version 5] [--out FILE]

Each argument is an installed model's id or a run's ``checkpoint.pt`` (its networks rounded to fp16, as an export
ships them). Training audio only (never the eval set): every 19th LibriSpeech file from the 4th of
../shared/corpus/train/audio/speech (first 8 s; the files of scripts/rvq_postfilter.py), coded with each
``--levels`` count of codebooks (no container: the code tables do not change the samples) and decoded as codec
version 3 decodes a unit (postfilter, Griffin-Lim from the frame-indexed start phase), or with ``--version 5`` as
version 5 does (Griffin-Lim from the heap-integrated phase, ``rvq.PGHI_ITERS`` iterations).
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np


def load(arg: str):
    import torch

    from ncodec import zoo
    from ncodec.codecs.rvq import RvqModel
    from ncodec.codecs.rvq_net import RvqConfig

    if not arg.endswith(".pt"):
        return RvqModel.from_card(zoo.find("rvq", "audio", arg)), arg
    state = torch.load(arg, map_location="cpu", weights_only=True)
    cfg = RvqConfig(**state["config"])
    tensors = {f"net.{k}": (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
    tensors["codes.freqs"] = torch.ones(cfg.groups * cfg.n_q, cfg.codebook_size + 1, dtype=torch.int32)
    return RvqModel(tensors, cfg), f"{arg} (step {state['step']})"


def training_speech() -> list[np.ndarray]:
    """The 8 training clips (16 kHz float32): every 19th LibriSpeech file from the 4th, first 8 s."""
    import soundfile as sf

    root = Path(__file__).resolve().parents[2] / "shared/corpus/train/audio"
    speech = sorted(glob.glob(str(root / "speech/**/*.flac"), recursive=True))[3::19][:8]
    return [sf.read(p, dtype="float32")[0][: 8 * 16000] for p in speech]


def main():
    import torch
    from pesq import pesq
    from pystoi import stoi

    from ncodec.codecs import rvq_net
    from ncodec.codecs.rvq import PGHI_ITERS
    from ncodec.codecs.rvq_kernel import pghi

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--levels", default="6,12")
    ap.add_argument("--version", type=int, choices=(3, 5), default=3, help="decode as this codec version")
    ap.add_argument("--out", default=None, help="append one JSON line per model and level count")
    args = ap.parse_args()
    clips = training_speech()
    for arg in args.models:
        model, name = load(arg)
        cfg, dec = model.cfg, model.net.decoder
        for levels in map(int, args.levels.split(",")):
            scores = {"pesq": [], "stoi": []}
            for x in clips:
                x = x[: len(x) // cfg.hop * cfg.hop]
                codes = torch.from_numpy(model.encode_frames(x, levels).astype(np.int64))[None]
                with torch.no_grad():
                    mag = dec.magnitudes(model.net.quantizer.decode(codes), post=True)
                    phase = rvq_net.start_phase(0, mag.shape[-2], mag.shape[-1])
                    iters = cfg.gl_iters
                    if args.version == 5:
                        phase = torch.from_numpy(pghi(mag[0].numpy(), cfg.step, cfg.n_fft, phase.numpy()))
                        iters = PGHI_ITERS
                    y = rvq_net.griffin_lim(mag, cfg.n_fft, cfg.step, dec.window, iters, phase=phase)
                y = y[0, 0].numpy()[: len(x)]
                scores["pesq"].append(pesq(16000, x, y, "wb"))
                scores["stoi"].append(stoi(x, y, 16000))
            row = {"model": name, "levels": levels, "kbps": levels / 2, **({"version": 5} if args.version == 5 else {}),
                   **{k: round(float(np.mean(v)), 4) for k, v in scores.items()}}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
