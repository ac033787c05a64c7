"""Training recipe for the extreme VQGAN codec: ``ncodec train vqgan``.

Three stages, all resumable from the run folder (torch checkpoints, internal):

1. ``autoencoder`` (``checkpoint.pt``): L1 + MS-SSIM (3 scales) + scale-free commitment, an EMA codebook seeded
   from latents after ``WARMUP`` plain-autoencoder steps and dead codewords re-seeded, and from ``adv_start`` on a
   hinge PatchGAN loss with VQGAN's adaptive weight (gradient-norm ratio at the decoder's last layer).
2. ``ladder`` (``ladder.pt``): each rung K < codebook size is k-means of the big codebook (weighted by how often
   each codeword is used), then its codewords are fine-tuned through the frozen decoder with the frozen encoder's
   latents quantised to the rung.
3. ``transformer`` (``transformer.pt``): the masked-index transformer, trained on index maps of training crops at
   random rungs with random mask ratios.

:func:`export` writes the shipped safetensors file: fp16 networks and codebooks, int32 rung maps, and integer
context tables (see ncodec.codecs.vqgan) counted on training crops.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..codecs.vqgan_net import Discriminator, IndexTransformer, TransformerConfig, VqganConfig, VqganNet

WARMUP = 300  # plain-autoencoder steps before the codebook is seeded from latents
RESEED_EVERY = 100
LOG_EVERY = 50
MS_WEIGHT = 0.5  # (1 - MS-SSIM) against L1
COMMIT = 0.25
ADV_WEIGHT = 0.1  # times VQGAN's adaptive ratio
MS_SCALES = (0.0448, 0.2856, 0.3001)  # first three MS-SSIM weights (renormalised by pytorch_msssim)


def ms_ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from pytorch_msssim import ms_ssim

    return 1 - ms_ssim(x.clamp(0, 1), y, data_range=1.0, win_size=7, weights=list(MS_SCALES))


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _sampler(data, crop, seed):
    from .data import CropSampler, corpus_root, load_images

    root = corpus_root(data) / "train" / "images"
    return CropSampler(load_images(root, crop), crop, seed=seed), root


def _crops(sampler, n, device="cpu"):
    return torch.from_numpy(sampler.batch(n)).to(device).permute(0, 3, 1, 2).float() / 255.0


def train(run: Path, steps: int, data: str | None, batch: int = 16, crop: int = 128, lr: float = 4e-4,
          save_every: int = 250, log=print, config: dict | None = None, adv_start: float = 0.75,
          warmup: int = WARMUP):
    """Stage 1. ``adv_start``: fraction of ``steps`` after which the adversarial loss is on."""
    run.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = run / "checkpoint.pt"
    state = torch.load(ckpt, map_location=device, weights_only=True) if ckpt.exists() else None
    cfg = VqganConfig(**(state["config"] if state else (config or {})))
    net, disc = VqganNet(cfg).to(device), Discriminator().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    step = 0
    if state:
        net.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt.load_state_dict(state["opt"])
        opt_d.load_state_dict(state["opt_d"])
        step = int(state["step"])
        log(f"resumed from {ckpt} at step {step}")
    sampler, root = _sampler(data, crop, step)
    log(f"{len(sampler.images)} training images from {root}, device {device}, "
        f"{sum(p.numel() for p in net.parameters())} parameters (discriminator "
        f"{sum(p.numel() for p in disc.parameters())})")
    usage = torch.zeros(cfg.codebook_size)
    w_adv = None
    t0, hist = time.time(), []
    while step < steps:
        if step == warmup:
            with torch.no_grad():
                z = torch.cat([net.analysis(_crops(sampler, batch, device)) for _ in range(8)])
                v = z.permute(0, 2, 3, 1).reshape(-1, cfg.dim)
                pick = torch.randint(0, len(v), (cfg.codebook_size,))
                net.vq.reseed(torch.arange(cfg.codebook_size), v[pick] + 1e-3 * torch.randn_like(v[pick]))
            log(f"step {step}: codebook seeded from {len(v)} latent vectors")
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 200) if step < 0.85 * steps else lr / 4
        x = _crops(sampler, batch, device)
        quant = step >= warmup
        x_hat, commit, idx = net(x, quantize=quant)
        l1 = (x_hat - x).abs().mean()
        msl = ms_ssim_loss(x_hat, x)
        rec = l1 + MS_WEIGHT * msl
        loss = rec + COMMIT * commit
        adv = step >= adv_start * steps
        if adv:
            g_loss = -disc(x_hat).mean()
            if w_adv is None or step % 10 == 0:  # the adaptive weight, refreshed every 10 steps (it is costly)
                last = net.dec[-1].weight
                gr = torch.autograd.grad(rec, last, retain_graph=True)[0].norm()
                gg = torch.autograd.grad(g_loss, last, retain_graph=True)[0].norm()
                w_adv = (gr / (gg + 1e-4)).clamp(0, 1e4).item() * ADV_WEIGHT
            loss = loss + w_adv * g_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        d_loss = torch.zeros(())
        if adv:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(x_hat.detach())).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        step += 1
        if idx is not None:
            usage += torch.bincount(idx.reshape(-1).cpu(), minlength=cfg.codebook_size)
            if step % RESEED_EVERY == 0:
                with torch.no_grad():
                    dead = torch.nonzero(usage == 0).flatten()
                    if len(dead):
                        v = net.analysis(x).permute(0, 2, 3, 1).reshape(-1, cfg.dim)
                        net.vq.reseed(dead, v[torch.randint(0, len(v), (len(dead),))])
                if step % 500 == 0:
                    log(f"step {step}: {int((usage > 0).sum())}/{cfg.codebook_size} codewords used in the last "
                        f"{RESEED_EVERY} steps, {len(dead)} re-seeded")
                usage.zero_()
        mse = F.mse_loss(x_hat.detach().clamp(0, 1), x)
        hist.append((l1.item(), 1 - msl.item(), commit.item(), 10 * np.log10(1 / max(mse.item(), 1e-10)),
                     d_loss.item()))
        if step % LOG_EVERY == 0:
            h = np.mean(hist, axis=0)
            hist = []
            log(f"step {step}/{steps} l1 {h[0]:.4f} ms-ssim {h[1]:.4f} commit {h[2]:.3f} psnr {h[3]:.2f} "
                f"d {h[4]:.3f} ({LOG_EVERY / (time.time() - t0):.2f} steps/s)")
            t0 = time.time()
        if step % save_every == 0 or step == steps:
            _save(ckpt, {"model": net.state_dict(), "disc": disc.state_dict(), "opt": opt.state_dict(),
                         "opt_d": opt_d.state_dict(), "step": step, "config": cfg.to_dict()})
            (run / "progress.json").write_text(json.dumps({"stage": "autoencoder", "step": step, "steps": steps}))
    return net, step


def load_autoencoder(run: Path) -> VqganNet:
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    net = VqganNet(VqganConfig(**state["config"]))
    net.load_state_dict(state["model"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@torch.no_grad()
def _latents(net: VqganNet, sampler, crops: int, batch: int = 16) -> torch.Tensor:
    """Encoder latents (N, h, w, dim) of ``crops`` training crops."""
    out = [net.analysis(_crops(sampler, min(batch, crops - i))).permute(0, 2, 3, 1) for i in range(0, crops, batch)]
    return torch.cat(out)


def ladder(run: Path, data: str | None, steps: int = 200, batch: int = 16, crop: int = 128, lr: float = 2e-4,
           log=print, val_crops: int = 64, eval_every: int = 50) -> list[dict]:
    """Stage 2: every rung below the full codebook (resumable per rung, saved in ``ladder.pt``).

    Each rung starts from k-means of the big codebook (weighted by use) and is fine-tuned through the frozen
    decoder; the loss on ``val_crops`` fixed held-back crops is measured at the start and every ``eval_every``
    steps, and the best codebook (possibly the k-means start) is kept: 150 steps at lr 1e-3 without this check
    made Kodak slightly worse than k-means alone (docs/results/vqgan-ladder)."""
    from ..codecs.mcquic_net import nearest
    from .mcquic import kmeans

    net = load_autoencoder(run)
    cfg = net.cfg
    path = run / "ladder.pt"
    done = torch.load(path, weights_only=True)["rungs"] if path.exists() else []
    big = net.vq.embed.clone()
    sampler, _ = _sampler(data, crop, 777)
    z = _latents(net, sampler, 512).reshape(-1, cfg.dim)
    usage = torch.bincount(nearest(z, big), minlength=cfg.codebook_size).double()
    log(f"ladder: big codebook uses {int((usage > 0).sum())}/{cfg.codebook_size} codewords on 512 crops")
    val_sampler, _ = _sampler(data, crop, 999)
    val = [_crops(val_sampler, batch) for _ in range(max(1, val_crops // batch))]

    def loss_of(cb, x):
        with torch.no_grad():
            zz = net.analysis(x).permute(0, 2, 3, 1)
            idx = nearest(zz.reshape(-1, cfg.dim), cb.detach()).reshape(zz.shape[:3])
        x_hat = net.decode_latent(cb, idx)
        return (x_hat - x).abs().mean() + MS_WEIGHT * ms_ssim_loss(x_hat, x)

    def val_loss(cb):
        with torch.no_grad():
            return float(np.mean([loss_of(cb, x).item() for x in val]))

    for r, k in enumerate(cfg.rungs):
        if r < len(done):
            continue
        if k == cfg.codebook_size:
            done.append({"k": k, "codebook": big, "map": torch.arange(k, dtype=torch.int32), "loss": []})
            continue
        lab, cent = kmeans(big.double().numpy(), k, iters=30, seed=k, weights=usage.numpy(), centroids=True)
        cb = torch.nn.Parameter(torch.from_numpy(cent).float())
        opt = torch.optim.Adam([cb], lr=lr)
        start = best = val_loss(cb)
        best_cb, best_step = cb.detach().clone(), 0
        for s in range(1, steps + 1):
            loss = loss_of(cb, _crops(sampler, batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if s % eval_every == 0:
                v = val_loss(cb)
                if v < best:
                    best, best_cb, best_step = v, cb.detach().clone(), s
        log(f"ladder rung K={k}: held-back loss {start:.4f} (k-means) -> {best:.4f}, kept step {best_step} of "
            f"{steps}")
        done.append({"k": k, "codebook": best_cb, "map": torch.from_numpy(lab).int(), "loss": [start, best],
                     "kept_step": best_step})
        _save(path, {"rungs": done})
    _save(path, {"rungs": done})
    return done


def load_ladder(run: Path) -> list[dict]:
    return torch.load(run / "ladder.pt", weights_only=True)["rungs"]


def train_transformer(run: Path, data: str | None, steps: int = 2000, batch: int = 32, crop: int = 256,
                      lr: float = 5e-4, crops: int = 3000, log=print, save_every: int = 250):
    """Stage 3: the masked-index transformer (resumable, ``transformer.pt``). Each step draws a rung and a mask
    ratio in [0.05, 0.6] per sample; the loss is the rung's negative log-likelihood of the masked indices."""
    from ..codecs.mcquic_net import nearest
    from ..codecs.vqgan_net import rung_logprobs

    net = load_autoencoder(run)
    cfg = net.cfg
    rungs = load_ladder(run)
    path = run / "transformer.pt"
    state = torch.load(path, weights_only=True) if path.exists() else None
    tcfg = TransformerConfig(**(state["config"] if state else {}))
    tf = IndexTransformer(tcfg, cfg.dim, cfg.codebook_size)
    opt = torch.optim.Adam(tf.parameters(), lr=lr)
    step = 0
    if state:
        tf.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        log(f"transformer: resumed at step {step}")
    sampler, _ = _sampler(data, crop, 4242)
    z = _latents(net, sampler, crops)
    log(f"transformer: {sum(p.numel() for p in tf.parameters())} parameters, latents of {len(z)} crops")
    gen = torch.Generator().manual_seed(step)
    t0, hist = time.time(), []
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) if step < 0.8 * steps else lr / 4
        r = int(torch.randint(0, len(rungs), (1,), generator=gen))
        cb, rmap = rungs[r]["codebook"], rungs[r]["map"]
        zz = z[torch.randint(0, len(z), (batch,), generator=gen)]
        if torch.rand(1, generator=gen) < 0.5:
            zz = zz.flip(2)
        idx = nearest(zz.reshape(-1, cfg.dim), cb).reshape(zz.shape[:3])
        ratio = 0.05 + 0.55 * torch.rand(batch, 1, 1, generator=gen)
        known = torch.rand(idx.shape, generator=gen) > ratio
        logp = rung_logprobs(tf(cb[idx], known), rmap, rungs[r]["k"])
        target = idx[~known]
        nll = -logp.gather(-1, target[:, None])[:, 0].mean()
        acc = (logp.argmax(-1) == target).float().mean()
        opt.zero_grad()
        nll.backward()
        torch.nn.utils.clip_grad_norm_(tf.parameters(), 1.0)
        opt.step()
        step += 1
        hist.append((nll.item(), acc.item()))
        if step % LOG_EVERY == 0:
            h = np.mean(hist, axis=0)
            hist = []
            log(f"transformer step {step}/{steps} nll {h[0]:.3f} accuracy {h[1]:.3f} "
                f"({LOG_EVERY / (time.time() - t0):.2f} steps/s)")
            t0 = time.time()
        if step % save_every == 0 or step == steps:
            _save(path, {"model": tf.state_dict(), "opt": opt.state_dict(), "step": step, "config": tcfg.to_dict()})
    return tf


