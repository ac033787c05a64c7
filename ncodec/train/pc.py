"""Training recipe for the probabilistic-circuit codec: ``ncodec train pc-digits``.

The circuit is a hidden Chow-Liu tree (HCLT, Liu & Van den Broeck 2021): a Chow-Liu tree is learned over the
pixels (maximum spanning tree of pairwise mutual information), every pixel gets a hidden variable with ``k``
states, and the hidden variables follow the tree; each pixel depends on its own hidden variable only. As a
circuit: one sum node per (pixel, hidden state, parent state), products at the tree nodes, categorical leaves.

Parameters are learned by EM: the gradient of log p(x) with respect to the log-parameters is exactly the
expected count of each parameter under the posterior, so one autograd backward pass per batch is the E-step;
the M-step normalises the counts (plus a small pseudo-count). Every iteration is a full pass over the data:
stochastic (mini-batch) EM first, plain EM for the last quarter.

Data: MNIST test images 0..7999 (the official training split is not available offline); 8000..9999 are kept
for evaluation and never seen here.
"""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import torch

TRAIN_ITEMS = 8000  # MNIST test images used for training; the rest (8000..9999) is the benchmark


def load_mnist(root: Path) -> np.ndarray:
    """MNIST test images (10000, 28, 28) uint8 from the IDX file in ``root``."""
    path = root / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, h, w = np.frombuffer(raw[:16], ">u4")
    if magic != 2051:
        raise ValueError(f"{path} is not an IDX image file")
    return np.frombuffer(raw[16:], np.uint8).reshape(int(n), int(h), int(w)).copy()


# ------------------------------------------------------------------------------------------- structure
def chow_liu_tree(x: np.ndarray, width: int, bins: int = 4) -> tuple[np.ndarray, int]:
    """Parent of every variable (-1 at the root) of a maximum-mutual-information spanning tree.

    ``x``: (N, D) uint8. Values are binned to ``bins`` levels for the MI estimate; ties (constant pixels) are
    broken towards spatial neighbours (``width`` = image width). The root is the tree's centre, which keeps
    the tree shallow (coding walks root-to-leaf paths).
    """
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree, shortest_path

    n, d = x.shape
    q = (x.astype(np.int64) * bins) // 256
    onehot = np.zeros((n, d * bins), np.float64)
    onehot[np.arange(n)[:, None], np.arange(d)[None] * bins + q] = 1.0
    joint = (onehot.T @ onehot / n).reshape(d, bins, d, bins)
    marg = onehot.mean(0).reshape(d, bins)
    outer = marg[:, :, None, None] * marg[None, None, :, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / outer), 0.0)
    mi = terms.sum(axis=(1, 3))
    np.fill_diagonal(mi, 0.0)
    yy, xx = np.divmod(np.arange(d), width)
    dist = np.hypot(yy[:, None] - yy[None], xx[:, None] - xx[None])
    cost = (mi.max() + 1.0) - mi + 1e-6 * dist  # all positive: a complete graph
    np.fill_diagonal(cost, 0.0)
    mst = minimum_spanning_tree(cost)
    adj = ((mst + mst.T) > 0).astype(np.float64)
    hops = shortest_path(adj, unweighted=True, directed=False)
    root = int(np.argmin(hops.max(axis=1)))
    order, pred = breadth_first_order(adj, root, directed=False)
    parent = np.where(pred < 0, -1, pred).astype(np.int64)
    parent[root] = -1
    return parent, root


def depth_levels(parent: np.ndarray) -> list[np.ndarray]:
    depth = np.zeros(len(parent), np.int64)
    for i in range(len(parent)):  # walk up (trees here have depth < 100)
        j = i
        while parent[j] >= 0:
            depth[i] += 1
            j = parent[j]
    return [np.flatnonzero(depth == lv) for lv in range(depth.max() + 1)]


