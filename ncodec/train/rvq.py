"""Training recipe `ncodec train rvq`: the RVQ audio codec on speech + music, with quantiser dropout.

Loss: multi-resolution log-mel L1 (STFT sizes 512/1024/2048) + multi-resolution log-magnitude L1 and spectral
convergence + the VQ commitment/codebook terms. Each item of a batch keeps a random number of codebooks (60%
of items; the rest keep all), so one model serves every bitrate. After training, :func:`export` counts the code
frequencies of every codebook level on the training audio and stores them as integer tables: the entropy
model of the shipped codec (ncodec.codecs.rvq). Resumable from ``RUN/checkpoint.pt``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..codecs.rvq_net import MAG_FLOOR, RvqConfig, RvqNet
from .data import AUDIO_EXT, corpus_root

STFT_SIZES = (512, 1024, 2048)
SHORT_SIZES = (128, 256)  # optional magnitude-only sizes for time precision (train(short=...))
COMPLEX_SIZES = (256, 512, 1024)  # sizes of the optional phase-aware term (train(complex_weight=...))
# `ncodec train rvq --head magnitude` (rvq-audio-v2): 640-point STFT frames 10 ms apart, two per latent frame;
# sized to fit the models/ budget (~4.5 MB in fp16)
MAGNITUDE_CONFIG = {"head": "magnitude", "head_frames": 2, "n_fft": 640, "f0_bins": 384, "enc_dim": 160,
                    "enc_blocks": 3, "dec_dim": 224, "dec_blocks": 3}
F0_WEIGHT = 0.1  # weight of the fundamental's cross-entropy (source-filter head): without it the comb is not used
FOCUS_REST = 0.2  # train(focus_db=...): weight left to the plain log-magnitude L1 beside the focused one
NATS_PER_DB = math.log(10) / 20


def load_clips(folders: list[Path], rate: int, cache: Path | None = None, log=print) -> dict[str, list[np.ndarray]]:
    """Every audio file under ``folders`` as mono float32 at ``rate`` (stereo: mid), grouped 'speech'/'music'
    by whether 'speech' appears in its path. Cached as one .npz so resuming does not decode again."""
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            out: dict[str, list[np.ndarray]] = {"speech": [], "music": []}
            for k in sorted(z.files):
                out[k.split("/")[0]].append(z[k])
            return out
    import soundfile as sf
    from scipy.signal import resample_poly

    out = {"speech": [], "music": []}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.suffix.lower() not in AUDIO_EXT:
                continue
            try:
                a, sr = sf.read(p, dtype="float32", always_2d=True)
            except Exception as e:  # an unreadable file in a data folder is skipped, and said
                log(f"skipped {p}: {e}")
                continue
            a = a.mean(1)
            if sr != rate:
                g = math.gcd(sr, rate)
                a = resample_poly(a, rate // g, sr // g).astype(np.float32)
            if len(a) >= rate and np.abs(a).max() > 1e-3:
                out["speech" if "speech" in str(p).lower() else "music"].append(a)
    if cache is not None:
        np.savez(cache, **{f"{k}/{i:05d}": c for k, v in out.items() for i, c in enumerate(v)})
    return out


class Sampler:
    """Random crops, half speech and half music (when both exist), random gain (-20..0 dB) and polarity."""

    def __init__(self, clips: dict[str, list[np.ndarray]], size: int, seed: int = 0):
        self.kinds = [v for v in clips.values() if v]
        if not self.kinds:
            raise FileNotFoundError("no training audio clips of at least one second")
        self.size = size
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> np.ndarray:
        out = np.empty((n, self.size), dtype=np.float32)
        for k in range(n):
            clips = self.kinds[k % len(self.kinds)]
            c = clips[self.rng.integers(len(clips))]
            s = self.rng.integers(0, len(c) - self.size + 1)
            seg = c[s : s + self.size]
            peak = max(float(np.abs(seg).max()), 1e-4)
            gain = 10 ** (-self.rng.uniform(0, 20) / 20) * min(1.0, 0.95 / peak) * (1 if self.rng.random() < 0.5 else -1)
            out[k] = seg * gain
        return out


def _mel_fb(n_fft: int, n_mels: int, rate: int) -> torch.Tensor:
    hz2mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    pts = 700 * (10 ** (np.linspace(0, hz2mel(rate / 2), n_mels + 2) / 2595) - 1)
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(bins)), dtype=np.float32)
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[m] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return torch.from_numpy(fb)


class SpectralLoss(torch.nn.Module):
    """Log-mel L1 on the STFT sizes of ``STFT_SIZES``; log-magnitude L1 + spectral convergence on those and
    the short sizes ``short`` (time precision: a 2048-point window cannot see a 10 ms onset); and a
    phase-aware term on the ``complex_sizes``: L1 between the power-law compressed complex spectra
    |S|^0.3 e^(i phase) (as speech enhancement uses), which no magnitude loss provides."""

    def __init__(self, rate: int, short: tuple[int, ...] = (), complex_sizes: tuple[int, ...] = ()):
        super().__init__()
        self.short, self.complex_sizes = tuple(short), tuple(complex_sizes)
        for n in sorted(set(STFT_SIZES + self.short + self.complex_sizes)):
            self.register_buffer(f"win{n}", torch.hann_window(n), persistent=False)
        for n in STFT_SIZES:
            self.register_buffer(f"mel{n}", _mel_fb(n, n // 16 + 32, rate), persistent=False)

    def _stft(self, a, n):
        return torch.stft(a, n, n // 4, window=getattr(self, f"win{n}"), return_complex=True)

    def forward(self, y, x):
        """y: decoded, x: reference (B, T) -> (mel L1, log-mag L1 + spectral convergence, compressed complex L1)."""
        mel, mag, cplx = 0.0, 0.0, torch.zeros(())
        specs = {n: (self._stft(y, n), self._stft(x, n)) for n in set(STFT_SIZES + self.short + self.complex_sizes)}
        for n in STFT_SIZES + self.short:
            sy, sx = specs[n][0].abs(), specs[n][1].abs()
            if n in STFT_SIZES:
                fb = getattr(self, f"mel{n}")
                mel = mel + F.l1_loss(torch.log10(fb @ sy + 1e-5), torch.log10(fb @ sx + 1e-5))
            mag = mag + F.l1_loss(torch.log(sy + 1e-5), torch.log(sx + 1e-5)) + \
                torch.linalg.norm(sy - sx) / torch.linalg.norm(sx).clamp_min(1e-5)
        for n in self.complex_sizes:
            cy, cx = specs[n]
            py = cy * (cy.abs() + 1e-7).pow(-0.7)  # |S|^0.3 e^(i phase)
            px = cx * (cx.abs() + 1e-7).pow(-0.7)
            cplx = cplx + (py - px).abs().mean()
        return mel / len(STFT_SIZES), mag / len(STFT_SIZES + self.short), cplx / max(len(self.complex_sizes), 1)


def magnitude_loss(model: RvqNet, x: torch.Tensor, n_active: torch.Tensor, focus_db: float = 0.0):
    """Magnitude head (``head="magnitude"``): (L1 of the log magnitudes, spectral convergence of the linear
    magnitudes, cross-entropy of the fundamental logits against :meth:`Decoder.f0_target` (0 without a
    source-filter head), VQ loss) of the decoded STFT frames against those of ``x`` (B, T).

    ``focus_db`` > 0: the L1 is taken on log magnitudes raised to a floor ``focus_db`` below each input frame's
    peak (both sides), plus FOCUS_REST times the plain L1: the bins near the peak (what Griffin-Lim needs exact,
    docs/results.md stop 32) weigh more than the noise 60-100 dB down, whose log magnitudes are mostly random."""
    target = model.encoder.logmag(x[:, None])
    q, vq_loss = model.quantizer(model.encoder(x[:, None], target), n_active)
    pred, logits = model.decoder.logmag(q, with_f0=True)
    conv = torch.linalg.norm(torch.exp(pred.clamp(max=10.0)) - torch.exp(target)) / \
        torch.linalg.norm(torch.exp(target) - MAG_FLOOR).clamp_min(1e-5)
    f0 = torch.zeros(())
    if logits is not None:
        f0 = -(model.decoder.f0_target(target) * torch.log_softmax(logits, -1)).sum(-1).mean()
    logmag = F.l1_loss(pred, target)
    if focus_db > 0:
        floor = target.amax(-1, keepdim=True) - focus_db * NATS_PER_DB
        logmag = F.l1_loss(pred.maximum(floor), target.maximum(floor)) + FOCUS_REST * logmag
    return logmag, conv, f0, vq_loss


def _init_file(init: str) -> bytes:
    """The safetensors bytes ``--init`` names: an installed model's id (checked against its card) or a
    ``.safetensors`` / ``.safetensors.xz`` / ``.safetensors.planes.xz`` file."""
    from .. import zoo
    from ..errors import BadInput

    if not Path(init).exists():
        if init in zoo.cards():
            return zoo.read_weights(zoo.cards()[init])
        raise BadInput(f"--init {init}: no such file and no installed model of that id")
    return zoo.read_safetensors(Path(init))


def default_folders(data: str | None, extra: tuple[str, ...] = ()) -> list[Path]:
    root = corpus_root(data) / "train" / "audio"
    return [root] + [Path(e) for e in extra]


def train(run: Path, steps: int, data: str | None, batch: int = 16, crop: int = 16000, lr: float = 6e-4,
          save_every: int = 250, threads: int | None = None, log=print, extra: tuple[str, ...] = (),
          config: dict | None = None, init: str | None = None, short: tuple[int, ...] = (),
          complex_weight: float = 0.0, reseed_every: int = 0, focus_db: float = 0.0):
    """Train (or resume ``run``). ``init``: an installed model's id, or a model's .safetensors(.xz) file, to start
    a new run from (its networks; fresh optimiser), so training continues across machines where run folders are
    not kept.
    ``short`` (e.g. ``SHORT_SIZES``) and ``complex_weight`` (> 0: the phase-aware term on ``COMPLEX_SIZES``)
    add the optional terms of :class:`SpectralLoss`; rvq-audio-v1 was trained without them. ``reseed_every``:
    every so many steps (in the first half of training) codes unused since the last time are re-seeded from
    recent encoder outputs (rvq-audio-v2: 200). ``focus_db``: the magnitude head's log-magnitude L1 focused on
    the bins within that many dB of each frame's peak (:func:`magnitude_loss`; 0: every bin alike, as up to
    rvq-audio-v4)."""
    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint.pt"
    state = torch.load(ckpt, map_location=device, weights_only=True) if ckpt.exists() else None
    if state:
        cfg = RvqConfig(**state["config"])
    elif init:  # the configuration the model was exported with, ``config`` on top (e.g. a new decoder head)
        from ..zoo import safetensors_metadata

        init_data = _init_file(init)
        cfg = RvqConfig(**{**json.loads(safetensors_metadata(init_data).get("config", "{}")), **(config or {})})
    else:
        cfg = RvqConfig(**(config or {}))
    model = RvqNet(cfg).to(device)
    spec = SpectralLoss(cfg.rate, short, COMPLEX_SIZES if complex_weight else ()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    step = 0
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        log(f"resumed from {ckpt} at step {step}")
    elif init:
        from safetensors.torch import load

        weights = {k[4:]: v.float() for k, v in load(init_data).items() if k.startswith("net.")}
        own = model.state_dict()
        fresh = sorted(k for k, v in own.items() if k not in weights or weights[k].shape != v.shape)
        if any(not k.startswith("decoder.head.") for k in fresh):
            from ..errors import BadInput

            raise BadInput(f"--init {init} does not fit this configuration ({', '.join(fresh[:3])}); only the "
                           f"decoder head (--head-frames) may change")
        model.load_state_dict({k: v for k, v in weights.items() if k not in fresh}, strict=False)
        log(f"initialised from {init}" + (f" (new: {', '.join(fresh)})" if fresh else ""))
    clips = load_clips(default_folders(data, extra), cfg.rate, run / "clips.npz", log=log)
    log(f"{len(clips['speech'])} speech + {len(clips['music'])} music clips "
        f"({sum(map(len, clips['speech'])) / cfg.rate / 60:.0f} + {sum(map(len, clips['music'])) / cfg.rate / 60:.0f}"
        f" min at {cfg.rate} Hz), device {device}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params")
    sampler = Sampler(clips, crop - crop % cfg.hop, seed=step)
    t0, hist = time.time(), []
    gen = torch.Generator().manual_seed(step)
    while step < steps:
        warm = min(1.0, (step + 1) / 500)
        cos = 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr * warm * (0.1 + 0.9 * cos)
        x = torch.from_numpy(sampler.batch(batch)).to(device)
        n_active = torch.randint(1, cfg.n_q + 1, (batch,), generator=gen)
        n_active = torch.where(torch.rand(batch, generator=gen) < 0.6, n_active, cfg.n_q).to(device)
        if cfg.head == "magnitude":  # no waveform in the loop: the decoder's log magnitudes against the input's
            logmag, conv, f0, vq_loss = magnitude_loss(model, x, n_active, focus_db)
            loss = logmag + conv + F0_WEIGHT * f0 + vq_loss
            terms = {"logmag": logmag, "sc": conv, "f0": f0}
        else:
            y, vq_loss = model(x[:, None], n_active)
            mel, mag, cplx = spec(y[:, 0], x)
            loss = 15 * mel + mag + complex_weight * cplx + vq_loss
            terms = {"mel": mel, "mag": mag, "complex": cplx}
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if reseed_every and step % reseed_every == 0 and step <= steps // 2:
            n = sum(vq.reseed_dead() for vqs in model.quantizer.vqs for vq in vqs)
            log(f"step {step}: re-seeded {n} unused codes")
        hist.append([loss.item(), vq_loss.item()] + [float(v.detach()) for v in terms.values()])
        if step % 25 == 0:
            h = np.mean(hist, axis=0)
            hist = []
            log(f"step {step}/{steps} loss {h[0]:.3f} vq {h[1]:.3f} "
                + " ".join(f"{k} {v:.4f}" for k, v in zip(terms, h[2:]))
                + f" ({25 / (time.time() - t0):.2f} steps/s)")
            t0 = time.time()
        if step % save_every == 0 or step == steps:
            tmp = run / "checkpoint.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "config": cfg.to_dict()}, tmp)
            tmp.replace(ckpt)
            (run / "progress.json").write_text(json.dumps({"step": step, "steps": steps}))
    return model, step


@torch.no_grad()
def code_counts(model: RvqNet, clips: dict[str, list[np.ndarray]], seconds: float = 600.0) -> np.ndarray:
    """Code frequencies per (group, level) over up to ``seconds`` of each kind of training audio."""
    cfg = model.cfg
    counts = np.zeros((cfg.groups, cfg.n_q, cfg.codebook_size), dtype=np.int64)
    chunk = cfg.hop * 500
    for kind in clips.values():
        left = int(seconds * cfg.rate)
        for c in kind:
            for s in range(0, len(c) - cfg.hop + 1, chunk):
                seg = c[s : s + chunk]
                seg = seg[: len(seg) - len(seg) % cfg.hop]
                codes = model.quantizer.encode(model.encoder(torch.from_numpy(seg)[None, None]), cfg.n_q)[0]
                for g in range(cfg.groups):
                    for k in range(cfg.n_q):
                        counts[g, k] += np.bincount(codes[g, k].numpy(), minlength=cfg.codebook_size)
                left -= len(seg)
                if left <= 0:
                    break
            if left <= 0:
                break
    return counts


def _tables_and_stats(counts: np.ndarray) -> tuple[np.ndarray, list, list]:
    """Integer code tables (add-one smoothed; the extra last entry is the table set's escape, never used by a
    valid encoder, at the minimum frequency), per-level utilisation and entropy in bits."""
    from ..entropy import quantize_pmf

    groups, n_q, _ = counts.shape
    freqs = np.stack([np.stack([quantize_pmf(np.append((counts[g, k] + 1) / (counts[g, k] + 1).sum(), 0.0))
                                for k in range(n_q)]) for g in range(groups)])
    usage = (counts > 0).mean(-1)
    ent = []
    for g in range(groups):
        for k in range(n_q):
            p = counts[g, k] / max(counts[g, k].sum(), 1)
            ent.append(float(-(p[p > 0] * np.log2(p[p > 0])).sum()))
    return freqs, [round(float(u), 4) for u in usage.reshape(-1)], [round(e, 3) for e in ent]


def _write_model(out: Path, model_id: str, tensors: dict, cfg_dict: dict, card_extra: dict,
                 overwrite: bool = False) -> dict:
    from ..zoo import write_model

    return write_model(out, model_id, "rvq", "audio", tensors, cfg_dict, card_extra, overwrite)


def export(run: Path, out: Path, model_id: str = "rvq-audio-v1", half: bool = True, data: str | None = None,
           extra: tuple[str, ...] = (), extra_card: dict | None = None, log=print,
           clips: dict[str, list[np.ndarray]] | None = None, overwrite: bool = False) -> dict:
    """Checkpoint -> models/<id>.safetensors (fp16 nets, int32 code tables) and its JSON card."""
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = RvqConfig(**state["config"])
    model = RvqNet(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    if half:  # count codes with the weights the codec will load
        model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    if clips is None:
        clips = load_clips(default_folders(data, extra), cfg.rate, run / "clips.npz", log=log)
    freqs, usage, ent = _tables_and_stats(code_counts(model, clips))
    tensors = {f"net.{k}": (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    tensors["codes.freqs"] = torch.from_numpy(freqs.astype(np.int32))
    return _write_model(out, model_id, tensors, cfg.to_dict(),
                        {"training": {"steps": int(state["step"])},
                         "codebooks": {"utilisation": usage, "entropy_bits": ent}, **(extra_card or {})}, overwrite)


def convert_encodec(checkpoint: str, out: Path, model_id: str = "encodec-24khz", folders: list[Path] | None = None,
                    seconds: float = 600.0, log=print, overwrite: bool = False) -> dict:
    """An official EnCodec 24 kHz checkpoint -> an rvq model (arch "encodec") in ``out``.

    Code tables are counted on up to ``seconds`` per kind of the audio under ``folders`` (any audio the user
    has); without folders every code gets the same frequency (log2 1024 = 10 bits a code)."""
    from ..codecs.encodec_net import EncodecNet, from_official
    from ..zoo import load_torch_state

    cfg, state = from_official(load_torch_state(checkpoint))
    model = EncodecNet(cfg)
    model.load_state_dict(state)
    model.eval()
    counts = np.zeros((cfg.groups, cfg.n_q, cfg.codebook_size), dtype=np.int64)
    if folders:
        clips = load_clips(list(folders), cfg.rate, log=log)
        if not any(clips.values()):
            from ..errors import BadInput

            raise BadInput(f"no audio of at least one second under {', '.join(map(str, folders))}")
        counts = code_counts(model, clips, seconds)
        log(f"counted {int(counts[0, 0].sum())} frames of codes")
    freqs, usage, ent = _tables_and_stats(counts)
    tensors = {f"net.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["codes.freqs"] = torch.from_numpy(freqs.astype(np.int32))
    from ..zoo import sha256_file

    return _write_model(out, model_id, tensors, cfg.to_dict(),
                        {"arch": "encodec", "source": {"file": Path(checkpoint).name,
                                                       "sha256": sha256_file(Path(checkpoint))},
                         "codebooks": {"utilisation": usage, "entropy_bits": ent,
                                       "tables": "counted" if folders else "uniform"}}, overwrite)