CLUSTERS = 8  # context classes of codewords (per rung, at most K)
PRIOR = 32.0  # pseudo-counts pulling each context table towards the rung's marginal


@torch.no_grad()
def export(run: Path, out: Path, model_id: str = "vqgan-image-v1", data: str | None = None, crops: int = 1600,
           crop: int = 256, log=print, extra_card: dict | None = None, overwrite: bool = False) -> dict:
    """Run folder -> models/<id>.safetensors (fp16 networks and codebooks; int32 rung maps, context classes,
    tables) + card. Tables are counted on ``crops`` training crops with the weights the codec loads."""
    net = load_autoencoder(run)
    cfg = net.cfg
    tstate = torch.load(run / "transformer.pt", map_location="cpu", weights_only=True)
    tensors = {f"net.{k}": v.half().contiguous() for k, v in net.state_dict().items() if not k.startswith("vq.")}
    tensors.update({f"tf.{k}": v.half().contiguous() for k, v in tstate["model"].items()})
    net.load_state_dict({k: v.half().float() if not k.startswith("vq.") else v for k, v in net.state_dict().items()})
    sampler, _ = _sampler(data, crop, 12345)
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    config = {**cfg.to_dict(), "clusters": CLUSTERS, "transformer": tstate["config"]}
    card = {"training": {"steps": int(state["step"]), "transformer_steps": int(tstate["step"]),
                         "tables": f"counted on {crops} random {crop}px training crops, {CLUSTERS} context classes "
                                   f"per rung (left, up neighbours within the phase group), prior {PRIOR}"},
            **(extra_card or {})}
    return write_vqgan(out, model_id, config, tensors, load_ladder(run), _latents(net, sampler, crops), card, log,
                       overwrite)


