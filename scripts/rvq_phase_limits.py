"""What limits the rvq codec's speech quality: the coded magnitudes or the phase rebuilt from them.

    python scripts/rvq_phase_limits.py [--model rvq-audio-v4] [--levels 12,24] [--out FILE]

On the 8 training clips of scripts/rvq_steps.py (never the eval set), PESQ-WB of signals built from magnitudes and
phases of different origins: the model's decoded magnitudes (postfilter on, as codec version 3 decodes) or the
input's own STFT magnitudes (optionally blurred over 3 frames in time), with a phase from

- Griffin-Lim from the frame-indexed start phase (what the codec does; 32 iterations) or with more iterations,
- the input's own STFT phase (an oracle: what a decoder that knew the phase would reach),
- phase gradient heap integration (PGHI, Prusa, Balazs & Sondergaard 2017) of the magnitudes' log-derivatives
  under the Gaussian approximation of the Hann window, optionally followed by Griffin-Lim,
- PGHI of the input's true phase derivatives (an oracle for a decoder that predicted them exactly), also with
  their deviations from a steady component's rounded to 1-4 bits, or true in one direction only (time or
  frequency) and estimated from the magnitudes in the other;

and, for decoded magnitudes, Griffin-Lim on magnitudes mixing the decoded and the input's (:func:`swaps`: the
decoded envelope with the input's fine structure, in some bands or all; the input's envelope with the decoded fine
structure; the input's magnitudes near each frame's peak): which part of the decoded magnitudes Griffin-Lim misses.

One line per row and level count; ``--out`` also writes them to a file.
"""
from __future__ import annotations

import argparse
import heapq
import math
import sys
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rvq_steps import training_speech  # noqa: E402

from ncodec.codecs.rvq_kernel import phase_rates  # noqa: E402


