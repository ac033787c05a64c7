"""Fit nerv (or nirvana) on a training video and report bytes, PSNR and what the fit did (epochs, parameters,
PSNR of the float network and of the quantised one with nearest rounding, before nerv's learned rounding).

Usage: python scripts/nerv_variants.py TAG Q [Q ...] [--out FILE.jsonl] [--frames N] [--budget S]
                                      [--bits B|rising] [--qat-bits N] [--codec nirvana] [--epochs E]
                                      [--batch N] [--lr LR]
       python scripts/nerv_variants.py TAG Q --step-time    (ms per fitting step of 4 frames, 416x240, no file)

The video is basketballpass (50 frames, 416x240, ../shared/corpus/train/video), never foreman. The variants of
docs/results/nerv-variants/ are experiments, not shipped code: apply ``variants.patch`` from that folder
(``git apply``) and pick one with NX_* variables (NX_TGRID, NX_BLOCK, NX_WSCALE, NX_QREG, NX_QREG_START,
NX_REFIT_ALL); without the patch those variables do nothing and the row is the shipped nerv.
"""
import argparse
import glob
import json
import os
import time

import numpy as np
import torch
from PIL import Image

import ncodec
from ncodec.bench.video import _psnr_frames
from ncodec.codecs import nerv

ap = argparse.ArgumentParser()
ap.add_argument("tag")
ap.add_argument("q", type=float, nargs="+")
ap.add_argument("--out", default="docs/results/nerv-variants/results.jsonl")
ap.add_argument("--frames", type=int, default=50)
ap.add_argument("--budget", type=float, default=None, help="fitting seconds (default: nerv's, 6 s per CIF frame)")
ap.add_argument("--bits", default=None, help="bits of the step rule at every quality (default: as shipped, 6; "
                "'rising': 6 / 7 / 8 below q30 / below q60 / above, as before stop 33)")
ap.add_argument("--codec", default="nerv", choices=["nerv", "nirvana"])
ap.add_argument("--qat-bits", type=int, default=None, help="QAT at this many bits or fewer (default: QAT_BITS)")
ap.add_argument("--epochs", type=int, default=None, help="epochs per intra group (default: the codec's)")
ap.add_argument("--batch", type=int, default=None, help="frames per fitting step (default: FIT_BATCH)")
ap.add_argument("--lr", type=float, default=None,
                help="peak learning rate of intra groups (default: the codec's fit_lr)")
ap.add_argument("--step-time", action="store_true")
ap.add_argument("--profile", action="store_true", help="with --step-time: torch.profiler's table of 10 steps")
args = ap.parse_args()
codec_cls = nerv.NervCodec if args.codec == "nerv" else nerv.NirvanaCodec
if args.bits is not None:
    codec_cls.bits = None if args.bits == "rising" else int(args.bits)
if args.qat_bits is not None:
    nerv.QAT_BITS = args.qat_bits
if args.batch is not None:
    nerv.FIT_BATCH = args.batch
if args.lr is not None:
    codec_cls.fit_lr = args.lr


if args.step_time:  # one fitting step (forward, backward, Adam) as _Fitter.fit runs it, bf16 where it would be
    import torch.nn.functional as F

    for q in args.q:
        fitter = nerv._Fitter(nerv._quality_config(q, 240, 416, False, 50, 1), "cpu")
        opt = torch.optim.Adam(fitter.net.parameters(), 1e-3)
        x, t = torch.rand(4, 3, 240, 416), torch.rand(4)

        def step():
            with fitter._autocast():
                y = fitter.net(t)
            loss = F.mse_loss(y.float(), x)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(5):  # torch's set-up
            step()
        t0 = time.time()
        for _ in range(20):
            step()
        ms = round((time.time() - t0) / 20 * 1000, 1)
        if args.profile:
            from torch.profiler import profile

            with profile() as prof:
                for _ in range(10):
                    step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        print(json.dumps({"tag": args.tag, "q": q, "params": sum(p.numel() for p in fitter.net.parameters()),
                          "ms_per_step": ms, "bf16": fitter.bf16,
                          "env": {k: v for k, v in os.environ.items() if k.startswith("NX_")}}))
    raise SystemExit

files = sorted(glob.glob("../shared/corpus/train/video/basketballpass_416x240/*.png"))[: args.frames]
frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
clip = np.stack(frames)
log: dict = {}


def psnr_of(fitter, frames):
    x, t = fitter.target(frames)
    with torch.no_grad():
        mse = [float(((fitter.net(t[i : i + 4]) - x[i : i + 4]) ** 2).mean()) for i in range(0, len(t), 4)]
    return round(10 * np.log10(1 / np.mean(mse)), 3)


fit, rounding = nerv._Fitter.fit, nerv._Fitter.learn_rounding


def logged_fit(self, *a, **k):
    t0, epochs, report = time.time(), [0], k.get("progress")

    def progress(e, total, p):
        epochs[0] = e
        if report:
            report(e, total, p)

    k["progress"] = progress
    out = fit(self, *a, **k)
    log["fit"] = {"epochs": epochs[0], "s": round(time.time() - t0, 1),
                  "params": sum(p.numel() for p in self.net.parameters())}
    return out


def logged_rounding(self, frames, steps, *a, **k):
    """Before the learned rounding: PSNR of the float network, and of every weight on its nearest step."""
    log["float_psnr"] = psnr_of(self, frames)
    params = list(self.net.parameters())
    kept = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, s in zip(params, steps):
            p.copy_(torch.round(p / s) * s)
    log["quantised_psnr"] = psnr_of(self, frames)
    with torch.no_grad():
        for p, o in zip(params, kept):
            p.copy_(o)
    return rounding(self, frames, steps, *a, **k)


nerv._Fitter.fit, nerv._Fitter.learn_rounding = logged_fit, logged_rounding
for q in args.q:
    log.clear()
    t0 = time.time()
    opts = {**({"time_budget": args.budget} if args.budget else {}), **({"epochs": args.epochs} if args.epochs else {})}
    blob = ncodec.encode(clip, codec=args.codec, media="video", quality=q, fps=50, options=opts)
    enc_s = time.time() - t0
    dec = ncodec.decode(blob).data
    row = {"tag": args.tag, "codec": args.codec, "frames": len(frames), "q": q, "bytes": len(blob),
           "bpp": round(8 * len(blob) / clip[..., 0].size, 5), "psnr": round(_psnr_frames(frames, dec), 3),
           "enc_s": round(enc_s, 1), **log, "bits": args.bits, "qat_bits": args.qat_bits, "epochs": args.epochs,
           "batch": nerv.FIT_BATCH, "lr": codec_cls.fit_lr,
           "qat_every_group": nerv.QAT_BITS >= 8,
           "env": {k: v for k, v in os.environ.items() if k.startswith("NX_")}}
    print(json.dumps(row), flush=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
