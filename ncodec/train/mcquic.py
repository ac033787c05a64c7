"""Training recipe for the McQuic codec: ``ncodec train mcquic``.

One variable-rate model: every sample draws the number of active codebooks n in 1..N (quantiser dropout), the
loss is 255^2 * MSE + the VQ terms (codebook + 0.25 commitment, scale-free). Checkpoints (torch, internal) go to
the run folder every ``save_every`` steps; a run resumes from its last checkpoint. :func:`export` writes the
shipped safetensors file: fp16 networks, fp16 codebooks, and integer tables counted on training crops (one per
codebook and context, see ``mcquic_net.context``) plus the cluster maps that pick them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..codecs.mcquic_net import McquicConfig, McquicNet, context, n_contexts, parent, table_bases

WARMUP = 300  # steps as a plain autoencoder before the codebooks are seeded from the latents
RESEED_EVERY = 100  # codewords unused for this many steps are re-seeded from current vectors
VQ_WEIGHT = 1000.0  # against 255^2 * MSE; 2.5 let the latent drift (commitment 0.05 -> 11 in 500 steps)
CLUSTERS = 16  # classes of parent indices per context
PRIOR = 64.0  # pseudo-counts pulling each conditional table towards its codebook's marginal
# export --int8: tensors of at least this many weights go to 8 bits. On mcquic-image-v2 (Kodak 5 / 14 / 23 at 5 / 9 /
# 16 codebooks, nearest codewords) all of them cost 0.047 dB; the smaller ones (dec_lin, enc_in, rate_emb: 58 k of
# 2.5 M weights) 0.018 of it, so they stay fp16
INT8_MIN = 1 << 16


def train(run: Path, steps: int, data: str | None, batch: int = 16, crop: int = 128, lr: float = 5e-4,
          save_every: int = 500, log=print, config: dict | None = None, warmup: int = WARMUP,
          init: str | None = None):
    """Train (or resume) in ``run``. ``init``: start a new run from an installed model's id instead (its networks
    and codebooks; ``config`` may add residual stages, whose codebooks are then seeded from the data at step 0,
    with no autoencoder warm-up)."""
    from .data import CropSampler, corpus_root, load_images

    run.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = run / "checkpoint.pt"
    state = torch.load(ckpt, map_location=device, weights_only=True) if ckpt.exists() else None
    if state:
        config = state["config"]
    elif init:  # the installed model's layout, with ``config``'s changes (e.g. more fine stages)
        from ..zoo import find

        config = {**{k: v for k, v in find("mcquic", "image", init).card["config"].items() if k != "clusters"},
                  **(config or {})}
    cfg = McquicConfig(**(config or {}))
    net = McquicNet(cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    step, seeded = 0, None
    if state:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        warmup = int(state.get("warmup", warmup))
        log(f"resumed from {ckpt} at step {step}")
    elif init:
        seeded = warm_start(net, init, log)
        warmup = -1
    root = corpus_root(data) / "train" / "images"
    images = load_images(root, crop)
    log(f"{len(images)} training images from {root}, device {device}, {sum(p.numel() for p in net.parameters())} "
        f"parameters")
    sampler = CropSampler(images, crop, seed=step)
    t0, hist = time.time(), []
    usage = torch.zeros(cfg.n_codebooks, cfg.codebook_size)

    def crops():
        return torch.from_numpy(sampler.batch(batch)).to(device).permute(0, 3, 1, 2).float() / 255.0

    if seeded is not None and seeded < cfg.n_codebooks:
        seed_codebooks(net, crops, log, first=seeded)

    while step < steps:
        if step == warmup:
            seed_codebooks(net, crops, log)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 200) if step < 0.8 * steps else lr / 4
        x = crops()
        n = torch.randint(1, cfg.n_codebooks + 1, (batch,), device=device)
        record = {}
        x_hat, vq = net(x, n, quantize=step >= warmup, record=record)
        mse = F.mse_loss(x_hat, x, reduction="none").mean((1, 2, 3))
        loss = 255**2 * mse.mean() + VQ_WEIGHT * vq
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        for j, (_, i) in record.items():
            usage[j] += torch.bincount(i.cpu(), minlength=cfg.codebook_size)
        if record and step % RESEED_EVERY == 0:
            dead = reseed_dead(net, usage, record)
            usage.zero_()
            if step % 500 == 0:
                log(f"step {step}: re-seeded {dead} dead codewords")
        full = n == cfg.n_codebooks
        psnr = 10 * torch.log10(1 / mse.detach().clamp_min(1e-10))
        hist.append((loss.item(), vq.item(), psnr.mean().item()))
        if step % 50 == 0:
            h = np.mean(hist, axis=0)
            hist = []
            log(f"step {step}/{steps} loss {h[0]:.2f} vq {h[1]:.3f} psnr {h[2]:.2f} "
                f"(last batch: n={cfg.n_codebooks} {psnr[full].mean().item() if full.any() else float('nan'):.2f} dB) "
                f"({50 / (time.time() - t0):.2f} steps/s)")
            t0 = time.time()
        if step % 500 == 0:  # codebook utilisation on this batch at the full rate
            net.eval()
            used = [len(torch.unique(c)) for c in net.encode_codes(x, cfg.n_codebooks, torch.stack(net.codebooks()))]
            net.train()
            log(f"step {step}: distinct codes per codebook in the batch {used}")
        if step % save_every == 0 or step == steps:
            tmp = run / "checkpoint.tmp"
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step, "config": cfg.to_dict(),
                        "warmup": warmup},
                       tmp)
            tmp.replace(ckpt)
            (run / "progress.json").write_text(json.dumps({"step": step, "steps": steps}))
    return net, step


@torch.no_grad()
def warm_start(net: McquicNet, model_id: str, log=print) -> int:
    """Load an installed model's networks and codebooks into ``net`` (the same layout, or more fine stages: the
    added codebooks come last in cascade order); returns how many codebooks came from it. Rate embeddings beyond
    the old model's codebook count copy its last one."""
    from ..zoo import find, load_tensors

    card = find("mcquic", "image", model_id)
    tensors = load_tensors(card)
    old = McquicConfig(**{k: v for k, v in card.card["config"].items() if k != "clusters"})
    cfg = net.cfg
    same = ("levels", "ch", "width", "n_res", "groups", "coarse_stages", "codebook_size")
    if any(getattr(old, k) != getattr(cfg, k) for k in same) or old.fine_stages > cfg.fine_stages:
        from ..errors import BadInput

        raise BadInput(f"{card.id}'s layout cannot become this one: only fine stages may be added")
    state = net.state_dict()
    for k, v in tensors.items():
        if not k.startswith("net."):
            continue
        name = k[4:]
        if name == "rate_emb.weight":
            w = v.float()
            state[name][: len(w)] = w
            state[name][len(w):] = w[-1]
        else:
            state[name] = v.float()
    net.load_state_dict(state)
    for j, cb in enumerate(tensors["codebooks"].float()):
        net.vq[j].reseed(torch.arange(cfg.codebook_size), cb)
    log(f"started from {card.id}: networks and {old.n_codebooks} of {cfg.n_codebooks} codebooks")
    return old.n_codebooks


