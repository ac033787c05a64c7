"""Natural RGB images for the ``pc`` codec: a hidden Chow-Liu tree over a pixel's causal context and its three
colour residuals, coded in raster order by wavefronts (spec: bitstreams/FORMAT.md section 5.1).

**Order.** Pixel (y, x) is coded at step ``t = 2y + x``. Its causal neighbours (W, N, NW, NE, WW, NN, NNE) all
lie on earlier steps, so every step is one vectorised batch: the decoder runs ``2H + W`` numpy steps, not one per
pixel. The encoder knows every pixel and computes its tables in large batches.

**Variables.** A weighted prediction (five sub-predictors, each weighted by its recent green errors at the
neighbours, as in JPEG XL's self-correcting predictor), green residual mod 256, then red and blue residuals
against their predictions moved by alpha/8 of the green error (alpha per image, least squares, two bytes in the
unit). 17 context variables from known pixels only, in integers: error activity, signed neighbour errors,
neighbour deviations from the prediction, chroma residuals.

**Circuit.** A hidden Chow-Liu tree over the 20 variables: each variable has a hidden state (``k`` values), the
hidden states follow a tree learned from mutual information, a variable depends on its own hidden state only.
It is a probabilistic circuit (sum nodes over each hidden state, product nodes at the tree nodes, categorical
leaves), so p(target | contexts, earlier targets) is an exact ratio of marginals, computed by message passing
towards the target. All messages are integers held in float64: table entries are >= 1, messages are
renormalised by powers of two whenever a bound in bits says the next product could pass 2^53, so every product
and every matrix-product partial sum is an exact integer whatever the summation order (BLAS threads included).
The decoder reproduces the encoder's tables bit for bit on any machine.
"""
from __future__ import annotations

import numpy as np

from .base import wavefront_steps as steps

CHUNK = 2048  # encoder: pixels whose tables are computed together (whole wavefront steps)
MSG_BITS = 12  # messages are renormalised below 2^12 (see _product)
LEAF_BITS = 16  # leaf rows sum to 2^16 (uint16), prior and trans rows to 2^14
BIN_EDGES = np.array([1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36, 48, 64, 90, 128])  # |d| >= edge: next bin
N_CTX = 17
# causal neighbours (dy, dx); each falls back to N, then W, then a constant (value 128, error 0)
NB = {"W": (0, -1), "N": (-1, 0), "NW": (-1, -1), "NE": (-1, 1), "WW": (0, -2), "NN": (-2, 0), "NNE": (-2, 1)}
N_SUB = 5  # sub-predictors of the weighted prediction
SIGNED = np.array([False] + [True] * 15 + [False])  # context columns holding signed bins (centre 15)


def neighbour_index(y, x, h, w) -> dict:
    """Flat index of every causal neighbour (``h * w`` = the constant sentinel where none exists)."""
    out = {}
    for name, (dy, dx) in NB.items():
        idx = np.full(len(y), h * w, np.int64)
        for ay, ax in ((dy, dx), (-1, 0), (0, -1)):
            ny, nx = y + ay, x + ax
            ok = (ny >= 0) & (nx >= 0) & (nx < w) & (idx == h * w)
            idx = np.where(ok, ny * w + nx, idx)
        out[name] = idx
    return out


