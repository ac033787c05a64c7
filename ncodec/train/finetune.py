"""The loop shared by the decoder fine-tunes (``walloc-decoder``, ``mcquic-decoder``).

Both train only a model's synthesis on the latents its frozen encoder writes, minimising log10(MSE) (every rate
alike in dB), with Adam, gradient clipping at 1, an optional linear warm-up and a cosine decay to lr / 20, and
checkpoint to ``run/decoder.pt`` (plus ``progress.json``) every ``save_every`` steps.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def check_psnr(net, items) -> list[float]:
    """Mean PSNR (output rounded to 8 bits) of ``net.synthesis(latent, rate)`` for each (x, latent, rate)."""
    net.eval()
    out = []
    for x, y, r in items:
        x_hat = (net.synthesis(y, r).clamp(0, 1) * 255).round() / 255
        out.append(float((10 * torch.log10(1 / F.mse_loss(x_hat, x, reduction="none").mean((1, 2, 3)))).mean()))
    net.train()
    return [round(v, 3) for v in out]


def finetune(run: Path, net, params: list, opt, step: int, steps: int, lr: float, batch_loss, check, meta: dict,
             seconds: float = 0.0, warmup: int = 0, save_every: int = 250, check_every: int = 1000, keep=None,
             log=print) -> int:
    """Train from ``step`` to ``steps``: ``batch_loss()`` gives one batch's log10(MSE), ``check()`` the check
    PSNRs logged every ``check_every`` steps. Checkpoints hold ``net``'s state (entries whose name ``keep``
    accepts), the optimiser, ``step``, the training seconds so far and ``meta``. Returns the last step."""
    ckpt = run / "decoder.pt"
    t0, hist, t_run = time.time(), [], time.time()
    while step < steps:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0  # Adam's first steps would shake a trained decoder
        for g in opt.param_groups:
            g["lr"] = lr * ramp * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        hist.append(-10 * loss.item())
        if step % 50 == 0:
            log(f"step {step}/{steps} psnr {np.mean(hist):.2f} ({50 / (time.time() - t0):.2f} steps/s)")
            hist, t0 = [], time.time()
        if step % check_every == 0 or step == steps:
            log(f"step {step}: check PSNR {check()}")
        if step % save_every == 0 or step == steps:
            seconds, t_run = seconds + time.time() - t_run, time.time()
            state = {k: v for k, v in net.state_dict().items() if keep is None or keep(k)}
            tmp = run / "decoder.tmp"
            torch.save({"net": state, "opt": opt.state_dict(), "step": step, "seconds": seconds, **meta}, tmp)
            tmp.replace(ckpt)
            (run / "progress.json").write_text(json.dumps({"step": step, "steps": steps}))
    return step