@torch.no_grad()
def seed_codebooks(net: McquicNet, crops, log=print, batches: int = 4, first: int = 0) -> None:
    """Seed codebook j >= ``first`` (in cascade order) with vectors it would quantise, given the codebooks before."""
    cfg = net.cfg
    xs = [crops() for _ in range(batches)]
    full = torch.full((xs[0].shape[0],), cfg.n_codebooks, dtype=torch.long)
    for j in range(first, cfg.n_codebooks):
        vecs = []
        for x in xs:
            rec = {}
            net(x, full, record=rec)
            vecs.append(rec[j][0])
        v = torch.cat(vecs)
        pick = torch.randperm(len(v))[: cfg.codebook_size]
        if len(pick) < cfg.codebook_size:
            pick = torch.cat([pick, torch.randint(0, len(v), (cfg.codebook_size - len(pick),))])
        net.vq[j].reseed(torch.arange(cfg.codebook_size), v[pick] + 1e-3 * torch.randn_like(v[pick]))
    log(f"seeded codebooks {first}..{cfg.n_codebooks - 1} from latent vectors")


@torch.no_grad()
def reseed_dead(net: McquicNet, usage: torch.Tensor, record: dict) -> int:
    """Re-seed codewords that no vector chose since the last call with random vectors of the last batch."""
    total = 0
    for j, (v, _) in record.items():
        dead = torch.nonzero(usage[j] == 0).flatten()
        if len(dead):
            net.vq[j].reseed(dead, v[torch.randint(0, len(v), (len(dead),))])
            total += len(dead)
    return total