# ------------------------------------------------------------------------------------------- the model
class Hclt:
    """Float HCLT in log space (training and the theoretical bits); inference uses ncodec.codecs.pc."""

    def __init__(self, parent: np.ndarray, k: int, values: int = 256, seed: int = 0, data: np.ndarray | None = None):
        self.parent = torch.as_tensor(parent)
        self.d, self.k, self.v = len(parent), k, values
        self.levels = [torch.as_tensor(s) for s in depth_levels(parent)]
        g = torch.Generator().manual_seed(seed)
        if data is not None:
            self._init_from_clusters(data, g)
        else:
            self.log_leaf = (torch.rand(self.d, k, values, generator=g) + 0.1).log().log_softmax(-1)
            self.log_trans = (torch.rand(self.d, k, k, generator=g) + 0.5).log().log_softmax(-1)  # [n, z_parent, z]
            self.log_prior = torch.full((k,), -np.log(k))

    def _init_from_clusters(self, data: np.ndarray, g: torch.Generator, rounds: int = 10) -> None:
        """Start as a mixture of k independent-pixel models: k-means clusters of whole images give every
        hidden variable the image's cluster (transitions near the identity, leaves = per-cluster pixel
        histograms). EM from there converges in a few passes instead of dozens from random tables."""
        x = torch.from_numpy(data.astype(np.float32))
        centres = x[torch.randperm(len(x), generator=g)[: self.k]].clone()
        for _ in range(rounds):
            assign = torch.cdist(x, centres).argmin(1)
            for c in range(self.k):
                if (assign == c).any():
                    centres[c] = x[assign == c].mean(0)
        counts = torch.full((self.k, self.d, self.v), 0.5)
        xi = torch.from_numpy(data.astype(np.int64))
        for c in range(self.k):
            sel = xi[assign == c]
            counts[c].scatter_add_(1, sel.T, torch.ones(sel.T.shape))
        self.log_leaf = (counts / counts.sum(-1, keepdim=True)).log().permute(1, 0, 2).contiguous()
        trans = torch.full((self.d, self.k, self.k), 0.1 / self.k) + 0.9 * torch.eye(self.k)
        trans = trans * (0.9 + 0.2 * torch.rand(trans.shape, generator=g))  # break symmetry
        self.log_trans = trans.log().log_softmax(-1)
        sizes = torch.bincount(assign, minlength=self.k).float() + 1.0
        self.log_prior = (sizes / sizes.sum()).log()

    def params(self) -> list[torch.Tensor]:
        return [self.log_prior, self.log_trans, self.log_leaf]

    def log_likelihood(self, x: torch.Tensor, params=None) -> torch.Tensor:
        """log p(x) in nats for a (B, D) integer batch."""
        log_prior, log_trans, log_leaf = params or self.params()
        b = x.shape[0]
        ev = log_leaf.permute(0, 2, 1)[torch.arange(self.d)[None, :], x]  # (B, D, k)
        acc = torch.zeros(b, self.d, self.k, dtype=ev.dtype)
        for level in reversed(self.levels[1:]):
            m = ev[:, level] + acc[:, level]  # (B, S, k)
            up = torch.logsumexp(log_trans[level][None] + m[:, :, None, :], dim=-1)  # (B, S, k_parent)
            acc = acc.index_add(1, self.parent[level], up)
        root = self.levels[0]
        m = ev[:, root[0]] + acc[:, root[0]]
        return torch.logsumexp(log_prior[None] + m, dim=-1)

    def em_step(self, data: np.ndarray, batch: int, alpha_leaf: float, alpha_trans: float,
                step_size: float | None = None) -> float:
        """One pass of EM over ``data``; returns the mean bits per dimension seen during the pass.

        ``step_size`` None: plain EM (counts of the whole pass, then one update). Otherwise stochastic EM: after
        every batch the parameters move to ``(1 - step) * old + step * (normalised batch counts)``, which
        converges in far fewer passes.
        """
        total, acc = 0.0, None
        for i in range(0, len(data), batch):
            x = torch.from_numpy(data[i : i + batch].astype(np.int64))
            ps = [p.detach().clone().requires_grad_(True) for p in self.params()]
            ll = self.log_likelihood(x, ps).sum()
            ll.backward()
            total += ll.item()
            counts = [p.grad for p in ps]
            if step_size is None:
                acc = counts if acc is None else [a + c for a, c in zip(acc, counts)]
            else:
                self._update(counts, alpha_leaf, alpha_trans, step_size)
        if step_size is None:
            self._update(acc, alpha_leaf, alpha_trans, 1.0)
        return -total / (len(data) * self.d * np.log(2.0))

    def _update(self, counts, alpha_leaf: float, alpha_trans: float, step: float) -> None:
        prior, trans, leaf = counts
        new = [(prior + 1.0) / (prior + 1.0).sum(), (trans + alpha_trans) / (trans + alpha_trans).sum(-1, True),
               (leaf + alpha_leaf) / (leaf + alpha_leaf).sum(-1, True)]
        if step < 1.0:
            new = [(1 - step) * old.exp() + step * n for old, n in zip(self.params(), new)]
        self.log_prior, self.log_trans, self.log_leaf = (n.log() for n in new)

    def state(self) -> dict:
        return {"log_prior": self.log_prior, "log_trans": self.log_trans, "log_leaf": self.log_leaf,
                "parent": self.parent}