def write_vqgan(out: Path, model_id: str, config: dict, tensors: dict, rungs: list[dict], z: torch.Tensor | None,
                card: dict, log=print, overwrite: bool = False) -> dict:
    """Add the rung codebooks, maps, context classes and tables (counted on latents ``z`` (N, h, w, dim); None:
    uniform tables) to ``tensors`` and write the model."""
    from ..codecs.mcquic_net import nearest
    from ..codecs.vqgan import PHASES, contexts
    from ..entropy import TableSet
    from ..zoo import write_model
    from .mcquic import kmeans, tables_from_counts

    marg, cond, rung_stats = [], [], []
    for r, rung in enumerate(rungs):
        k = rung["k"]
        cb = rung["codebook"].half()
        c = min(CLUSTERS, k)
        classes = np.arange(k, dtype=np.int32) if c == k else kmeans(cb.float().numpy(), c, seed=r)
        m = np.zeros(k, np.int64)
        cnt = np.zeros(((c + 1) ** 2, k), np.int64)
        if z is not None:
            idx = nearest(z.reshape(-1, z.shape[-1]), cb.float()).reshape(z.shape[:3]).numpy()
            m += np.bincount(idx.reshape(-1), minlength=k)
            for py, px in PHASES:
                sub = idx[:, py::2, px::2]
                ctx = np.stack([contexts(s, classes, c) for s in sub])
                np.add.at(cnt, (ctx.reshape(-1), sub.reshape(-1)), 1)
            log(f"export: rung K={k} counted {idx.size} indices, {int((m > 0).sum())} codewords used")
        marg.append(m)
        cond.append(cnt)
        tensors[f"rung{r}.codebook"] = cb.contiguous()
        tensors[f"rung{r}.map"] = rung["map"].int().contiguous()
        tensors[f"rung{r}.classes"] = torch.from_numpy(classes.astype(np.int32))
        rung_stats.append({"k": k, "fine_tune_loss": rung.get("loss", []), "kept_step": rung.get("kept_step")})
    tables, marginal, stats = tables_from_counts(marg, cond, prior=PRIOR, escape=False)
    ts = TableSet.from_tables(tables, [0] * len(tables))
    tensors["tables.freqs"] = torch.from_numpy(ts.freqs)
    tensors["tables.offsets"] = torch.from_numpy(ts.offsets)
    for r, m in enumerate(marginal):
        tensors[f"rung{r}.marginal"] = torch.from_numpy(m.astype(np.int32))
    for st, extra in zip(stats, rung_stats):
        st.update(extra)
        st["bits_uniform"] = round(float(np.log2(st["k"])), 3)
        del st["codebook"]
    return write_model(out, model_id, "vqgan", "image", tensors, {**config, "rungs": [r["k"] for r in rungs]},
                       {**card, "rungs": stats}, overwrite)