def kmeans(v: np.ndarray, k: int, iters: int = 25, seed: int = 0, weights: np.ndarray | None = None,
           centroids: bool = False):
    """Cluster label of each row of ``v`` (float64 Lloyd's algorithm, fixed seed; rows weighted by ``weights``,
    e.g. how often each codeword is used). ``centroids=True``: (labels, centroids)."""
    rng = np.random.default_rng(seed)
    v = v.astype(np.float64)
    wt = np.ones(len(v)) if weights is None else np.asarray(weights, np.float64) + 1e-9
    cent = v[rng.choice(len(v), k, replace=False, p=None if weights is None else wt / wt.sum())]
    for _ in range(iters):
        lab = ((cent**2).sum(1)[None] - 2 * v @ cent.T).argmin(1)  # memory n x k, not n x k x dim
        mass = np.bincount(lab, weights=wt, minlength=k)
        tot = np.zeros_like(cent)
        np.add.at(tot, lab, wt[:, None] * v)
        cent = np.where(mass[:, None] > 0, tot / np.maximum(mass, 1e-300)[:, None], cent)
    lab = lab.astype(np.int32)
    return (lab, cent) if centroids else lab


def code_counts(net: McquicNet, cbs: torch.Tensor, cluster_map: np.ndarray, crops: np.ndarray, log=print,
                code_bits=None, alpha: float = 0.0):
    """Per codebook: marginal counts (K,) and context counts (n_contexts, K), over ``crops`` (uint8 NHWC), each
    batch of 8 crops coded at the next rate of the cycle N, N-1, .., 1 (codebook j is seen by the batches whose rate
    keeps it)."""
    cfg = net.cfg
    K = cfg.codebook_size
    marg = np.zeros((cfg.n_codebooks, K), np.int64)
    cond = [np.zeros((n_contexts(cfg, j, CLUSTERS), K), np.int64) for j in range(cfg.n_codebooks)]
    for i in range(0, len(crops), 8):
        x = torch.from_numpy(crops[i : i + 8]).permute(0, 3, 1, 2).float() / 255.0
        n = cfg.n_codebooks - (i // 8) % cfg.n_codebooks
        codes = [c.numpy() for c in net.encode_codes(x, n, cbs, code_bits, alpha)]
        for j, c in enumerate(codes):
            marg[j] += np.bincount(c.reshape(-1), minlength=K)
            ctx = context(cfg, j, codes, cluster_map, c.shape)
            np.add.at(cond[j], (ctx.reshape(-1), c.reshape(-1)), 1)
        if i % 400 == 0:
            log(f"counted codes on {i + len(x)}/{len(crops)} crops")
    return marg, cond


def tables_from_counts(marg: list[np.ndarray], cond: list[np.ndarray], prior: float = PRIOR, escape: bool = True):
    """Integer tables (flat, in ``table_bases`` order), marginal tables, and statistics, per codebook j from its
    marginal counts ``marg[j]`` (K,) and context counts ``cond[j]`` (contexts, K); each conditional table is
    pulled towards the marginal by ``prior`` pseudo-counts. ``escape``: append the escape entry of
    ncodec.entropy's indexed coding."""
    from ..entropy import quantize_pmf

    tables, marginal, stats = [], [], []
    for j, (m, c) in enumerate(zip(marg, cond)):
        pm = (m + 0.5) / (m + 0.5).sum()
        tail = [0.0] if escape else []
        marginal.append(quantize_pmf(np.append(pm, tail)))
        h_marg = -(m * np.log2(pm)).sum() / max(m.sum(), 1)
        h_cond = 0.0
        for row in c:
            p = (row + prior * pm) / (row.sum() + prior)
            tables.append(quantize_pmf(np.append(p, tail)))
            h_cond += -(row * np.log2(p)).sum()
        h_cond /= max(m.sum(), 1)
        stats.append({"codebook": j, "used": round(float((m > 0).mean()), 4),
                      "perplexity": round(float(2 ** (-(pm * np.log2(pm)).sum())), 1),
                      "bits_marginal": round(float(h_marg), 3), "bits_context": round(float(h_cond), 3)})
    return tables, marginal, stats


@torch.no_grad()
def export(run: Path, out: Path, model_id: str = "mcquic-image-v1", data: str | None = None, crops: int = 1600,
           crop: int = 256, log=print, extra_card: dict | None = None, overwrite: bool = False,
           int8: bool = False) -> dict:
    """Checkpoint -> models/<id>.safetensors (fp16 nets and codebooks, int32 tables and cluster maps) + card.
    ``int8``: the networks' weight matrices and kernels of at least ``INT8_MIN`` weights as 8-bit integers with a
    step per output channel (``ncodec.zoo.quantise_rows``; smaller ones and biases stay fp16): half of fp16's
    bytes."""
    from .data import CropSampler, corpus_root, load_images
    from ..codecs.mcquic import RD_ALPHA, McquicModel
    from ..entropy import TableSet
    from ..zoo import INT8, SCALE, dequantise, quantise_rows, write_model

    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = McquicConfig(**state["config"])
    net = McquicNet(cfg)
    net.load_state_dict(state["model"])
    net.eval()
    cbs = torch.stack(net.codebooks()).half()
    tensors = {}
    for k, v in net.state_dict().items():
        if k.startswith("vq."):
            continue
        if int8 and v.dim() >= 2 and v.numel() >= INT8_MIN:
            q, step = quantise_rows(v.numpy())
            tensors[f"net.{k}{INT8}"], tensors[f"net.{k}{SCALE}"] = torch.from_numpy(q), torch.from_numpy(step)
        else:
            tensors[f"net.{k}"] = v.half().contiguous()
    loaded = {k[4:]: v.float() for k, v in dequantise(tensors).items()}
    net.load_state_dict({**net.state_dict(), **loaded})  # count with the weights the codec loads
    cbs_f = cbs.float()
    cluster_map = np.zeros((cfg.n_codebooks, cfg.codebook_size), np.int32)
    for j in range(cfg.n_codebooks):
        if any(parent(cfg, i) == j for i in range(cfg.n_codebooks)):
            cluster_map[j] = kmeans(cbs_f[j].numpy(), CLUSTERS, seed=j)
    images = load_images(corpus_root(data) / "train" / "images", crop)
    batch = CropSampler(images, crop, seed=12345).batch(crops)
    config = {**cfg.to_dict(), "clusters": CLUSTERS}

    def with_tables(marg, cond):
        tables, marginal, stats = tables_from_counts(marg, cond)
        assert len(tables) == table_bases(cfg, CLUSTERS)[-1]
        ts = TableSet.from_tables(tables, [0] * len(tables))
        return {**tensors, "codebooks": cbs.contiguous(), "clusters": torch.from_numpy(cluster_map),
                "tables.freqs": torch.from_numpy(ts.freqs), "tables.offsets": torch.from_numpy(ts.offsets),
                "marginal.freqs": torch.from_numpy(np.stack(marginal).astype(np.int32))}, stats

    # pass 1: nearest-codeword indices; pass 2: the codec's entropy-constrained choice under pass-1 tables
    first, stats1 = with_tables(*code_counts(net, cbs_f, cluster_map, batch, log))
    coder = McquicModel(dequantise(first), config)
    tensors, stats = with_tables(*code_counts(net, cbs_f, cluster_map, batch, log, coder.code_bits, RD_ALPHA))
    for s2, s1 in zip(stats, stats1):
        s2["bits_context_nearest"] = s1["bits_context"]
    card = {"training": {"steps": int(state["step"]), "weights": "int8 per output channel" if int8 else "fp16",
                         "tables": f"counted on {crops} random {crop}px training "
                         f"crops, {CLUSTERS} parent clusters, prior {PRIOR}, second pass with the "
                         f"encoder's entropy-constrained choice (alpha {RD_ALPHA})"},
            "codebooks": stats, **(extra_card or {})}
    return write_model(out, model_id, "mcquic", "image", tensors, config, card, overwrite)


# ------------------------------------------------------------------------------------------ decoder fine-tune
DECODER_PARAMS = ("dec_in.", "dec.", "dec_lin.", "colour_inv", "rate_emb.")  # all the decoder runs after y1_hat
DECODER_WARMUP = 200  # steps of linear learning-rate warm-up


def _grown_decoder_state(state: dict, n_res_from: int, n_res_to: int) -> dict:
    """A McquicNet state dict with the decoder's output conv moved from ``dec.{1 + n_res_from}`` to
    ``dec.{1 + n_res_to}`` (decoder = GELU, n_res residual blocks, conv)."""
    a, b = f"dec.{1 + n_res_from}.", f"dec.{1 + n_res_to}."
    return {(b + k[len(a):] if k.startswith(a) else k): v for k, v in state.items()}


def train_decoder(run: Path, base: str, steps: int, data: str | None, batch: int = 12, crop: int = 192,
                  lr: float = 2e-4, n_res: int | None = None, save_every: int = 250, check_every: int = 1000,
                  check_crop: int = 256, log=print):
    """Fine-tune the synthesis of an installed mcquic model on exactly the codes its encoder writes.

    Encoder, codebooks, the coarse-to-fine prediction and the tables stay frozen (the rate embedding's encoder
    half too: its gradient is masked), so every file's bytes are the base model's and only the pixels change.
    Each step draws a codebook count n in 1..N, codes a batch of crops with the encoder's entropy-constrained
    choice (``RD_ALPHA``), and minimises log10(MSE) of the synthesis, which weighs every rate alike in dB.
    ``n_res`` > the base's adds residual blocks that start as the identity. A held-back check set (crops of the
    last 5 % of the training images) is scored every ``check_every`` steps. Resumable from ``run/decoder.pt``."""
    from .. import zoo
    from ..codecs.mcquic import RD_ALPHA, McquicModel
    from .data import CropSampler, corpus_root, load_images
    from .finetune import check_psnr, finetune

    card = zoo.find("mcquic", "image", base)
    frozen = McquicModel.from_card(card)
    cfg0 = frozen.cfg
    ckpt = run / "decoder.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
    if state is not None and state["base"] != card.id:
        raise ValueError(f"{ckpt} fine-tunes {state['base']}, not {card.id}")
    cfg = McquicConfig(**(state["config"] if state else {**cfg0.to_dict(), "n_res": n_res or cfg0.n_res}))
    if cfg.n_res < cfg0.n_res:
        raise ValueError(f"the decoder can only grow ({cfg0.n_res} residual blocks in {card.id})")
    net = McquicNet(cfg)
    missing, _ = net.load_state_dict(_grown_decoder_state(frozen.net.state_dict(), cfg0.n_res, cfg.n_res),
                                     strict=False)
    if any(not k.startswith(("dec.", "vq.")) for k in missing):
        raise ValueError(f"unexpected missing tensors {missing}")
    for i in range(cfg0.n_res, cfg.n_res):  # new blocks start as the identity
        torch.nn.init.zeros_(net.dec[1 + i].b.weight)
        torch.nn.init.zeros_(net.dec[1 + i].b.bias)
    params = [p for k, p in net.named_parameters() if k.startswith(DECODER_PARAMS)]
    for k, p in net.named_parameters():
        p.requires_grad_(k.startswith(DECODER_PARAMS))
    enc_half = torch.zeros_like(net.rate_emb.weight)
    enc_half[:, 2 * cfg.width:] = 1.0  # columns 0 .. 2w-1 are the encoder's FiLM: never updated
    net.rate_emb.weight.register_hook(lambda g: g * enc_half)
    opt = torch.optim.Adam(params, lr=lr)
    step, seconds = 0, 0.0
    if state is not None:  # the checkpoint leaves out the codebooks (frozen, the base model's)
        net.load_state_dict(state["net"], strict=False)
        opt.load_state_dict(state["opt"])
        step, seconds = int(state["step"]), float(state.get("seconds", 0.0))
        log(f"resumed from {ckpt} at step {step}")
    run.mkdir(parents=True, exist_ok=True)
    root = corpus_root(data) / "train" / "images"
    images = load_images(root, max(crop, check_crop))
    n_check = max(1, len(images) // 20)
    train_imgs, check_imgs = images[:-n_check], images[-n_check:]
    big = cfg.n_codebooks
    log(f"decoder fine-tune of {card.id}: {cfg0.n_res} -> {cfg.n_res} residual blocks, {len(train_imgs)} training "
        f"images, {n_check} check images from {root}")

    def latent(x: torch.Tensor, n: int) -> torch.Tensor:
        codes = frozen.net.encode_codes(x, n, frozen.cbs, frozen.code_bits, RD_ALPHA)
        return frozen.net.latent_of_codes(codes, (x.shape[2] // 2**cfg.levels, x.shape[3] // 2**cfg.levels),
                                          frozen.cbs)

    check_ns = (1 + big // 4, 1 + big // 2, big)
    check = [(x, latent(x, n), torch.full((len(x),), n)) for n in check_ns
             for x in [torch.from_numpy(CropSampler(check_imgs, check_crop, seed=n).batch(8)).permute(0, 3, 1, 2)
                       .float() / 255]]
    if step == 0:
        log(f"check PSNR at {'/'.join(map(str, check_ns))} codebooks (8 crops of {check_crop} px each): base "
            f"{check_psnr(net, check)}")
    sampler = CropSampler(train_imgs, crop, seed=1000 + step)
    rng = np.random.default_rng(step)

    def batch_loss() -> torch.Tensor:
        x = torch.from_numpy(sampler.batch(batch)).permute(0, 3, 1, 2).float() / 255.0
        n = int(rng.integers(1, big + 1))
        return torch.log10(F.mse_loss(net.synthesis(latent(x, n), torch.full((batch,), n)), x))

    step = finetune(run, net, params, opt, step, steps, lr, batch_loss, lambda: check_psnr(net, check),
                    {"config": cfg.to_dict(), "base": card.id, "lr": lr, "batch": batch, "crop": crop}, seconds,
                    warmup=DECODER_WARMUP, save_every=save_every, check_every=check_every,
                    keep=lambda k: not k.startswith("vq."), log=log)  # the codebooks are the base model's
    return net, step


def export_decoder(run: Path, out: Path, model_id: str, extra_card: dict | None = None, log=print,
                   overwrite: bool = False) -> dict:
    """``run/decoder.pt`` -> ``<out>/<model_id>``: the fine-tuned synthesis in fp16 and a card whose
    ``base_model`` names the base model (pinned by SHA-256) for every other tensor (``ncodec.zoo`` merges them).
    Same codes and bytes as the base model."""
    from ..zoo import find, write_model

    state = torch.load(run / "decoder.pt", map_location="cpu", weights_only=True)
    card = find("mcquic", "image", state["base"])
    cfg = McquicConfig(**state["config"])
    old = card.card["config"]["n_res"]
    tensors = {f"net.{k}": v.half().contiguous() for k, v in state["net"].items() if k.startswith(DECODER_PARAMS)}
    result = {k: v for k, v in card.card.items() if k not in ("results", "file", "sha256", "base_model", "id",
                                                                "codec", "media", "config")}
    recipe = (f"ncodec train mcquic-decoder --base {card.id} --res-blocks {cfg.n_res} --steps {state['step']} "
              f"--batch {state['batch']} --crop {state['crop']} --lr {state['lr']} --export models/")
    result.update({"recipe": recipe,
                   "base_model": {"id": card.id, "sha256": card.identity,
                                  "replaced": [f"net.{p}" for p in DECODER_PARAMS]},
                   "decoder_finetune": {"base": card.id, "steps": int(state["step"]), "lr": state["lr"],
                                        "batch": state["batch"], "crop": state["crop"],
                                        "residual_blocks": [old, cfg.n_res],
                                        "minutes": round(float(state.get("seconds", 0.0)) / 60, 1)}})
    result.update(extra_card or {})
    config = {**card.card["config"], "n_res": cfg.n_res}
    result = write_model(out, model_id, "mcquic", "image", tensors, config, result, overwrite)
    log(f"wrote {Path(out) / result['file']} ({(Path(out) / result['file']).stat().st_size / 1e6:.1f} MB)")
    return result