# ------------------------------------------------------------------------------------------- recipe
def train(run: Path, iterations: int, data: str | None, hidden: int = 16, batch: int = 250,
          threads: int | None = None, log=print, alpha_leaf: float = 0.01, alpha_trans: float = 0.01,
          step_size: float = 0.3):
    from .data import corpus_root

    if threads:
        torch.set_num_threads(threads)
    run.mkdir(parents=True, exist_ok=True)
    imgs = load_mnist(corpus_root(data) / "eval" / "mnist")[:TRAIN_ITEMS]
    x = imgs.reshape(len(imgs), -1)
    ckpt = run / "checkpoint.pt"
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=True)
        model = Hclt(st["parent"].numpy(), hidden)
        model.log_prior, model.log_trans, model.log_leaf = st["log_prior"], st["log_trans"], st["log_leaf"]
        it = int(st["iteration"])
        log(f"resumed from {ckpt} at iteration {it}")
    else:
        t0 = time.time()
        parent, root = chow_liu_tree(x[:4000], width=imgs.shape[2])
        model = Hclt(parent, hidden, data=x)
        it = 0
        log(f"Chow-Liu tree over {x.shape[1]} pixels: root {root}, depth {len(model.levels) - 1} "
            f"({time.time() - t0:.1f} s)")
    while it < iterations:
        t0 = time.time()
        # stochastic EM passes, then one full-batch EM pass (settles the noise of the steps). Measured on a
        # split of the training items (train 0..7499, check 7500..7999): 6 stochastic passes 1.398 bits/dim,
        # + 1 full pass 1.350, + 2 full passes 1.359 (overfits) -> the default recipe is 6 + 1.
        full = it == iterations - 1
        order = np.random.default_rng(it).permutation(len(x))
        bpd = model.em_step(x if full else x[order], batch, alpha_leaf, alpha_trans, None if full else step_size)
        it += 1
        log(f"iteration {it}/{iterations}: train {bpd:.4f} bits/dim ({time.time() - t0:.1f} s)")
        tmp = run / "checkpoint.tmp"
        torch.save({**model.state(), "iteration": it, "hidden": hidden, "items": TRAIN_ITEMS,
                    "shape": list(imgs.shape[1:])}, tmp)
        tmp.replace(ckpt)
    return model


TABLE_BITS = 14  # integer parameter tables: every row sums to 2**14 (fits int16)


def quantize_rows(logp: torch.Tensor, bits: int = TABLE_BITS, floor: int = 0) -> np.ndarray:
    """Probability rows -> integers >= ``floor`` summing exactly to 2**bits per row (largest entry adjusted)."""
    p = logp.double().exp().numpy()
    p = p / p.sum(-1, keepdims=True)
    q = floor + np.floor(p * ((1 << bits) - floor * p.shape[-1])).astype(np.int64)
    short = (1 << bits) - q.sum(-1)
    idx = np.argmax(p, axis=-1)
    np.put_along_axis(q, idx[..., None], np.take_along_axis(q, idx[..., None], -1) + short[..., None], -1)
    return q


def _write_tables(st: dict, out: Path, model_id: str, floor: int, card_fields: dict, extra_card: dict | None,
                  leaf_bits: int = TABLE_BITS, trans_bits: int = TABLE_BITS, overwrite: bool = False) -> dict:
    """Quantised integer tables of a checkpoint -> ``out/model_id.safetensors`` + JSON card (``zoo.write_model``).
    Rows of 2^14 are stored as int16, rows of 2^16 (entries >= 1, so each below 2^16) as uint16, finer as int32."""
    from ..zoo import write_model

    def table(name: str, bits: int) -> np.ndarray:
        dtype = np.int16 if bits < 16 else np.uint16 if bits == 16 else np.int32
        return quantize_rows(st[f"log_{name}"], bits=bits, floor=floor).astype(dtype)

    tensors = {"parent": st["parent"].numpy().astype(np.int32), "prior": table("prior", trans_bits),
               "trans": table("trans", trans_bits), "leaf": table("leaf", leaf_bits)}
    config = card_fields.pop("config", None)
    return write_model(out, model_id, "pc", "image", tensors, config, {**card_fields, **(extra_card or {})},
                       overwrite)