def kmeans_ladder(codebook: torch.Tensor, sizes: list[int], usage: torch.Tensor | None = None) -> list[dict]:
    """Rungs without fine-tuning (converted checkpoints): k-means of the codebook into each size."""
    from .mcquic import kmeans

    out = []
    for k in sizes:
        if k == len(codebook):
            out.append({"k": k, "codebook": codebook.float(), "map": torch.arange(k, dtype=torch.int32)})
            continue
        lab, cent = kmeans(codebook.double().numpy(), k, iters=20, seed=k,
                           weights=None if usage is None else usage.numpy(), centroids=True)
        out.append({"k": k, "codebook": torch.from_numpy(cent).float(), "map": torch.from_numpy(lab).int()})
    return out


def convert_taming(ckpt, out: Path, model_id: str, data: str | None = None, crops: int = 400, crop: int = 256,
                   log=print, overwrite: bool = False) -> dict:
    """An official taming-transformers VQGAN checkpoint (.ckpt / .pt, read tensors-only) -> an ncodec vqgan model:
    the network as released (fp32), a k-means ladder of its codebook (not fine-tuned), context tables counted on
    ``data`` (a folder of images; uniform tables without it), no index transformer (lost indices are
    interpolated from their neighbours)."""
    from ..codecs.mcquic_net import nearest
    from ..codecs.taming_net import TamingNet, config_from_state, model_state
    from ..zoo import load_torch_state

    state = model_state(load_torch_state(ckpt))
    cfg = config_from_state(state)
    net = TamingNet(cfg)
    net.load_state_dict(state)
    net.eval()
    big = state["quantize.embedding.weight"].float()
    sizes = [k for k in (16384, 8192, 4096, 2048, 1024, 512, 256, 128, 64, 32, 16, 8) if k <= cfg.codebook_size]
    if cfg.codebook_size not in sizes:
        sizes = [cfg.codebook_size] + sizes
    z = None
    if data is not None:
        from .data import CropSampler, load_images

        sampler = CropSampler(load_images(Path(data), crop), crop, seed=12345)
        with torch.no_grad():
            z = _latents(net, sampler, crops, batch=4)
        log(f"convert: latents of {crops} crops of {data}")
    usage = None if z is None else torch.bincount(nearest(z.reshape(-1, cfg.dim), big),
                                                   minlength=cfg.codebook_size).double()
    rungs = kmeans_ladder(big, sizes, usage)
    tensors = {f"net.{k}": v.float().contiguous() for k, v in state.items()}
    config = {**cfg.to_dict(), "clusters": CLUSTERS, "transformer": None}
    card = {"source": f"converted from {Path(ckpt).name} (taming-transformers VQModel)",
            "tables": f"counted on {crops} {crop}px crops of {data}" if data else "uniform (no --data given)"}
    return write_vqgan(out, model_id, config, tensors, rungs, z, card, log, overwrite)
