"""Can a network predict rvq's phase advances from the decoded magnitudes better than PGHI's formula does?

    python scripts/rvq_phase_net.py [--steps 6000] [--features] [--out DIR] [--save FILE]

Trains a small network (ConvNeXt blocks over STFT frames, as rvq's decoder; 0.69 M parameters) that maps the
decoded log magnitudes of rvq-audio-v4 (codec version 5's postfilter) to, per entry, the deviation of the phase
advance to the next frame from a steady component at the bin's centre (2 pi step k / n_fft) and of the advance to
the next bin from -pi: the two rates that ``rvq_kernel.pghi`` integrates (its ``rates``), which depend on where
the energy lies within the frames, not on the absolute time, so a network that slides over frames can predict
them. Loss: the anti-wrapping distance (Ai & Ling 2023) between the trapezoid of two neighbouring entries' rates
and the true advance between them, weighted by the square root of the true magnitudes. ``--features``: the
decoder's last hidden features are an input too.

Data: 2400 crops of 3 s from the rvq training audio (runs/rvq-ctl/clips.npz as ``ncodec train rvq`` caches it;
half speech, half music, the training gain), coded with 2..24 codebooks. Every 2000 steps it prints PESQ-WB of the
8 training clips of scripts/rvq_steps.py decoded at 6 / 12 codebooks with the net's rates, then 0 / 4 / 12
Griffin-Lim iterations, and at the end the same with PGHI's rates (codec version 5: 12 iterations) and the loss
of PGHI's rates and of the net's on those clips. Results: docs/results/rvq-phase-net/README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from ncodec import zoo  # noqa: E402
from ncodec.codecs import rvq_net  # noqa: E402
from ncodec.codecs.rvq import RvqModel  # noqa: E402
from ncodec.codecs.rvq_kernel import phase_rates, pghi  # noqa: E402
from ncodec.codecs.rvq_net import MAG_FLOOR, ConvNeXt  # noqa: E402

LEVELS = (2, 3, 4, 6, 8, 12, 16, 24)


class PhaseNet(nn.Module):
    """Decoded log magnitudes (B, F, bins) [+ decoder features (B, F, feat)] -> the deviations of the phase
    advance per frame and per bin, each (B, F, bins), as angles (atan2 of two linear outputs)."""

    def __init__(self, bins: int, dim: int = 128, blocks: int = 4, feat: int = 0):
        super().__init__()
        self.inp = nn.Conv1d(bins + feat, dim, 3, padding=1)
        self.blocks = nn.Sequential(*[ConvNeXt(dim) for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 4 * bins)

    def forward(self, logmag, feat=None):
        x = logmag / 4 if feat is None else torch.cat([logmag / 4, feat], -1)
        h = self.norm(self.blocks(self.inp(x.transpose(1, 2))).transpose(1, 2))
        o = self.out(h).unflatten(-1, (4, -1))
        return torch.atan2(o[..., 1, :], o[..., 0, :]), torch.atan2(o[..., 3, :], o[..., 2, :])


def wrapped(d: torch.Tensor) -> torch.Tensor:
    """The anti-wrapping distance |d - 2 pi round(d / 2 pi)|."""
    return (d - 2 * math.pi * torch.round(d / (2 * math.pi))).abs()


def advance_loss(pred, spec: torch.Tensor, step: int, n_fft: int):
    """(per frame, per bin) losses of predicted rate deviations against the true advances of ``spec`` (B, F, K)."""
    d_t, d_f = pred
    k = torch.arange(spec.shape[-1])
    rot = torch.polar(torch.ones(spec.shape[-1]), -2 * math.pi * step * k / n_fft)
    true_t = torch.angle(spec[:, 1:] * spec[:, :-1].conj() * rot)
    true_f = torch.angle(-spec[..., 1:] * spec[..., :-1].conj())
    w = spec.abs().sqrt()
    w_t, w_f = (w[:, 1:] * w[:, :-1]).sqrt(), (w[..., 1:] * w[..., :-1]).sqrt()
    loss_t = (w_t * wrapped((d_t[:, 1:] + d_t[:, :-1]) / 2 - true_t)).sum() / w_t.sum()
    loss_f = (w_f * wrapped((d_f[..., 1:] + d_f[..., :-1]) / 2 - true_f)).sum() / w_f.sum()
    return loss_t, loss_f


class Setup:
    def __init__(self, features: bool):
        self.model = RvqModel.from_card(zoo.find("rvq", "audio", "rvq-audio-v4"))
        self.cfg, self.dec = self.model.cfg, self.model.net.decoder
        self.features = features

    @torch.no_grad()
    def decode(self, x: np.ndarray, levels: int):
        """Samples (16 kHz) -> decoded magnitudes (1, F, K), decoder features (1, F, dim) or None, true STFT."""
        codes = torch.from_numpy(self.model.encode_frames(x, levels).astype(np.int64))[None]
        q = self.model.net.quantizer.decode(codes)
        feat = None
        if self.features:
            feat = self.dec.norm(self.dec.blocks(self.dec.inp(q)).transpose(1, 2))
            feat = feat.repeat_interleave(self.cfg.head_frames, 1)
        spec = rvq_net.stft_frames(torch.from_numpy(x)[None], self.cfg.n_fft, self.cfg.step, self.dec.window)
        return self.dec.magnitudes(q, post=True), feat, spec

    def rates(self, net: PhaseNet | None, mag, feat):
        """(per frame, per bin) phase rates of the net (None: PGHI's) for magnitudes (1, F, K)."""
        cfg = self.cfg
        if net is None:
            return phase_rates(np.log(mag[0].double().numpy() + 1e-12), cfg.step, cfg.n_fft)
        with torch.no_grad():
            d_t, d_f = net(torch.log(mag + MAG_FLOOR), feat)
        k = np.arange(mag.shape[-1])[None]
        return 2 * np.pi * cfg.step * k / cfg.n_fft + d_t[0].double().numpy(), d_f[0].double().numpy() - np.pi

    def pool(self, crops: int, seconds: int = 3, seed: int = 0):
        clips = np.load(ROOT / "runs" / "rvq-ctl" / "clips.npz")
        keys = sorted(clips.files)
        kinds = [[k for k in keys if k.startswith("speech")], [k for k in keys if k.startswith("music")]]
        rng, size, cache = np.random.default_rng(seed), seconds * self.cfg.rate, {}
        logmags, feats, specs = [], [], []
        for i in range(crops):
            names = kinds[i % 2]
            name = names[rng.integers(len(names))]
            c = cache.setdefault(name, clips[name])
            if len(c) < size:
                continue
            start = rng.integers(0, len(c) - size + 1)
            seg = c[start : start + size]
            gain = 10 ** (-rng.uniform(0, 20) / 20) * min(1.0, 0.95 / max(float(np.abs(seg).max()), 1e-4))
            mag, feat, spec = self.decode((seg * gain).astype(np.float32), int(rng.choice(LEVELS)))
            logmags.append(torch.log(mag[0] + MAG_FLOOR).half())
            specs.append(spec[0])
            if feat is not None:
                feats.append(feat[0].half())
        return torch.stack(logmags), torch.stack(feats) if feats else None, torch.stack(specs)

    def evaluate(self, net: PhaseNet | None, clips, iters=(0, 4, 12)) -> dict:
        """PESQ-WB of ``clips`` decoded with the net's rates (None: PGHI's, codec version 5 at 12 iterations)."""
        from pesq import pesq

        cfg, out = self.cfg, {}
        for levels in (6, 12):
            for it in iters:
                scores = []
                for x in clips:
                    x = x[: len(x) // cfg.hop * cfg.hop]
                    mag, feat, _ = self.decode(x, levels)
                    start = rvq_net.start_phase(0, mag.shape[1], mag.shape[2]).numpy()
                    phase = torch.from_numpy(pghi(mag[0].numpy(), cfg.step, cfg.n_fft, start, self.rates(net, mag, feat)))
                    y = rvq_net.griffin_lim(mag, cfg.n_fft, cfg.step, self.dec.window, it, phase=phase)
                    scores.append(pesq(16000, x, y[0, 0].numpy()[: len(x)], "wb"))
                out[f"{levels} codebooks, {it} iterations"] = round(float(np.mean(scores)), 3)
        return out

    def losses(self, net: PhaseNet, clips) -> dict:
        cfg, out = self.cfg, {}
        for levels in (6, 12):
            for name, which in (("PGHI", None), ("net", net)):
                parts = []
                for x in clips:
                    x = x[: len(x) // cfg.hop * cfg.hop]
                    mag, feat, spec = self.decode(x, levels)
                    r_t, r_f = self.rates(which, mag, feat)
                    k = np.arange(mag.shape[-1])[None]
                    dev = (torch.from_numpy(r_t - 2 * np.pi * cfg.step * k / cfg.n_fft).float()[None],
                           torch.from_numpy(r_f + np.pi).float()[None])
                    parts.append([v.item() for v in advance_loss(dev, spec, cfg.step, cfg.n_fft)])
                out[f"{levels} codebooks, {name} (per frame, per bin)"] = np.mean(parts, 0).round(3).tolist()
        return out


def main():
    from rvq_steps import training_speech

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--features", action="store_true")
    ap.add_argument("--out", default=None, help="folder for the log (results.jsonl)")
    ap.add_argument("--save", default=None, help="file for the trained net's state (torch)")
    args = ap.parse_args()
    torch.manual_seed(0)
    setup = Setup(args.features)
    cfg = setup.cfg
    logmags, feats, specs = setup.pool(2400)
    clips = training_speech()
    net = PhaseNet(cfg.n_fft // 2 + 1, feat=cfg.dec_dim if args.features else 0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=args.steps, pct_start=0.05)
    rng, batch, frames, t0 = np.random.default_rng(1), 16, 200, time.time()
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)

    def log(row):
        print(json.dumps(row), flush=True)
        if out:
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(logmags), batch)
        off = rng.integers(0, logmags.shape[1] - frames + 1, batch)
        spec = torch.stack([specs[i, o : o + frames] for i, o in zip(idx, off)])
        logmag = torch.stack([logmags[i, o : o + frames] for i, o in zip(idx, off)]).float()
        feat = None if feats is None else torch.stack([feats[i, o : o + frames] for i, o in zip(idx, off)]).float()
        loss_t, loss_f = advance_loss(net(logmag, feat), spec, cfg.step, cfg.n_fft)
        opt.zero_grad()
        (loss_t + loss_f).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 2000 == 0 or step == args.steps:
            log({"step": step, "seconds": round(time.time() - t0), "features": args.features,
                 "pesq_wb": setup.evaluate(net, clips)})
    log({"step": args.steps, "features": args.features, "advance_loss": setup.losses(net, clips),
         "pesq_wb_pghi": setup.evaluate(None, clips)})
    if args.save:
        torch.save(net.state_dict(), args.save)


if __name__ == "__main__":
    main()