def export(run: Path, out: Path, model_id: str = "pc-digits-v1", extra_card: dict | None = None,
           overwrite: bool = False) -> dict:
    """Checkpoint -> integer tables in safetensors (int16/int32) + JSON card."""
    st = torch.load(run / "checkpoint.pt", weights_only=True)
    return _write_tables(st, out, model_id, 0, {
        "config": {"hidden": int(st["hidden"]), "shape": [int(v) for v in st["shape"]] + [1], "table_bits": TABLE_BITS},
        "training": {"iterations": int(st["iteration"]), "items": int(st["items"])}}, extra_card, overwrite=overwrite)


# ------------------------------------------------------------------------------------------- natural images
IMAGE_ROWS = 2500  # coded pixels sampled from every training image and from its downscaled copy


def image_rows(folder: Path, per_image: int = IMAGE_ROWS, seed: int = 0, log=print) -> tuple[np.ndarray, np.ndarray]:
    """(train, check) rows of ``pc_image.samples`` from every image under ``folder``: every 10th image (sorted
    paths) is held back for the check bits. Every image gives ``per_image`` random rows at full size and as many
    from its 2x box-downscaled copy: the training photos are JPEGs (4:2:0 chroma, smoothed detail), and the
    downscaled copies carry full-resolution chroma and sharper texture, closer to camera or scanner output."""
    from PIL import Image

    from ..codecs.pc_image import samples
    from .data import IMAGE_EXT

    rng = np.random.default_rng(seed)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise FileNotFoundError(f"no training images under {folder}")
    train_rows, check_rows = [], []
    t0 = time.time()
    for i, p in enumerate(files):
        with Image.open(p) as im:
            im = im.convert("RGB")
            small = im.resize((im.width // 2, im.height // 2), Image.Resampling.BOX)
            for s in (samples(np.asarray(im)), samples(np.asarray(small))):
                pick = s[rng.choice(len(s), min(len(s), per_image), replace=False)]
                (check_rows if i % 10 == 9 else train_rows).append(pick)
        if (i + 1) % 100 == 0:
            log(f"  rows from {i + 1}/{len(files)} images ({time.time() - t0:.0f} s)")
    return np.concatenate(train_rows), np.concatenate(check_rows)


def mutual_information(q: np.ndarray) -> np.ndarray:
    """(D, D) pairwise mutual information (nats) of the columns of a small-integer (N, D) array."""
    n, d = q.shape
    card = q.max(0) + 1
    off = np.concatenate([[0], np.cumsum(card)[:-1]])
    onehot = np.zeros((n, int(card.sum())), np.float32)
    onehot[np.arange(n)[:, None], off[None] + q] = 1.0
    joint = onehot.T.astype(np.float64) @ onehot / n
    marg = onehot.mean(0, dtype=np.float64)
    mi = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            if i != j:
                pj = joint[off[i] : off[i] + card[i], off[j] : off[j] + card[j]]
                outer = np.outer(marg[off[i] : off[i] + card[i]], marg[off[j] : off[j] + card[j]])
                with np.errstate(divide="ignore", invalid="ignore"):
                    mi[i, j] = np.where(pj > 0, pj * np.log(pj / outer), 0.0).sum()
    return mi


def mi_tree(q: np.ndarray, root: int) -> np.ndarray:
    """Parent array of the maximum-mutual-information spanning tree over the columns of the small-integer (N, D)
    array ``q``, rooted at column ``root``."""
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

    mi = mutual_information(q)
    cost = (mi.max() + 1.0) - mi
    np.fill_diagonal(cost, 0.0)
    mst = minimum_spanning_tree(cost)
    adj = ((mst + mst.T) > 0).astype(np.float64)
    _, pred = breadth_first_order(adj, root, directed=False)
    parent = np.where(pred < 0, -1, pred).astype(np.int64)
    parent[root] = -1
    return parent


def image_tree(x: np.ndarray) -> np.ndarray:
    """Chow-Liu tree over the image variables (binned for the MI estimate), rooted at the green target."""
    from ..codecs.pc_image import N_CTX, SIGNED

    q = x.copy()
    q[:, :N_CTX] = np.where(SIGNED, np.abs(x[:, :N_CTX] - 15), x[:, :N_CTX]) // 2  # magnitudes of the bins
    q[:, N_CTX:] = np.minimum(np.abs(x[:, N_CTX:] - 128), 41) // 6
    return mi_tree(q, N_CTX)


def conditional_loss(model: Hclt, x: torch.Tensor, params, n_ctx: int | None = None) -> torch.Tensor:
    """Mean bits per row of the targets (variables ``n_ctx ..``; images: the three residuals) given the contexts,
    -log2 p(targets | contexts), for a batch; ``params`` are log-parameters (differentiable)."""
    from ..codecs.pc_image import N_CTX

    lp, lt, ll = params
    targets = torch.zeros(model.d, 1, 1, dtype=torch.bool)
    targets[N_CTX if n_ctx is None else n_ctx :] = True
    summed_out = ll.masked_fill(targets, 0.0)  # target leaves summed out: log p(contexts)
    return (model.log_likelihood(x, [lp, lt, summed_out]) - model.log_likelihood(x, params)).mean() / np.log(2.0)


def check_bits(model: Hclt, x: np.ndarray, batch: int = 4000, n_ctx: int | None = None) -> float:
    """Bits per row of the targets given the contexts, -log2 p(targets | contexts), over ``x``."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i : i + batch].astype(np.int64))
            total += conditional_loss(model, xb, model.params(), n_ctx).item() * len(xb)
    return float(total / len(x))


def train_image(run: Path, iterations: int, data: str | None, hidden: int = 32, batch: int = 2000,
                threads: int | None = None, log=print, step_size: float = 0.3, alpha: float = 0.01,
                cond_steps: int = 0, cond_lr: float = 3e-2, cond_batch: int = 4000):
    """The natural-image circuit (``pc-image``) on rows sampled from ``train/images``; resumable (see
    :func:`train_conditional`)."""
    from .data import corpus_root

    def rows():
        return image_rows(corpus_root(data) / "train" / "images", log=log)

    return train_conditional(run, rows, image_tree, None, iterations, hidden, batch, threads, log, step_size, alpha,
                             cond_steps, cond_lr, cond_batch)


def train_conditional(run: Path, make_rows, make_tree, n_ctx: int | None, iterations: int, hidden: int, batch: int,
                      threads: int | None, log, step_size: float, alpha: float, cond_steps: int, cond_lr: float,
                      cond_batch: int, em_rows: int | None = None, init_rows: int = 20000):
    """A conditional circuit p(targets | contexts) on the rows ``make_rows()`` returns (train, check; cached in
    the run folder; the first ``init_rows`` initialise the circuit's clusters), with the tree ``make_tree(rows)``;
    resumable.

    Two phases. EM (``iterations`` passes, each over ``em_rows`` random rows or all of them) maximises the joint
    likelihood p(contexts, targets), which spends capacity on modelling the contexts. Then ``cond_steps``
    mini-batches of Adam on the conditional likelihood p(targets | contexts), the quantity the coder pays
    (parameters as logits, cosine-decayed learning rate, started from the EM solution)."""
    if threads:
        torch.set_num_threads(threads)
    run.mkdir(parents=True, exist_ok=True)
    rows = run / "rows.npz"
    if rows.exists():
        z = np.load(rows)
        x, xc = z["train"], z["check"]
    else:
        x, xc = make_rows()
        np.savez(rows, train=x, check=xc)
    log(f"{len(x)} training rows, {len(xc)} check rows")
    ckpt = run / "checkpoint.pt"
    st: dict = {}  # what the checkpoint records beyond the parameters
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)
        st = {k: saved[k] for k in ("check_bpp", "em_check_bpp", "cond_step", "adam") if k in saved}
        if "cond_step" not in st:  # EM-only checkpoint (also older runs)
            st["em_check_bpp"] = st["check_bpp"]
        model = Hclt(saved["parent"].numpy(), int(saved["hidden"]))
        model.log_prior, model.log_trans, model.log_leaf = saved["log_prior"], saved["log_trans"], saved["log_leaf"]
        it = int(saved["iteration"])
        log(f"resumed from {ckpt} at iteration {it}, conditional step {int(st.get('cond_step', 0))}")
    else:
        parent = make_tree(x[:200000])
        model = Hclt(parent, hidden, data=x[:init_rows])
        it = 0
        log(f"tree (parent of each variable): {parent.tolist()}")
    meta = {"hidden": model.k, "rows": len(x)}

    def save(extra: dict) -> None:
        tmp = run / "checkpoint.tmp"
        torch.save({**model.state(), **meta, "iteration": it, **extra}, tmp)
        tmp.replace(ckpt)

    while it < iterations:
        t0 = time.time()
        full = it == iterations - 1  # the last pass is plain EM (settles the stochastic steps)
        order = np.random.default_rng(it).permutation(len(x))[:em_rows]
        if full:  # plain EM: the rows in their stored order
            order = np.sort(order) if em_rows is not None else slice(None)
        bpd = model.em_step(x[order], batch, alpha, alpha, None if full else step_size)
        it += 1
        bits = check_bits(model, xc, n_ctx=n_ctx)
        log(f"iteration {it}/{iterations}: train {bpd:.4f} bits/variable, check {bits:.4f} bits/row "
            f"({time.time() - t0:.0f} s)")
        st = {"check_bpp": float(bits), "em_check_bpp": float(bits)}
        save(st)
    step = int(st.get("cond_step", 0))
    if step >= cond_steps:
        return model
    params = [p.detach().clone().requires_grad_(True) for p in model.params()]
    opt = torch.optim.Adam(params, lr=cond_lr)
    if "adam" in st:
        opt.load_state_dict(st["adam"])
    order = np.random.default_rng(1000 + it).permutation(len(x))
    per_pass = max(1, len(x) // cond_batch)
    t0, seen = time.time(), 0.0
    while step < cond_steps:
        for g in opt.param_groups:
            g["lr"] = float(cond_lr * 0.5 * (1.0 + np.cos(np.pi * step / cond_steps)))
        a = (step % per_pass) * cond_batch
        xb = torch.from_numpy(x[order[a : a + cond_batch]].astype(np.int64))
        loss = conditional_loss(model, xb, [p.log_softmax(-1) for p in params], n_ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        seen += loss.item()
        if step % 100 == 0:
            log(f"conditional step {step}/{cond_steps}: train {seen / 100:.4f} bits/row ({time.time() - t0:.0f} s)")
            seen = 0.0
        if step % 300 == 0 or step == cond_steps:  # check bits and a checkpoint
            with torch.no_grad():
                model.log_prior, model.log_trans, model.log_leaf = (p.log_softmax(-1) for p in params)
            bits = check_bits(model, xc, n_ctx=n_ctx)
            log(f"conditional step {step}/{cond_steps}: check {bits:.4f} bits/row")
            st = {**st, "check_bpp": float(bits), "cond_step": step, "adam": opt.state_dict()}
            save(st)
    return model


# ------------------------------------------------------------------------------------------- digits, conditional
# causal neighbours (dy, dx) of a digit pixel, all with 2 dy + dx < 0 (earlier wavefront steps), and the right
# shift of each one's value in its context variable (the nearest four keep 32 levels, the rest 16)
DIGIT_NEIGHBOURS = [(0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-2, 1), (-2, -1), (-1, -2), (0, -3),
                    (-3, 0), (-2, 2), (-1, -3), (-3, 1)]
DIGIT_SHIFTS = [3, 3, 3, 3] + [4] * 10
CHECK_ITEMS = 500  # training items 7500..7999 give the check bits; 0..7499 are fitted
# integer precision of the exported digits circuit: prior/trans rows of 2^16, leaf rows of 2^20, messages of 24
# bits. Measured on items 7500..7699 (bits/dim): float model 1.158; 14-bit tables + 16-bit leaves 1.182 (float
# evaluation), coded with 12-bit messages (the image model's) 1.233, 16-bit 1.190, 20-bit 1.183, 24-bit 1.1825
DIGIT_TABLE_BITS, DIGIT_LEAF_BITS, DIGIT_MSG_BITS = 16, 20, 24


def digit_rows(imgs: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every pixel of (N, H, W) uint8 digits as a row of its contexts and its value (rows shuffled)."""
    from ..codecs.pc import digit_contexts, digit_pad

    n, h, w = imgs.shape
    pad = digit_pad(DIGIT_NEIGHBOURS)
    val = np.zeros((n, h + pad, w + 2 * pad), np.int64)
    val[:, pad:, pad : pad + w] = imgs
    ys, xs = np.divmod(np.arange(h * w), w)
    ctx = digit_contexts(val, ys, xs, DIGIT_NEIGHBOURS, DIGIT_SHIFTS, pad)
    rows = np.concatenate([ctx, imgs.reshape(-1, 1).astype(np.int64)], 1).astype(np.int16)
    return rows[np.random.default_rng(seed).permutation(len(rows))]


def digits_tree(x: np.ndarray) -> np.ndarray:
    """Chow-Liu tree over the digit rows' variables (value binned to 16 levels for the MI), rooted at the value."""
    q = x.astype(np.int64)
    q[:, -1] >>= 4
    return mi_tree(q, x.shape[1] - 1)


def train_digits_context(run: Path, iterations: int, data: str | None, hidden: int = 32, batch: int = 4000,
                         threads: int | None = None, log=print, cond_steps: int = 3000, cond_lr: float = 3e-2,
                         cond_batch: int = 4000, em_rows: int | None = 2_000_000):
    """``pc-digits-v2``: the conditional circuit p(pixel | causal neighbours, row, column) on MNIST test images
    0..7499 (7500..7999 give the check bits; 8000..9999 stay for the benchmark); resumable."""
    from .data import corpus_root

    def rows():
        imgs = load_mnist(corpus_root(data) / "eval" / "mnist")[:TRAIN_ITEMS]
        return digit_rows(imgs[: TRAIN_ITEMS - CHECK_ITEMS]), digit_rows(imgs[TRAIN_ITEMS - CHECK_ITEMS :])

    return train_conditional(run, rows, digits_tree, len(DIGIT_NEIGHBOURS) + 2, iterations, hidden, batch, threads,
                             log, 0.3, 0.01, cond_steps, cond_lr, cond_batch, em_rows=em_rows)


def export_digits_context(run: Path, out: Path, model_id: str = "pc-digits-v2", extra_card: dict | None = None,
                          shape=(28, 28), overwrite: bool = False) -> dict:
    """Conditional digits checkpoint -> integer tables (every entry >= 1) + JSON card with the contexts."""

    st = torch.load(run / "checkpoint.pt", weights_only=True)
    return _write_tables(st, out, model_id, 1, {
        "config": {"kind": "digits", "shape": [*shape, 1], "hidden": int(st["hidden"]),
                   "neighbours": [list(v) for v in DIGIT_NEIGHBOURS], "shifts": DIGIT_SHIFTS,
                   "table_bits": DIGIT_TABLE_BITS, "leaf_bits": DIGIT_LEAF_BITS, "msg_bits": DIGIT_MSG_BITS},
        "training": {"iterations": int(st["iteration"]), "conditional_steps": int(st.get("cond_step", 0)),
                     "rows": int(st["rows"]), "items": TRAIN_ITEMS - CHECK_ITEMS,
                     "check_bits_per_dim": round(float(st["check_bpp"]), 4),
                     "check_bits_per_dim_after_em": round(float(st.get("em_check_bpp", st["check_bpp"])), 4)}},
        extra_card, leaf_bits=DIGIT_LEAF_BITS, trans_bits=DIGIT_TABLE_BITS, overwrite=overwrite)


def export_image(run: Path, out: Path, model_id: str = "pc-image-v2", extra_card: dict | None = None,
                 overwrite: bool = False) -> dict:
    """Image-circuit checkpoint -> integer tables (int32 parent, int16 prior and trans, uint16 leaf) + JSON card.
    Every entry is >= 1, so messages can never vanish (the decoder relies on it)."""
    from ..codecs.pc_image import LEAF_BITS, N_CTX

    st = torch.load(run / "checkpoint.pt", weights_only=True)
    return _write_tables(st, out, model_id, 1, {
        "config": {"kind": "image", "hidden": int(st["hidden"]), "contexts": N_CTX, "table_bits": TABLE_BITS,
                   "leaf_bits": LEAF_BITS},
        "training": {"iterations": int(st["iteration"]), "conditional_steps": int(st.get("cond_step", 0)),
                     "rows": int(st["rows"]), "check_bits_per_pixel": round(float(st["check_bpp"]), 4),
                     "check_bits_per_pixel_after_em": round(float(st.get("em_check_bpp", st["check_bpp"])), 4)}},
        extra_card, leaf_bits=LEAF_BITS, overwrite=overwrite)