@njit(cache=True)
def heap_integrate(s, dt, df, floor, start, exact, truth, mask, levels):
    """Phase of the (F, K) grid from its advances dt[j, k] towards frame j + 1 and df[j, k] towards bin k + 1
    (``exact``: measured between the two entries; else local rates, joined by the trapezoid rule), spreading
    from the largest log magnitude ``s`` to its neighbours in order of size; entries below ``floor`` keep
    ``start``. With ``levels`` > 0, every entry of ``mask`` is corrected on arrival to the phase ``truth`` rounded
    to ``levels`` levels per turn (scripts/rvq_phase_side.py). Returns (phase, the rounded corrections: -9999
    where none)."""
    n_f, n_k = s.shape
    phase = start.copy()
    sym = np.full((n_f, n_k), -9999, np.int64)
    done = s < floor
    order = np.argsort(-s.ravel(), kind="mergesort")
    heap = [(0.0, np.int64(0))]
    heap.pop()
    unit = 2 * np.pi / max(levels, 1)
    for seed in order:
        j0, k0 = seed // n_k, seed % n_k
        if done[j0, k0]:
            continue
        done[j0, k0] = True
        if levels and mask[j0, k0]:
            c = (int(np.round(((truth[j0, k0] - phase[j0, k0] + np.pi) % (2 * np.pi) - np.pi) / unit))
                 + levels // 2) % levels - levels // 2
            phase[j0, k0] += c * unit
            sym[j0, k0] = c
        heapq.heappush(heap, (-s[j0, k0], np.int64(seed)))
        while len(heap) > 0:
            _, idx = heapq.heappop(heap)
            j, k = idx // n_k, idx % n_k
            for dj, dk in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                jj, kk = j + dj, k + dk
                if jj < 0 or jj >= n_f or kk < 0 or kk >= n_k or done[jj, kk]:
                    continue
                if exact:  # the advance between the two entries itself, stored at the lower one
                    adv = dt[min(j, jj), k] if dj else df[j, min(k, kk)]
                else:  # trapezoid rule between the two entries' local rates
                    adv = 0.5 * (dt[j, k] + dt[jj, kk]) if dj else 0.5 * (df[j, k] + df[jj, kk])
                p = phase[j, k] + (dj + dk) * adv
                if levels and mask[jj, kk]:
                    c = (int(np.round(((truth[jj, kk] - p + np.pi) % (2 * np.pi) - np.pi) / unit))
                         + levels // 2) % levels - levels // 2
                    p += c * unit
                    sym[jj, kk] = c
                phase[jj, kk] = p
                done[jj, kk] = True
                heapq.heappush(heap, (-s[jj, kk], np.int64(jj * n_k + kk)))
    return phase, sym


def _heap_integrate(s, dt, df, floor, start, exact):
    """:func:`heap_integrate` without corrections: the phase alone."""
    return heap_integrate(s, dt, df, floor, start, exact, start, np.zeros(s.shape, np.bool_), 0)[0]


def pghi(mag: np.ndarray, step: int, n_fft: int, start: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """Phase (F, K) for STFT magnitudes (F, K) from :func:`ncodec.codecs.rvq_kernel.phase_rates` (trapezoid rule
    between entries)."""
    s = np.log(np.asarray(mag, np.float64) + 1e-12)
    dt, df = phase_rates(s, step, n_fft)
    return _heap_integrate(s, dt, df, math.log(tol) + s.max(), np.asarray(start, np.float64), False)


def mixed(mag: np.ndarray, dt_true: np.ndarray, df_true: np.ndarray, step: int, n_fft: int, start: np.ndarray,
          true_time: bool, tol: float = 1e-5) -> np.ndarray:
    """Heap integration of the true advances in one direction (time if ``true_time``, else frequency) and of
    :func:`pghi`'s rates from the magnitudes in the other (averaged between neighbouring entries)."""
    s = np.log(np.asarray(mag, np.float64) + 1e-12)
    rate_t, rate_f = phase_rates(s, step, n_fft)
    dt, df = np.zeros_like(s), np.zeros_like(s)
    dt[:-1] = (rate_t[1:] + rate_t[:-1]) / 2
    df[:, :-1] = (rate_f[:, 1:] + rate_f[:, :-1]) / 2
    if true_time:
        dt = dt_true
    else:
        df = df_true
    return _heap_integrate(s, dt, df, math.log(tol) + s.max(), np.asarray(start, np.float64), True)


def true_advances(spec: np.ndarray, step: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """The phase advances of a complex STFT (F, K) to the next frame and the next bin (last row / column 0),
    unwrapped around the advances of a steady component at the bin's centre frequency."""
    k = np.arange(spec.shape[1])[None]
    dt = np.zeros(spec.shape)
    dt[:-1] = np.angle(spec[1:] * np.conj(spec[:-1]) * np.exp(-2j * np.pi * step * k / n_fft))
    dt += 2 * np.pi * step * k / n_fft
    df = np.zeros(spec.shape)
    df[:, :-1] = np.angle(-spec[:, 1:] * np.conj(spec[:, :-1])) - np.pi
    return dt, df


def quantised(dt: np.ndarray, df: np.ndarray, step: int, n_fft: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The advances of :func:`true_advances` with their deviations from a steady component's (2 pi step k / n_fft
    per frame, -pi per bin) rounded to ``bits`` bits each (uniform over a turn, mid-rise)."""
    levels = 1 << bits
    base_t = 2 * np.pi * step * np.arange(dt.shape[1])[None] / n_fft

    def q(d):
        cell = np.floor((np.angle(np.exp(1j * d)) + np.pi) / (2 * np.pi) * levels)
        return (cell + 0.5) * (2 * np.pi / levels) - np.pi

    return base_t + q(dt - base_t), q(df + np.pi) - np.pi


FINE_BINS = 17  # the local mean that splits log magnitudes into envelope and fine structure (425 Hz at 640 points)


def swaps(true_mag, dec_mag, rate: int, n_fft: int) -> dict:
    """Magnitudes (B, F, K) mixing the input's (``true_mag``) and the decoded ones: log magnitudes split into an
    envelope (their FINE_BINS-bin local mean) and a fine structure (the rest: harmonics, the noise's texture), the
    input's fine structure in some bands only, and the input's magnitudes where they are near the frame's peak."""
    import torch
    import torch.nn.functional as F

    lt, ld = torch.log(true_mag + 1e-4), torch.log(dec_mag + 1e-4)
    env = lambda v: F.avg_pool1d(v, FINE_BINS, 1, FINE_BINS // 2, count_include_pad=False)  # noqa: E731
    magnitude = lambda lg: (torch.exp(lg) - 1e-4).clamp_min(0)  # noqa: E731  (never negative, as the decoder's)
    et, ed = env(lt), env(ld)
    hz = torch.arange(true_mag.shape[-1]) * rate / n_fft
    out = {}
    for lo, hi in ((0, rate), (0, 2000), (2000, 6000), (0, 6000)):
        band = (hz >= lo) & (hz < hi)
        what = "all bands" if hi == rate else f"{lo / 1000:g}-{hi / 1000:g} kHz"
        out[f"decoded envelope, the input's fine structure ({what}), Griffin-Lim 32"] = magnitude(
            ed + torch.where(band, lt - et, ld - ed))
    out["the input's envelope, decoded fine structure, Griffin-Lim 32"] = magnitude(et + ld - ed)
    near = lt > lt.amax(-1, keepdim=True) - math.log(10)  # within 20 dB of the frame's peak
    out["the input's magnitudes within 20 dB of the frame's peak, Griffin-Lim 32"] = torch.where(near, true_mag, dec_mag)
    return out


def main():
    import torch
    from pesq import pesq

    from ncodec import zoo
    from ncodec.codecs import rvq_net
    from ncodec.codecs.rvq import RvqModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="rvq-audio-v4")
    ap.add_argument("--levels", default="12,24")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = RvqModel.from_card(zoo.find("rvq", "audio", args.model))
    cfg, dec = model.cfg, model.net.decoder
    clips = training_speech()
    lines = [f"command: python scripts/rvq_phase_limits.py --model {args.model} --levels {args.levels}",
             f"{len(clips)} training speech clips (8 s), PESQ-WB means"]

    def gl(mag, iters, **kw):
        return rvq_net.griffin_lim(mag, cfg.n_fft, cfg.step, dec.window, iters, **kw)[0, 0].numpy()

    for levels in [0] + [int(v) for v in args.levels.split(",")]:
        rows: dict[str, list[float]] = {}
        for x in clips:
            x = x[: len(x) // cfg.hop * cfg.hop]
            xt = torch.from_numpy(x)[None]
            spec = rvq_net.stft_frames(xt, cfg.n_fft, cfg.step, dec.window)
            if levels:
                codes = torch.from_numpy(model.encode_frames(x, levels).astype(np.int64))[None]
                mag = dec.magnitudes(model.net.quantizer.decode(codes), post=True)
            else:
                mag = spec.abs()
            start = rvq_net.start_phase(0, mag.shape[1], mag.shape[2])
            m = mag[0].numpy()
            pg = torch.from_numpy(pghi(m, cfg.step, cfg.n_fft, start.numpy())).float()
            dt, df = true_advances(spec[0].numpy().astype(np.complex128), cfg.step, cfg.n_fft)
            s = np.log(m.astype(np.float64) + 1e-12)
            pt = torch.from_numpy(_heap_integrate(s, dt, df, math.log(1e-5) + s.max(),
                                                  start.numpy().astype(np.float64), True)).float()
            trials = {
                "Griffin-Lim 32 iterations (the codec)": lambda: gl(mag, cfg.gl_iters, phase=start),
                "Griffin-Lim 100 iterations": lambda: gl(mag, 100, phase=start),
                "the input's phase": lambda: gl(mag, 0, phase_of=xt),
                "the input's phase, then Griffin-Lim 32": lambda: gl(mag, cfg.gl_iters, phase_of=xt),
                "PGHI": lambda: gl(mag, 0, phase=pg),
                "PGHI, then Griffin-Lim 32": lambda: gl(mag, cfg.gl_iters, phase=pg),
                "heap integration of the input's phase advances": lambda: gl(mag, 0, phase=pt),
            }
            for true_time in (True, False):
                ph_m = torch.from_numpy(mixed(m, dt, df, cfg.step, cfg.n_fft, start.numpy(), true_time)).float()
                name = ("true frame advances, PGHI bin advances" if true_time
                        else "PGHI frame advances, true bin advances")
                trials[name] = lambda ph_m=ph_m: gl(mag, 0, phase=ph_m)
            for bits in (1, 2, 3, 4):
                qt, qf = quantised(dt, df, cfg.step, cfg.n_fft, bits)
                ph_q = torch.from_numpy(_heap_integrate(s, qt, qf, math.log(1e-5) + s.max(),
                                                        start.numpy().astype(np.float64), True)).float()
                trials[f"the input's phase advances in {bits} bits each"] = lambda ph_q=ph_q: gl(mag, 0, phase=ph_q)
            if not levels:
                blur = torch.nn.functional.avg_pool1d(mag.transpose(1, 2), 3, 1, 1, count_include_pad=False)
                blur = blur.transpose(1, 2)
                trials["blurred over 3 frames, Griffin-Lim 32"] = lambda: gl(blur, cfg.gl_iters, phase=start)
                trials["blurred over 3 frames, the input's phase"] = lambda: gl(blur, 0, phase_of=xt)
            else:
                for name, swapped in swaps(spec.abs(), mag, cfg.rate, cfg.n_fft).items():
                    trials[name] = lambda swapped=swapped: gl(swapped, cfg.gl_iters, phase=start)
            for name, make in trials.items():
                rows.setdefault(name, []).append(float(pesq(16000, x, make()[: len(x)], "wb")))
        what = (f"decoded magnitudes, {levels} codebooks ({levels / 2:g} kbps)" if levels
                else "the input's magnitudes")
        for name, v in rows.items():
            lines.append(f"{what:<45} | {name:<72} | {np.mean(v):.3f}")
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