class State:
    """What is known of an image while it is coded: values, the green errors of the sub-predictors, the signed
    residuals; flat int16 arrays (22 bytes per pixel) with one sentinel row at the end."""

    def __init__(self, h: int, w: int, alpha=(8, 8)):
        self.h, self.w = h, w
        self.alpha = np.asarray(alpha, np.int64)  # red, blue: prediction moved by alpha/8 of the green error
        self.val = np.full((h * w + 1, 3), 128, np.int16)
        self.err = np.zeros((h * w + 1, N_SUB), np.int16)
        self.res = np.zeros((h * w + 1, 3), np.int16)

    @classmethod
    def of_image(cls, img: np.ndarray, band: int = 1 << 16) -> "State":
        """Encoder side: the whole state of a known image, computed in bands of pixels (bounded memory),
        with the image's chroma multipliers chosen by least squares."""
        h, w, _ = img.shape
        st = cls(h, w)
        st.val[:-1] = img.reshape(-1, 3)
        n = h * w
        bands = [np.arange(a, min(n, a + band)) for a in range(0, n, band)]
        for idx in bands:  # errors first: the predictions below read them at the neighbours
            subs = sub_predictions(st, neighbour_index(*np.divmod(idx, w), h, w))
            st.err[idx] = np.abs(subs[:, :, 1] - st.val[idx, 1:2])
        for idx in bands:  # unshifted residuals (R, G, B order) for now
            nb = neighbour_index(*np.divmod(idx, w), h, w)
            st.res[idx] = st.val[idx] - predict(st, nb, sub_predictions(st, nb))
        e = st.res[:-1].astype(np.float64)
        eg2 = max(float(e[:, 1] @ e[:, 1]), 1.0)
        st.alpha = np.clip(np.rint(8 * (e[:, [0, 2]].T @ e[:, 1]) / eg2), 0, 16).astype(np.int64)
        for idx in bands:
            px, raw = st.val[idx].astype(np.int64), st.res[idx].astype(np.int64)
            prb = shifted(px[:, [0, 2]] - raw[:, [0, 2]], raw[:, 1], st.alpha)
            st.res[idx] = np.stack([raw[:, 1], px[:, 0] - prb[:, 0], px[:, 2] - prb[:, 1]], 1)  # G, R, B order
        return st

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoder side: contexts (N, 17) and symbols (N, 3: G, R, B) of the pixels at flat indices ``idx``."""
        nb = neighbour_index(*np.divmod(idx, self.w), self.h, self.w)
        pred = predict(self, nb, sub_predictions(self, nb))
        return contexts(self, nb, pred), (self.res[idx].astype(np.int64) + 128) & 255


def qsigned(d: np.ndarray) -> np.ndarray:
    return len(BIN_EDGES) + np.sign(d) * np.searchsorted(BIN_EDGES, np.abs(d), side="right")


def qmag(d: np.ndarray) -> np.ndarray:
    return np.searchsorted(BIN_EDGES, np.abs(d), side="right")


def sub_predictions(st: State, nb: dict) -> np.ndarray:
    """(N, N_SUB, 3): W+N-NW, W, N, W+NE-N, (N+NE)/2."""
    v = {k: st.val[nb[k]].astype(np.int64) for k in ("W", "N", "NW", "NE")}
    return np.stack([v["W"] + v["N"] - v["NW"], v["W"], v["N"], v["W"] + v["NE"] - v["N"],
                     (v["N"] + v["NE"] + 1) >> 1], 1)


def predict(st: State, nb: dict, subs: np.ndarray) -> np.ndarray:
    """Weighted prediction (N, 3): sub-predictor i weighs 2^24 / (1 + its green errors at W, N, NW, NE)^2."""
    s = sum(st.err[nb[k]].astype(np.int64) for k in ("W", "N", "NW", "NE"))
    wts = (1 << 24) // ((1 + s) * (1 + s))
    tot = wts.sum(1, keepdims=True)
    return np.clip(((wts[:, :, None] * subs).sum(1) + tot // 2) // tot, 0, 255)


def contexts(st: State, nb: dict, pred: np.ndarray) -> np.ndarray:
    """(N, 17) context variables: green error activity, the signed green errors at W, N, NW, NE, the green
    neighbours' deviations from the prediction (W, N, NW, NE, WW, NN, NNE), the red and blue residuals at W and N,
    and the chroma error activity."""
    e = {k: st.res[nb[k]].astype(np.int64) for k in ("W", "N", "NW", "NE")}
    pg = pred[:, 1]
    cols = [qmag(sum(np.abs(v[:, 0]) for v in e.values()))]
    cols += [qsigned(v[:, 0]) for v in e.values()]
    cols += [qsigned(st.val[nb[k], 1].astype(np.int64) - pg) for k in ("W", "N", "NW", "NE", "WW", "NN", "NNE")]
    cols += [qsigned(e["W"][:, 1]), qsigned(e["N"][:, 1]), qsigned(e["W"][:, 2]), qsigned(e["N"][:, 2])]
    cols.append(qmag(sum(np.abs(v[:, 1]) + np.abs(v[:, 2]) for v in e.values())))
    return np.stack(cols, 1)


def shifted(pred_rb: np.ndarray, eg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(N, 2) red and blue predictions moved by alpha/8 of the green error (rounded)."""
    return np.clip(pred_rb + ((alpha[None, :] * eg[:, None] + 4) >> 3), 0, 255)


