"""Training recipe for the WaLLoC codec: ``ncodec train walloc-image``.

One variable-rate model: every sample draws a rate index q in [0, n_rates-1] (continuous), the loss is
lambda(q) * 255^2 * MSE + bpp(y) + bpp(z), with straight-through rounding for the decoder input and uniform
noise for the rate term. ``ste_after`` (off by default) switches the rate term to the rounded symbols from that
step on; a 4000-step fine-tune of walloc-image that way measured slightly worse rate-distortion on kodim05
(0.579 bpp / 25.88 dB vs 0.516 / 25.56 at quality 0, 1.398 / 31.15 vs 1.349 / 31.05 at 50), so it is kept
as an option only. Checkpoints (torch, internal) go to the run folder every ``--save-every`` steps; a run
resumes from its last checkpoint. ``export`` writes the shipped safetensors file with the integer tables.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..codecs import walloc as wc
from ..codecs.walloc_net import WallocConfig, WallocNet
from ..entropy import quantize_pmf

LAMBDAS = (0.0018, 0.00385, 0.0082, 0.0175, 0.0374, 0.08)  # images: x in [0, 1], loss lambda*255^2*MSE + bpp
# audio: signal mapped to [0, 1] (x/2 + 0.5), loss lambda*255^2*MSE + bits per sample
LAMBDAS_AUDIO = (0.03, 0.12, 0.48, 1.9, 7.5, 30.0)
RECIPES = {"walloc-image": ({}, LAMBDAS), "walloc-audio": (None, LAMBDAS_AUDIO)}


def lam_of(q: torch.Tensor, ladder=LAMBDAS) -> torch.Tensor:
    logl = torch.log(torch.tensor(ladder))
    i = q.floor().long().clamp(max=len(ladder) - 2)
    f = q - i
    return torch.exp((1 - f) * logl[i] + f * logl[i + 1])


class Trainer(torch.nn.Module):
    def __init__(self, cfg: WallocConfig):
        super().__init__()
        from compressai.entropy_models import EntropyBottleneck  # lazy: imports torchvision

        self.net = WallocNet(cfg)
        self.eb = EntropyBottleneck(cfg.z_ch)

    def forward(self, x: torch.Tensor, q: torch.Tensor, ste_rate: bool = False):
        net, cfg = self.net, self.net.cfg
        y = net.analysis(x, q)
        z = net.h_a(y)
        z_hat, z_lik = self.eb(z)
        mu, t = net.hyper_synthesis(z_hat)
        pa, pb = net.perm_a, net.perm_b
        ya, yb = y[:, pa], y[:, pb]
        ya_ste = _ste(ya, mu[:, pa])
        mu_b, t_b = net.context(ya_ste, mu[:, pb], t[:, pb])
        yb_ste = _ste(yb, mu_b)
        lik_a = _gauss_lik(ya_ste if ste_rate else ya, mu[:, pa], net.scale_from_t(t[:, pa]), noise=not ste_rate)
        lik_b = _gauss_lik(yb_ste if ste_rate else yb, mu_b, net.scale_from_t(t_b), noise=not ste_rate)
        inv = torch.argsort(torch.cat((pa, pb)))
        y_ste = torch.cat((ya_ste, yb_ste), 1)[:, inv]
        x_hat = net.synthesis(y_ste, q)
        npix = x.shape[-1] * x.shape[-2] if cfg.ndim == 2 else x.shape[-1]
        dims = tuple(range(1, y.dim()))
        bits = -(torch.log2(lik_a).sum(dims) + torch.log2(lik_b).sum(dims) + torch.log2(z_lik).sum(dims))
        mse = F.mse_loss(x_hat, x, reduction="none").mean(dims)
        return mse, bits / npix


def _ste(y, mu):
    """Round around the mean in the forward pass, identity gradient."""
    return y + (torch.round(y - mu) + mu - y).detach()


def _gauss_lik(y, mu, scale, noise: bool = True):
    """Probability of the unit bin around y under N(mu, scale); y gets uniform noise unless already rounded."""
    if noise:
        y = y + torch.empty_like(y).uniform_(-0.5, 0.5)
    d = (y - mu).abs()
    return (_phi((0.5 - d) / scale) - _phi((-0.5 - d) / scale)).clamp_min(1e-9)


def _phi(v):
    return 0.5 * torch.erfc(-v / math.sqrt(2.0))


def train(run: Path, steps: int, data: str | None, batch: int = 8, crop: int = 128, lr: float = 2e-4,
          save_every: int = 500, threads: int | None = None, log=print, recipe: str = "walloc-image",
          ste_after: int | None = None, lambda_scale: float = 1.0, init: str | None = None, warmup: int = 2000):
    """Train (or resume) a walloc model in ``run``. ``init``: start a new run from an installed model's networks
    (the shipped files keep no optimiser state and no float density of z): a fresh entropy bottleneck learns z's
    density alone for ``warmup`` steps at 10x the learning rate, the networks frozen, then everything trains.
    Measured from walloc-image-v4: with 500 warm-up steps at 1x, z still cost 0.153 bpp on check crops (the
    shipped model's z costs ~0.01) and 0.061 after 3000 more joint steps, so z's rate term pulled on the
    hyper-analysis for thousands of steps. 2000 warm-up steps at 10x (under 2 minutes: no gradient through the
    networks) bring it to 0.0074 bpp."""
    from .. import zoo
    from ..codecs.walloc_net import AUDIO_CONFIG
    from .data import AudioSampler, CropSampler, corpus_root, load_audio, load_images

    if threads:
        torch.set_num_threads(threads)
    ste_after = steps + 1 if ste_after is None else ste_after
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run.mkdir(parents=True, exist_ok=True)
    audio = recipe == "walloc-audio"
    ckpt = run / "checkpoint.pt"
    state = torch.load(ckpt, map_location=device, weights_only=True) if ckpt.exists() else None
    card = zoo.find("walloc", "audio" if audio else "image", init) if init and state is None else None
    if state is not None:  # the run's own configuration wins
        cfg = WallocConfig(**state["config"])
    elif card is not None:
        cfg = WallocConfig(**card.card["config"])
    else:
        cfg = WallocConfig(**AUDIO_CONFIG) if audio else WallocConfig()
    ladder = tuple(lambda_scale * v for v in (LAMBDAS_AUDIO if audio else LAMBDAS))
    model = Trainer(cfg).to(device)
    frozen_until = 0
    if card is not None:
        tensors = zoo.load_tensors(card)
        model.net.load_state_dict({k[4:]: v.float() for k, v in tensors.items() if k.startswith("net.")})
        frozen_until = warmup
        log(f"initialised from {card.id}; fresh entropy bottleneck, networks frozen for {warmup} steps")
    net_params = [p for n, p in model.named_parameters() if n.startswith("net.")]
    main_params = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    fast = {"net.log_gain", "net.log_igain"}  # gains learn 5x faster: they set the rate points
    opt = torch.optim.Adam([
        {"params": [p for n, p in model.named_parameters() if n not in fast and not n.endswith("quantiles")]},
        {"params": [p for n, p in model.named_parameters() if n in fast], "lr_scale": 5.0},
    ], lr=lr)
    aux_opt = torch.optim.Adam([model.eb.quantiles], lr=1e-3)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step, frozen_until = int(state["step"]), int(state.get("frozen_until", 0))
        log(f"resumed from {ckpt} at step {step}")
    if audio:
        root = corpus_root(data) / "train" / "audio"
        clips = load_audio(root, crop)
        log(f"{len(clips)} training clips from {root}, device {device}")
        sampler = AudioSampler(clips, crop, seed=step)
    else:
        root = corpus_root(data) / "train" / "images"
        images = load_images(root, crop)
        log(f"{len(images)} training images from {root}, device {device}")
        sampler = CropSampler(images, crop, seed=step)
    t0, hist = time.time(), []
    while step < steps:
        warm = step < frozen_until  # warm-up after --init: only z's density learns, at 10x the rate
        for p in net_params:
            p.requires_grad_(not warm)
        for g in opt.param_groups:  # step decay for the last 20%
            g["lr"] = (lr if step < 0.8 * steps else lr / 4) * g.get("lr_scale", 1.0) * (10.0 if warm else 1.0)
        if audio:
            x = torch.from_numpy(sampler.batch(batch)).to(device)[:, None] * 0.5 + 0.5
        else:
            x = torch.from_numpy(sampler.batch(batch)).to(device).permute(0, 3, 1, 2).float() / 255.0
        q = torch.rand(batch, device=device) * (cfg.n_rates - 1)
        mse, bpp = model(x, q, ste_rate=step >= ste_after)
        loss = (lam_of(q.cpu(), ladder).to(device) * 255**2 * mse + bpp).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux = model.eb.loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
        step += 1
        hist.append((loss.item(), bpp.mean().item(), (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()))
        if step % 50 == 0:
            h = np.mean(hist, axis=0)
            hist = []
            log(f"step {step}/{steps} loss {h[0]:.3f} bpp {h[1]:.3f} psnr {h[2]:.2f} "
                f"({50 / (time.time() - t0):.2f} steps/s)")
            t0 = time.time()
        if step % save_every == 0 or step == steps:
            tmp = run / "checkpoint.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                        "step": step, "config": cfg.to_dict(), "recipe": recipe,
                        "lambda_scale": lambda_scale, "frozen_until": frozen_until, "init": init}, tmp)
            tmp.replace(ckpt)
            (run / "progress.json").write_text(json.dumps({"step": step, "steps": steps}))
    return model, step


@torch.no_grad()
def export(run: Path, out: Path, model_id: str | None = None, extra_card: dict | None = None,
           half: bool = True, overwrite: bool = False) -> dict:
    """Checkpoint -> models/<id>.safetensors (fp16 nets unless ``half`` is False + integer tables) and its card.

    fp16 storage halves the file; the decoder computes in float32 and the entropy nets are rounded to
    2**-12 fixed point anyway, so encoder and decoder still see the very same numbers."""
    from .. import zoo
    from ..entropy import TableSet, gaussian_tables, quantize_pmf

    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = WallocConfig(**state["config"])
    model_id = model_id or ("walloc-image-v2" if cfg.ndim == 2 else "walloc-audio-v2")
    model = Trainer(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    eb = model.eb
    # z: symbols are round(z - median); one table per channel from the learned factorized density evaluated
    # at symbol + median (the median as stored: an integer in 1/2**A_BITS units), in float64
    from ..codecs.walloc_net import FixedPointEntropyNets

    one = 2**FixedPointEntropyNets.A_BITS
    tables, lo = [], []
    quant = eb.quantiles.detach().double()
    median_q = torch.round(quant[:, 0, 1] * one).to(torch.int32)
    for c in range(cfg.z_ch):
        med = median_q[c].item() / one
        a = int(math.floor(quant[c, 0, 0].item() - med)) - 2
        b = int(math.ceil(quant[c, 0, 2].item() - med)) + 2
        a, b = max(a, -2000), min(b, 2000)
        k = torch.arange(a, b + 1, dtype=torch.float64) + med
        x = k.float().reshape(1, 1, -1).expand(cfg.z_ch, 1, -1).contiguous()
        pmf = eb._likelihood(x)[0][c, 0].double().numpy()  # (likelihood, lower, upper) in compressai 1.2
        tables.append(quantize_pmf(np.append(pmf, max(1.0 - pmf.sum(), 1e-9))))
        lo.append(a)
    zt = TableSet.from_tables(tables, lo)
    scales = cfg.scale_min * np.exp(cfg.log_step * np.arange(cfg.n_scales))
    yt = gaussian_tables(scales)
    tensors = {f"net.{k}": (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.net.state_dict().items()}
    tensors["z.median_q"] = median_q
    for name, ts in (("z", zt), ("y", yt)):
        tensors[f"{name}.freqs"] = torch.from_numpy(ts.freqs.astype(np.int32))
        tensors[f"{name}.offsets"] = torch.from_numpy(ts.offsets.astype(np.int32))
        tensors[f"{name}.lo"] = torch.from_numpy(ts.lo.astype(np.int32))
    training = {"steps": int(state["step"]), "lambdas": [float(state.get("lambda_scale", 1.0)) * v
                                                         for v in (LAMBDAS if cfg.ndim == 2 else LAMBDAS_AUDIO)]}
    return zoo.write_model(out, model_id, "walloc", "image" if cfg.ndim == 2 else "audio", tensors, cfg.to_dict(),
                           {"training": training, **(extra_card or {})}, overwrite)


# ------------------------------------------------------------------------------------------- context model
CM_QUALITIES = (0, 15, 30, 50, 70, 85, 100)  # rates the context model is fitted on (pooled)
# shared residual tables; side fits (60 images, tables over (-1.5, 7.5) unless said) measured on Kodak y bits at
# quality 10 / 50 / 90, relative to 512 tables: 256 +1.5 / +0.6 / +0.3 %, 64 over (-1, 7) +8.3 / +4.1 / +2.1 %;
# tables per colour channel would add another -0.5 / -0.2 / -0.04 % (not used)
CM_TABLES = 512
CM_LOG_RANGE = (-1.5, 7.5)  # predicted log2(|r| + 0.5) mapped linearly onto the tables
# z: a side fit (94 images x 4 qualities, 32 or 64 tables over (-1.5, 5.5) alike) cut Kodak's z bits by 31 / 22 /
# 15 % at quality 0 / 20 / 50 against the factorized per-channel tables (z is 4 / 2.5 / 1.3 % of the file)
CM_Z_TABLES = 32
CM_Z_LOG_RANGE = (-1.5, 5.5)
CM_THRESHOLDS = tuple(int(v) for v in np.unique(np.round(np.concatenate(
    [np.arange(8), 2 ** np.arange(3, 14, 0.5)]))))  # energy bins: E >= threshold[i] -> bin i


def fit_context(base: str, data: str | None, out: Path, model_id: str, tables: int = CM_TABLES,
                qualities=CM_QUALITIES, limit: int | None = None, crop: int = 768, spread: int = 2,
                log=print, overwrite: bool = False) -> dict:
    """Fit the integer causal context models (``ncodec.codecs.walloc.ContextModel``) of an image model on the
    training images and write ``<out>/<model_id>`` = the base model's tensors + ``cm.*`` (y) + ``cmz.*`` (z),
    with its card.

    The networks and hence every symbol are the base model's: only the probability model changes. Three passes
    over (training image, quality): least-squares predictor per band from the six causal neighbours; an additive
    model per band, log2(|r| + 0.5) ~ U[band, t] + V[band, e] over the hyperprior scale index t (z: none) and the
    neighbour energy bin e, mapped onto the tables; the tables' residual histograms (pooled over bands and rates).
    """
    from .. import zoo
    from ..codecs.base import image_tiles
    from ..codecs.walloc import IMAGE_DEADZONE, TILE, WallocModel
    from .data import corpus_root, load_images

    t_start = time.time()
    card = zoo.find("walloc", "image", base)
    tensors = zoo.load_tensors(card)
    if any(k.startswith("cm") for k in tensors):
        raise ValueError(f"{base} already has a context model; fit on a model without one")
    model = WallocModel(tensors, WallocConfig(**card.card["config"]))
    cfg = model.cfg
    root = corpus_root(data) / "train" / "images"
    images = load_images(root, 64)[:limit]
    log(f"fitting the context model of {card.id} on {len(images)} images from {root}, qualities {list(qualities)}")
    pa, pb, pz = model.net.perm_a.numpy(), model.net.perm_b.numpy(), np.arange(cfg.z_ch)
    fits = {"y": _StreamFit(cfg.latent, cfg.n_scales, tables, CM_LOG_RANGE),
            "z": _StreamFit(cfg.z_ch, 1, CM_Z_TABLES, CM_Z_LOG_RANGE)}

    def streams(every: int = 1):
        """(model key, symbols (nb, H, W), scale indices, bands) of every stream: image i (every ``every``-th
        image; its central crop of at most ``crop`` px a side) at every ``spread``-th quality from quality i mod
        spread."""
        for i, img in enumerate(images):
            if i % every:
                continue
            h, w = img.shape[:2]
            img = img[max(0, (h - crop) // 2):][:crop, max(0, (w - crop) // 2):][:, :crop]
            for q in qualities[i % spread :: spread] if spread > 1 else qualities:
                for _, x in image_tiles(img, TILE, cfg.stride):
                    d = model.symbols(x, q, IMAGE_DEADZONE)  # the symbols the image encoder writes
                    z = d["z"][0].astype(np.int64)
                    yield "z", z, np.zeros_like(z), pz
                    yield "y", d["a"][0], d["ta"][0], pa
                    yield "y", d["b"][0], d["tb"][0], pb

    for key, s, _, bands in streams(4):  # a few parameters per band: a quarter of the images is plenty
        fits[key].add_predictor(s, bands)
    for f in fits.values():
        f.solve_predictor()
    log(f"predictor: low band weights {np.round(fits['y'].weights[0], 3).tolist()}")
    for key, s, t, bands in streams(2):
        fits[key].add_cells(s, t, bands)
    for f in fits.values():
        f.solve_additive()
    for key, s, t, bands in streams():
        fits[key].add_histogram(s, t, bands)
    cms = {k: f.model() for k, f in fits.items()}
    for k, f in fits.items():
        used = f.hist.sum(1)
        log(f"{k} tables: {int((used > 0).sum())} of {len(used)} used, {int(used.sum())} symbols, escapes "
            f"{f.hist[:, -1].sum() / max(used.sum(), 1):.2e}")

    new = dict(tensors)
    for k, prefix in (("y", "cm"), ("z", "cmz")):
        new.update({n: torch.from_numpy(a) for n, a in cms[k].tensors(prefix).items()})
    result = json.loads(json.dumps(card.card))
    result.update({"context_model": {"base": card.id, "tables": tables, "log_range": list(CM_LOG_RANGE),
                                     "z_tables": CM_Z_TABLES, "z_log_range": list(CM_Z_LOG_RANGE),
                                     "qualities": list(qualities), "images": len(images), "crop": crop,
                                     "qualities_per_image": f"qualities[i % {spread} :: {spread}] for image i",
                                     "data": str(root.relative_to(root.parents[2])) if len(root.parents) > 2
                                     else str(root)}})
    for key in ("results", "base_model"):  # the file written holds every tensor
        result.pop(key, None)
    result["compute"] = (f"context model: {(time.time() - t_start) / 60:.0f} min on 2 CPU cores, no GPU "
                         f"(networks: {base})")
    return zoo.write_model(out, model_id, "walloc", "image", new, cfg.to_dict(), result, overwrite)


class _StreamFit:
    """Sufficient statistics and solutions of one context model (y or z) across the three passes."""

    def __init__(self, n_bands: int, n_t: int, tables: int, log_range: tuple[float, float]):
        self.c, self.nt, self.ne, self.tables, self.log_range = n_bands, n_t, len(CM_THRESHOLDS), tables, log_range
        self.xtx, self.xty = np.zeros((n_bands, 6, 6)), np.zeros((n_bands, 6))
        self.cnt, self.tot = np.zeros((n_bands, n_t * self.ne)), np.zeros((n_bands, n_t * self.ne))
        self.hist = np.zeros((tables, 2 * wc.CM_RES + 2))
        self.u = np.zeros((n_bands, n_t), np.int64)
        self.v = np.zeros((n_bands, self.ne), np.int64)

    def add_predictor(self, s, bands):
        sf = s.astype(np.float64)
        n = np.stack([wc.cm_shift(sf, dy, dx) for dy, dx in wc.CM_OFFSETS]).reshape(6, len(bands), -1)
        self.xtx[bands] += np.einsum("kcn,lcn->ckl", n, n)
        self.xty[bands] += np.einsum("kcn,cn->ck", n, sf.reshape(len(bands), -1))

    def solve_predictor(self):
        self.weights = np.stack([np.linalg.solve(self.xtx[c] + 1e-3 * np.eye(6), self.xty[c]) for c in range(self.c)])
        self.pred = np.round(self.weights * 2**wc.CM_PRED_BITS).astype(np.int64)
        self._fixed = self.model()  # predictor only (flat tables) for pass 2

    def model(self) -> "wc.ContextModel":
        """The integer model: histogram tables once pass 3 has run, flat placeholders before."""
        if self.hist.any():
            freqs = np.stack([quantize_pmf(h + 0.02, wc.CM_PRECISION) for h in self.hist])
        else:
            freqs = np.full((self.tables, 2 * wc.CM_RES + 2), 1 << (wc.CM_PRECISION - 8))
            freqs[:, 0] += (1 << wc.CM_PRECISION) - freqs.sum(1)
        return wc.ContextModel(self.pred, self.u, self.v, np.array(CM_THRESHOLDS, np.int64), freqs)

    def add_cells(self, s, t, bands):
        cm = self._fixed
        r = cm.residuals(s, bands)
        cell = (t.astype(np.int64) * self.ne + cm.energy_bins(r)).reshape(len(bands), -1)
        target = np.log2(np.abs(r).reshape(len(bands), -1) + 0.5)
        n = self.nt * self.ne
        for j, c in enumerate(bands):
            self.cnt[c] += np.bincount(cell[j], minlength=n)
            self.tot[c] += np.bincount(cell[j], weights=target[j], minlength=n)

    def solve_additive(self):
        lo, hi = self.log_range
        unit = self.tables / (hi - lo) * 2**wc.CM_BIN_BITS  # the table index carries fractional bits
        for c in range(self.c):
            u, v = _additive_fit(self.cnt[c].reshape(self.nt, self.ne), self.tot[c].reshape(self.nt, self.ne))
            self.u[c] = np.round((u - lo) * unit)
            self.v[c] = np.round(v * unit)
        self._fixed = self.model()

    def add_histogram(self, s, t, bands):
        res = wc.CM_RES
        r, tab = self._fixed.analyse(s, t, bands)
        local = np.where(np.abs(r) > res, 2 * res + 1, r + res)
        k = self.hist.shape[1]
        self.hist += np.bincount((tab * k + local).reshape(-1), minlength=self.hist.size).reshape(self.hist.shape)


def _additive_fit(cnt: np.ndarray, tot: np.ndarray, min_count: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of target ~ u[t] + v[e] from cell counts and target sums (nt, ne); rows / columns with
    fewer than ``min_count`` samples are filled from their neighbours (held at the edges)."""
    nt, ne = cnt.shape
    rows, cols = cnt.sum(1), cnt.sum(0)
    a = np.zeros((nt + ne, nt + ne))
    a[np.arange(nt), np.arange(nt)] = rows
    a[nt + np.arange(ne), nt + np.arange(ne)] = cols
    a[:nt, nt:] = cnt
    a[nt:, :nt] = cnt.T
    b = np.concatenate([tot.sum(1), tot.sum(0)])
    sol = np.linalg.solve(a + 1e-3 * np.eye(nt + ne), b)
    u, v = sol[:nt], sol[nt:]
    for vec, n in ((u, rows), (v, cols)):
        ok = n >= min_count
        if ok.any():
            vec[:] = np.interp(np.arange(len(vec)), np.flatnonzero(ok), vec[ok])
    return u, v


# ------------------------------------------------------------------------------------------- decoder fine-tune
DECODER_PARAMS = ("dec_lin.", "dec.", "log_igain", "colour_inv")  # the synthesis: all the decoder runs after y_hat


def _synthesis_state(state: dict, n_res_from: int, n_res_to: int) -> dict:
    """A WallocNet state dict with its decoder's output conv moved from ``dec.{2 + n_res_from}`` to
    ``dec.{2 + n_res_to}`` (decoder = conv, GELU, n_res residual blocks, conv)."""
    a, b = f"dec.{2 + n_res_from}.", f"dec.{2 + n_res_to}."
    return {(b + k[len(a):] if k.startswith(a) else k): v for k, v in state.items()}


def train_decoder(run: Path, base: str, steps: int, data: str | None, batch: int = 8, crop: int = 128,
                  lr: float = 2e-4, n_res: int | None = None, save_every: int = 250, check_every: int = 1000,
                  threads: int | None = None, log=print):
    """Fine-tune the synthesis of an installed walloc image model on exactly the latents its encoder writes.

    The encoder, hyperprior, context networks and probability models stay frozen, so the symbols and the bytes
    of every file are the base model's; only the pixels the decoder makes change. Each step draws one quality
    in [0, 100], computes the coded latent of a batch of crops with the inference path (fixed-point
    means, the image zero zone) and minimises log(MSE) of the synthesis, which weighs every rate alike in dB.
    ``n_res`` > the base's adds residual blocks whose last conv starts at zero (the same decoder at step 0).
    A fixed check set (crops of the last 5 % of the training images, held back from the fine-tune; the base
    networks may have seen them) is scored every ``check_every`` steps. Resumable from ``run/decoder.pt``.
    """
    from .. import zoo
    from ..codecs.walloc import IMAGE_DEADZONE, WallocModel
    from .data import CropSampler, corpus_root, load_images
    from .finetune import check_psnr, finetune

    if threads:
        torch.set_num_threads(threads)
    card = zoo.find("walloc", "image", base)
    tensors = zoo.load_tensors(card)
    frozen = WallocModel(tensors, WallocConfig(**card.card["config"]))
    cfg0 = frozen.cfg
    ckpt = run / "decoder.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
    if state is not None and state["base"] != card.id:
        raise ValueError(f"{ckpt} fine-tunes {state['base']}, not {card.id}")
    cfg = WallocConfig(**(state["config"] if state else {**cfg0.to_dict(), "n_res": n_res or cfg0.n_res}))
    if cfg.n_res < cfg0.n_res:
        raise ValueError(f"the decoder can only grow ({cfg0.n_res} residual blocks in {card.id})")
    net = WallocNet(cfg)
    missing, _ = net.load_state_dict(_synthesis_state(frozen.net.state_dict(), cfg0.n_res, cfg.n_res), strict=False)
    for i in range(cfg0.n_res, cfg.n_res):  # new blocks start as the identity
        blk = net.dec[2 + i]
        torch.nn.init.zeros_(blk.b.weight)
        torch.nn.init.zeros_(blk.b.bias)
    if any(not k.startswith(DECODER_PARAMS) for k in missing):
        raise ValueError(f"unexpected missing tensors {missing}")
    params = [p for n, p in net.named_parameters() if n.startswith(DECODER_PARAMS)]
    for n, p in net.named_parameters():
        p.requires_grad_(n.startswith(DECODER_PARAMS))
    opt = torch.optim.Adam(params, lr=lr)
    step, seconds = 0, 0.0
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step, seconds = int(state["step"]), float(state.get("seconds", 0.0))
        log(f"resumed from {ckpt} at step {step}")
    run.mkdir(parents=True, exist_ok=True)
    root = corpus_root(data) / "train" / "images"
    images = load_images(root, max(crop, 256))
    n_check = max(1, len(images) // 20)
    train_imgs, check_imgs = images[:-n_check], images[-n_check:]
    log(f"decoder fine-tune of {card.id}: {cfg0.n_res} -> {cfg.n_res} residual blocks, {len(train_imgs)} training "
        f"images, {n_check} check images from {root}")
    check = [(q, torch.from_numpy(CropSampler(check_imgs, 256, seed=q).batch(8)).permute(0, 3, 1, 2).float() / 255)
             for q in (0, 50, 100)]

    def latent(x, q):
        return frozen.synthesis_input(frozen.symbols(x, q, IMAGE_DEADZONE))

    check_hat = [(x, latent(x, q), frozen.rate_index(q).expand(len(x))) for q, x in check]
    if step == 0:
        log(f"check PSNR at qualities 0/50/100 (8 crops of 256 px each): base {check_psnr(net, check_hat)}")
    sampler = CropSampler(train_imgs, crop, seed=1000 + step)
    rng = np.random.default_rng(step)

    def batch_loss() -> torch.Tensor:
        x = torch.from_numpy(sampler.batch(batch)).permute(0, 3, 1, 2).float() / 255.0
        q = float(rng.uniform(0, 100))
        return torch.log10(F.mse_loss(net.synthesis(latent(x, q), frozen.rate_index(q).expand(batch)), x))

    step = finetune(run, net, params, opt, step, steps, lr, batch_loss, lambda: check_psnr(net, check_hat),
                    {"config": cfg.to_dict(), "base": card.id, "lr": lr, "batch": batch, "crop": crop}, seconds,
                    save_every=save_every, check_every=check_every, log=log)
    return net, step


def export_decoder(run: Path, out: Path, model_id: str, extra_card: dict | None = None, log=print,
                   overwrite: bool = False) -> dict:
    """``run/decoder.pt`` -> ``<out>/<model_id>``: the fine-tuned synthesis in fp16 and a card whose
    ``base_model`` names the base model (pinned by SHA-256) for every other tensor (networks, tables, context
    models; ``ncodec.zoo`` merges them). Same symbols and bytes as the base model."""
    from .. import zoo

    state = torch.load(run / "decoder.pt", map_location="cpu", weights_only=True)
    card = zoo.find("walloc", "image", state["base"])
    cfg = WallocConfig(**state["config"])
    old = card.card["config"]["n_res"]
    tensors = {f"net.{k}": v.half().contiguous() for k, v in state["net"].items() if k.startswith(DECODER_PARAMS)}
    result = json.loads(json.dumps(card.card))
    for key in ("results", "file", "sha256", "base_model"):
        result.pop(key, None)
    recipe = (f"ncodec train walloc-decoder --base {card.id} --res-blocks {cfg.n_res} --steps {state['step']} "
              f"--batch {state['batch']} --crop {state['crop']} --lr {state['lr']} --export models/")
    result.update({"recipe": recipe, "history": f"{card.card.get('history', '')} {model_id}: {card.id} with its "
                   f"synthesis fine-tuned ({old} -> {cfg.n_res} residual blocks); same symbols and bytes.".strip(),
                   "base_model": {"id": card.id, "sha256": card.identity,
                                  "replaced": [f"net.{p}" for p in DECODER_PARAMS]},
                   "decoder_finetune": {"base": card.id, "steps": int(state["step"]), "lr": state["lr"],
                                        "batch": state["batch"], "crop": state["crop"],
                                        "residual_blocks": [old, cfg.n_res]}})
    if "seconds" in state:
        result["compute"] = (f"decoder fine-tune: {state['seconds'] / 60:.0f} min on 2 CPU cores, no GPU; "
                             f"base: {card.card.get('compute', card.id)}")
    result.update(extra_card or {})
    for key in ("id", "codec", "media", "config"):
        result.pop(key, None)
    result = zoo.write_model(out, model_id, "walloc", "image", tensors, cfg.to_dict(), result, overwrite)
    weights = Path(out) / result["file"]
    log(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
    return result