def samples(img: np.ndarray) -> np.ndarray:
    """Every pixel of ``img`` (H, W, 3 uint8) as a row of its 17 contexts and 3 target symbols (training)."""
    st = State.of_image(img)
    ctx, sym = st.rows(np.arange(img.shape[0] * img.shape[1]))
    return np.concatenate([ctx, sym], 1)


# ------------------------------------------------------------------------------------------- the circuit
def _renorm(v: np.ndarray, bits: int = MSG_BITS) -> np.ndarray:
    """Rows of positive float64 integers scaled by a power of two so that the maximum lies in [2^(bits-1),
    2^bits], then rounded up (exact operations): positive entries stay positive, so no product of messages can
    vanish (every table entry is >= 1, hence every message entry too)."""
    out = np.ldexp(v, bits - np.frexp(v.max(axis=-1, keepdims=True))[1])  # exact: a power-of-two scaling
    return np.ceil(out, out=out)


def _product(factors: list, limit: int, rows: int, k: int, msg_bits: int = MSG_BITS) -> np.ndarray:
    """Product of ``(array, bits)`` factors (entries <= 2^bits), left to right; the running product is
    renormalised (to ``msg_bits``) only when the next factor could take it above 2^limit, and once more at the end
    if it is above 2^limit (never with the image model's 12-bit messages: 12 + 16 <= 31). The product then meets a
    table: ``limit`` is ``53 - trans_bits`` when the matrix product sums along table rows (``m @ trans^T``: rows
    sum to 2^trans_bits, so results stay <= 2^53; 39 for 14 bits), ``47 - trans_bits`` for ``o @ trans`` (columns
    sum to at most 64 * 2^trans_bits; 33) and ``47 - leaf_bits`` for ``o @ leaf`` (columns sum to at most
    64 * 2^leaf_bits; 31 for 16 bits)."""
    if not factors:
        return np.ones((rows, k))
    m, bits = factors[0]
    for f, fb in factors[1:]:
        if bits + fb > limit:
            m, bits = _renorm(m, msg_bits), msg_bits
        m, bits = m * f, bits + fb
    return _renorm(m, msg_bits) if bits > limit else m


class CondTree:
    """Integer hidden Chow-Liu tree; variables ``0 .. n_ctx-1`` are contexts, the last ``n_targets`` the targets
    (images: 17 contexts, the three colour residuals; digits with contexts: ``pc.ContextDigits``)."""

    def __init__(self, parent, prior, trans, leaf, n_ctx: int = N_CTX, n_targets: int = 3, msg_bits: int = MSG_BITS,
                 trans_bits: int = 14, leaf_bits: int = LEAF_BITS):
        self.parent = np.asarray(parent, np.int64)
        self.d = len(self.parent)
        self.prior = np.asarray(prior, np.float64)
        self.trans = np.asarray(trans, np.float64)  # [n, parent state, state]
        self.trans_t = np.ascontiguousarray(self.trans.transpose(0, 2, 1))
        self.leaf = np.asarray(leaf, np.float64)  # [n, state, value]
        self.leaf_t = np.ascontiguousarray(self.leaf.transpose(0, 2, 1))
        self.k = self.prior.shape[0]
        self.n_ctx, self.n_targets = n_ctx, n_targets
        self.msg_bits, self.trans_bits, self.leaf_bits = msg_bits, trans_bits, leaf_bits
        # every product of two factors stays below 2^53, and a message fits the final limit 47 - leaf_bits
        if not (8 <= msg_bits <= 26 and 8 <= trans_bits <= 16 and 8 <= leaf_bits <= 22
                and msg_bits <= 47 - leaf_bits):
            raise ValueError("the circuit's message, table and leaf precisions are out of range")
        if self.d != n_ctx + n_targets or self.leaf.shape[2] < 256 or self.trans.shape != (self.d, self.k, self.k):
            raise ValueError("the image circuit's tables do not have the expected shapes")
        if self.k > 64 or max(self.prior.max(), self.trans.max()) > (1 << trans_bits) \
                or self.leaf.max() > (1 << leaf_bits) or min(t.min() for t in (self.prior, self.trans, self.leaf)) < 1:
            raise ValueError(f"the circuit's tables need at most 64 states, prior and trans entries in "
                             f"1..2^{trans_bits}, leaf entries in 1..2^{leaf_bits}")
        from .pc import tree_paths

        self.children, self.root, self.paths = tree_paths(self.parent)
        # a context variable at a tree leaf sends a message that depends on its value only: tabulate it
        self.up_table = {n: _renorm(self.leaf_t[n] @ self.trans_t[n], msg_bits) for n in range(n_ctx)
                         if not self.children[n] and n != self.root}

    def code(self, ctx: np.ndarray, step) -> None:
        """For a chunk of pixels with contexts ``ctx`` (N, n_ctx): for each target t in order (images: G, R, B),
        computes its (N, 256) integer pmf given the contexts and the earlier targets and calls ``step(t, pmf)``,
        which returns the (N,) symbols (encoder: the known ones; decoder: the decoded ones)."""
        rows, k, mb = len(ctx), self.k, self.msg_bits
        up_limit, down_limit = 53 - self.trans_bits, 47 - self.trans_bits
        ev: list = [None] * self.d
        up: dict = {}
        for n in range(self.n_ctx):
            if n in self.up_table:
                up[n] = self.up_table[n][ctx[:, n]]
            else:
                ev[n] = self.leaf_t[n][ctx[:, n]]

        def get_up(n):
            if n not in up:
                own = [] if ev[n] is None else [(ev[n], self.leaf_bits)]
                m = _product(own + [(get_up(c), mb) for c in self.children[n]], up_limit, rows, k, mb)
                up[n] = _renorm(m @ self.trans_t[n], mb)
            return up[n]

        for i in range(self.n_targets):
            t = self.n_ctx + i
            path = self.paths[t]
            o, bits = np.broadcast_to(self.prior, (rows, k)), self.trans_bits
            for p, c in zip(path[:-1], path[1:]):
                own = [] if ev[p] is None else [(ev[p], self.leaf_bits)]
                m = _product([(o, bits)] + own + [(get_up(g), mb) for g in self.children[p] if g != c], down_limit,
                             rows, k, mb)
                o, bits = _renorm(m @ self.trans[c], mb), mb
            m = _product([(o, bits)] + [(get_up(g), mb) for g in self.children[t]], 47 - self.leaf_bits, rows, k,
                         mb)
            sym = step(i, m @ self.leaf[t][:, :256])
            ev[t] = self.leaf_t[t][sym]
            for p in path[1:]:  # messages from t's ancestors (and t) now carry its evidence
                up.pop(p, None)


# ------------------------------------------------------------------------------------------- coding
FREQ_BITS = 20


def probabilities(q: np.ndarray) -> np.ndarray:
    """(N, 256) pmfs (float64 integers, sums <= 2^53) -> probabilities that are multiples of 2^-20, each at least
    2^-20, summing to 1 (IEEE operations only, so every machine gets the same values)."""
    f = q * (float((1 << FREQ_BITS) - 256) / q.sum(axis=-1, keepdims=True))
    np.floor(f, out=f)
    f += 1.0
    f[np.arange(len(f)), q.argmax(axis=-1)] += (1 << FREQ_BITS) - f.sum(axis=-1)
    f *= 1.0 / (1 << FREQ_BITS)
    return f


def encode(tree: CondTree, img: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> range-coded bytes (u32 words, ``entropy.coding`` framing). Stream order: for every
    wavefront step, the green symbols of its pixels (rows ascending), then red, then blue."""
    import constriction

    from ..entropy.coding import _words_to_bytes

    h, w, _ = img.shape
    st = State.of_image(img)
    enc = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    batch: list[np.ndarray] = []

    def flush():
        ctx, sym = st.rows(np.concatenate(batch))
        probs = []
        tree.code(ctx, lambda i, pmf: (probs.append(probabilities(pmf)), sym[:, i])[1])
        a = 0
        for part in batch:
            b = a + len(part)
            for i in range(3):
                enc.encode(sym[a:b, i].astype(np.int32), model, probs[i][a:b])
            a = b
        batch.clear()

    count = 0
    for y, x in steps(h, w):
        batch.append(y * w + x)
        count += len(y)
        if count >= CHUNK:
            flush()
            count = 0
    if batch:
        flush()
    return bytes(int(a) for a in st.alpha) + _words_to_bytes(enc.get_compressed())


def _steps_with_neighbours(h: int, w: int, group: int = 64):
    """``steps`` with each step's neighbour indices, computed for ``group`` steps at a time (fewer numpy calls)."""
    pending = []
    for t, (y, x) in enumerate(steps(h, w)):
        pending.append((y, x))
        if len(pending) == group or t == 2 * (h - 1) + w - 1:
            ys, xs = np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending])
            nb = neighbour_index(ys, xs, h, w)
            a = 0
            for y_, x_ in pending:
                b = a + len(y_)
                yield y_, x_, {k: v[a:b] for k, v in nb.items()}
                a = b
            pending = []


def decode(tree: CondTree, data: bytes, h: int, w: int) -> np.ndarray:
    import constriction

    from ..entropy.coding import _bytes_to_words
    from ..errors import CorruptFile

    if len(data) < 2 or max(data[:2]) > 16:
        raise CorruptFile("the pc image unit does not start with two chroma multipliers in 0..16")
    # every symbol has probability <= 1 - 255 * 2^-24 (constriction's finest precision), i.e. costs > 2^-16 bits:
    # a unit shorter than that bound cannot hold the image it claims (checked before allocating anything)
    if len(data) * 8 * (1 << 16) < 3 * h * w:
        raise CorruptFile(f"a {len(data)}-byte unit cannot hold a {h}x{w} image; the file is damaged")
    words, pos = _bytes_to_words(data, 2)
    if pos != len(data):
        raise CorruptFile("unexpected bytes after the coded pixels; the file is damaged")
    dec = constriction.stream.queue.RangeDecoder(words)
    model = constriction.stream.model.Categorical(perfect=False)
    st = State(h, w, alpha=(data[0], data[1]))

    for y, x, nb in _steps_with_neighbours(h, w):
        idx = y * w + x
        subs = sub_predictions(st, nb)
        pred = predict(st, nb, subs)
        out = {}

        def step(i, pmf, idx=idx, subs=subs, pred=pred, out=out):
            try:
                s = dec.decode(model, probabilities(pmf)).astype(np.int64)
            except Exception as exc:
                raise CorruptFile(f"entropy decoding failed ({exc}); the file is damaged") from None
            if i == 0:
                g = (pred[:, 1] + s - 128) & 255
                out["eg"] = g - pred[:, 1]
                out["prb"] = shifted(pred[:, [0, 2]], out["eg"], st.alpha)
                st.val[idx, 1] = g
                st.err[idx] = np.abs(subs[:, :, 1] - g[:, None])
            else:
                v = (out["prb"][:, i - 1] + s - 128) & 255
                st.val[idx, 2 * i - 2] = v  # i = 1: red (channel 0), i = 2: blue (channel 2)
                out[i] = v - out["prb"][:, i - 1]
            if i == 2:
                st.res[idx] = np.stack([out["eg"], out[1], out[2]], 1)
            return s

        tree.code(contexts(st, nb, pred), step)
    return st.val[:-1].reshape(h, w, 3).astype(np.uint8)
