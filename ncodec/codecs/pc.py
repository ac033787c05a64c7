"""Probabilistic-circuit lossless codec (``--codec pc``). Three kinds of model:

- digits with contexts (``pc-digits-v2``, :class:`ContextDigits`): the image circuit's layout for small grayscale
  images (MNIST-like): a conditional tree over a pixel's causal neighbours, row and column and its value, coded
  by wavefronts;
- digits (``pc-digits-v1``, :class:`TreeModel`): a hidden Chow-Liu tree over all pixels, coded pixel by pixel with
  exact conditional probabilities (below);
- natural RGB images of any size (``pc-image-v2``; v1 kept for its files): a hidden Chow-Liu tree over a pixel's
  context and its colour residuals, coded in raster order by wavefronts (``pc_image``).

Digits model v1:

For each pixel j (raster order) the decoder needs p(x_j | x_<j). In a tree-shaped circuit this is, up to a
constant, ``sum_z w_j(z) * leaf_j(z, v)`` where ``w_j`` is the outside message at j's hidden variable times the
inside messages from j's children, everything conditioned on the pixels already decoded. Only the messages on
j's path to the root change when x_j becomes known, so a pixel costs O(depth * k^2) instead of a whole circuit
pass (the paper's O(log D |p|) idea, for a tree).

Every message is computed in integer arithmetic (int64 numpy, parameters stored as integers summing to 2**14,
messages renormalised by powers of two to < 2**30), so the probabilities are bit-identical for any batch size
and thread count; the final pmf is turned into 16-bit frequencies with integer operations only. Many images are
coded side by side (one row per image), which is what makes the Python loop affordable.
"""
from __future__ import annotations

import numpy as np

from ..container import Header, MediaKind, RateKind, Unit
from ..errors import BadInput, CorruptFile
from ..registry import register_codec
from .base import Codec, Encoded, Rate

ITEMS_PER_UNIT = 64  # items coded together in one unit (random access decodes one unit)
UNITS_PER_PASS = 16  # units whose message passing runs together (1024 rows: ~0.2 GB of int64 messages)
MSG_BITS = 30
FREQ_BITS = 16


def _renorm(v: np.ndarray) -> np.ndarray:
    """Scale each row of non-negative int64 ``v`` by a power of two so that its max lies below 2**30.

    Rows that are all zero become uniform (cannot happen with a consistent model, but a damaged file must not
    divide by zero).
    """
    m = v.max(axis=-1)
    zero = m <= 0
    if zero.any():
        v = v.copy()
        v[zero] = 1
        m = np.where(zero, 1, m)
    e = np.frexp(m.astype(np.float64))[1]  # m < 2**e (deterministic: IEEE conversion)
    shift = (e - MSG_BITS)[..., None]
    return np.where(shift > 0, v >> np.maximum(shift, 0), v << np.maximum(-shift, 0))


def _freqs(p: np.ndarray) -> np.ndarray:
    """Integer pmf rows (any scale < 2**52) -> frequencies >= 1 summing to 2**16, integer operations only."""
    v = p.shape[-1]
    total = p.sum(axis=-1)
    e = np.frexp(total.astype(np.float64))[1]
    shift = np.maximum(e - 40, 0)[..., None]
    p = p >> shift
    total = np.maximum(p.sum(axis=-1, keepdims=True), 1)
    f = 1 + (p * ((1 << FREQ_BITS) - v)) // total
    rest = (1 << FREQ_BITS) - f.sum(axis=-1)
    idx = np.argmax(p, axis=-1)
    f[np.arange(len(f)), idx] += rest
    return f


def _unit_decoders(datas: list[bytes]) -> tuple[list, object]:
    """One range decoder per unit payload (u32 words, nothing after them), and the categorical model family."""
    import constriction

    from ..entropy.coding import _bytes_to_words

    decs = []
    for data in datas:
        words, pos = _bytes_to_words(data, 0)
        if pos != len(data):
            raise CorruptFile("unexpected bytes after the coded pixels; the file is damaged")
        decs.append(constriction.stream.queue.RangeDecoder(words))
    return decs, constriction.stream.model.Categorical(perfect=False)


def tree_paths(parent: np.ndarray) -> tuple[list[list[int]], int, list[list[int]]]:
    """Children of every node, the root, and every node's path from the root (root ... n) of a parent array;
    ValueError unless it is one tree."""
    d = len(parent)
    children: list[list[int]] = [[] for _ in range(d)]
    for n, p in enumerate(parent):
        if p >= 0:
            children[p].append(n)
    roots = np.flatnonzero(np.asarray(parent) < 0)
    if len(roots) != 1:
        raise ValueError("the tree must have exactly one root")
    paths = []
    for n in range(d):
        path = [n]
        while parent[path[-1]] >= 0:
            path.append(int(parent[path[-1]]))
            if len(path) > d:
                raise ValueError("the parent array has a cycle")
        paths.append(path[::-1])
    return children, int(roots[0]), paths


class TreeModel:
    """Integer HCLT: ``parent`` (D,), ``prior`` (k,), ``trans`` (D, k, k) [n, z_parent, z], ``leaf`` (D, k, V)."""

    def __init__(self, parent, prior, trans, leaf, shape: tuple[int, int]):
        self.parent = np.asarray(parent, np.int64)
        self.prior = np.asarray(prior, np.int64)
        self.trans = np.asarray(trans, np.int64)
        self.trans_t = np.ascontiguousarray(self.trans.transpose(0, 2, 1))
        self.leaf = np.asarray(leaf, np.int64)
        self.leaf_t = np.ascontiguousarray(self.leaf.transpose(0, 2, 1))  # (D, V, k)
        self.d, self.k, self.values = self.leaf.shape
        self.shape = shape
        if self.d != shape[0] * shape[1]:
            raise ValueError("model size does not match its image shape")
        self.children, self.root, self.paths = tree_paths(self.parent)

    @classmethod
    def from_tensors(cls, t: dict, shape) -> "TreeModel":
        return cls(*(np.asarray(t[k]) for k in ("parent", "prior", "trans", "leaf")), shape=tuple(shape))

    # ---------------------------------------------------------------------------------------- coding
    def run(self, batch: int, step):
        """Walk the pixels in raster order for ``batch`` images; ``step(j, freqs)`` returns the (batch,) values.

        Messages are cached: the message from n to its parent depends only on the evidence in n's subtree and
        is refreshed lazily (``dirty``); the outside message at n depends only on the evidence outside n's
        subtree, so along the previous pixel's root path it stays valid. Consecutive pixels are close in the
        tree, so most of both walks is reused. Every message is a pure function of the evidence, which keeps
        encoder and decoder (and any batch size) bit-identical.
        """
        one = np.full((batch, self.k), 1 << (MSG_BITS - 1), np.int64)
        up = [one] * self.d  # message from n to its parent (no evidence: constant)
        ev = [one] * self.d  # leaf evidence at n (unobserved: marginalised = constant)
        dirty = np.zeros(self.d, bool)
        trans, trans_t, children = self.trans, self.trans_t, self.children

        def get_up(n):
            if dirty[n]:
                m = ev[n]
                for g in children[n]:
                    m = _renorm(m * get_up(g))
                up[n] = _renorm(m @ trans_t[n])
                dirty[n] = False
            return up[n]

        outside = {self.root: _renorm(np.broadcast_to(self.prior, (batch, self.k)).copy())}
        for j in range(self.d):
            path = self.paths[j]
            start = max(i for i, p in enumerate(path) if p in outside)
            outside = {p: outside[p] for p in path[: start + 1]}  # still valid: see above
            o = outside[path[start]]
            for p, c in zip(path[start:-1], path[start + 1 :]):
                t = _renorm(o * ev[p])
                for s in children[p]:
                    if s != c:
                        t = _renorm(t * get_up(s))
                o = outside[c] = _renorm(t @ trans[c])
            for g in children[j]:
                o = _renorm(o * get_up(g))
            values = step(j, _freqs(o @ self.leaf[j]))
            ev[j] = _renorm(self.leaf_t[j][values])
            n = j
            while n != self.root and not dirty[n]:
                dirty[n] = True
                n = int(self.parent[n])

    def encode(self, x: np.ndarray) -> bytes:
        """x: (B, D) uint8 -> range-coded bytes."""
        return self.encode_units([x])[0]

    def decode(self, data: bytes, batch: int) -> np.ndarray:
        return self.decode_units([data], [batch])[0]

    def encode_units(self, chunks: list[np.ndarray]) -> list[bytes]:
        """Several units in one pass: every unit keeps its own range coder (so its bytes are exactly those of
        coding it alone: rows never influence each other), the message passing runs once for all rows."""
        import constriction

        from ..entropy.coding import _words_to_bytes

        x = np.concatenate([np.asarray(c, np.int64) for c in chunks])
        bounds = np.cumsum([0] + [len(c) for c in chunks])
        encs = [constriction.stream.queue.RangeEncoder() for _ in chunks]
        model = constriction.stream.model.Categorical(perfect=False)

        def step(j, f):
            p = f / float(1 << FREQ_BITS)
            col = x[:, j].astype(np.int32)
            for e, a, b in zip(encs, bounds[:-1], bounds[1:]):
                e.encode(col[a:b], model, p[a:b])
            return x[:, j]

        self.run(len(x), step)
        return [_words_to_bytes(e.get_compressed()) for e in encs]

    def decode_units(self, datas: list[bytes], counts: list[int]) -> list[np.ndarray]:
        """Inverse of :meth:`encode_units`: (count, D) uint8 per unit."""
        decs, model = _unit_decoders(datas)
        bounds = np.cumsum([0] + list(counts))
        out = np.zeros((bounds[-1], self.d), np.int64)

        def step(j, f):
            p = f / float(1 << FREQ_BITS)
            for dec, a, b in zip(decs, bounds[:-1], bounds[1:]):
                try:
                    out[a:b, j] = dec.decode(model, p[a:b])
                except Exception as exc:
                    raise CorruptFile(f"entropy decoding failed ({exc}); the file is damaged") from None
            return out[:, j]

        self.run(int(bounds[-1]), step)
        out = out.astype(np.uint8)
        return [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def bits(self, x: np.ndarray) -> np.ndarray:
        """Model cross-entropy of each image in bits (the integer pmfs actually used for coding)."""
        x = np.asarray(x, np.int64)
        total = np.zeros(len(x))

        def step(j, f):
            total[:] -= np.log2(f[np.arange(len(x)), x[:, j]] / float(1 << FREQ_BITS))
            return x[:, j]

        self.run(len(x), step)
        return total


def digit_pad(nb) -> int:
    return max([1] + [max(-dy, abs(dx)) for dy, dx in nb])


def digit_contexts(val: np.ndarray, ys: np.ndarray, xs: np.ndarray, nb, shifts, pad: int) -> np.ndarray:
    """(B * n, len(nb) + 2) contexts of pixels (ys, xs) of every item, item-major rows: each neighbour's value
    ``>> shift``, then the row and the column. ``val``: (B, H + pad, W + 2 pad) int64 values, zero-padded above and
    at both sides (a neighbour outside the image reads 0)."""
    b = len(val)
    cols = [val[:, pad + ys + dy, pad + xs + dx] >> s for (dy, dx), s in zip(nb, shifts)]
    cols += [np.broadcast_to(ys, (b, len(ys))), np.broadcast_to(xs, (b, len(xs)))]
    return np.stack(cols, -1).reshape(b * len(ys), -1)


class ContextDigits:
    """Digits coded by wavefronts with a conditional circuit (``pc-digits-v2``, codec version 3): each pixel's
    value is the single target of a ``pc_image.CondTree`` whose context variables are its causal neighbours'
    values (shifted right, 0 outside the image) and its row and column. Wavefront step t holds the pixels with
    ``2y + x = t``; every neighbour (dy, dx) has ``2 dy + dx < 0``, so it lies on an earlier step, and one step is
    one batch over all its pixels and all items coded together. Same interface as :class:`TreeModel`."""

    def __init__(self, tree, shape: tuple[int, int], neighbours, shifts):
        self.tree, self.shape = tree, tuple(shape)
        self.nb = [(int(dy), int(dx)) for dy, dx in neighbours]
        self.shifts = [int(s) for s in shifts]
        self.pad = digit_pad(self.nb)
        if len(self.nb) != len(self.shifts) or tree.n_ctx != len(self.nb) + 2 or tree.n_targets != 1 \
                or any(2 * dy + dx >= 0 for dy, dx in self.nb) or not all(0 <= s < 8 for s in self.shifts):
            raise ValueError("the digits context model's neighbours, shifts and circuit do not fit together")

    def contexts(self, val: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return digit_contexts(val, ys, xs, self.nb, self.shifts, self.pad)

    def run(self, batch: int, step) -> np.ndarray:
        """Walk the wavefronts for ``batch`` items; ``step(pixels, probabilities)`` gets a step's flat pixel
        indices and the (B * n, 256) probabilities of its item-major rows, and returns the (B, n) values."""
        from .base import wavefront_steps
        from .pc_image import probabilities

        h, w = self.shape
        p = self.pad
        val = np.zeros((batch, h + p, w + 2 * p), np.int64)
        for ys, xs in wavefront_steps(h, w):
            out: list = []
            self.tree.code(self.contexts(val, ys, xs), lambda i, pmf: out.append(step(ys * w + xs, probabilities(pmf))))
            val[:, p + ys, p + xs] = out[0].reshape(batch, len(ys))
        return val[:, p:, p : p + w].reshape(batch, h * w)

    def encode_units(self, chunks: list[np.ndarray]) -> list[bytes]:
        import constriction

        from ..entropy.coding import _words_to_bytes

        x = np.concatenate([np.asarray(c, np.int64) for c in chunks])
        bounds = np.cumsum([0] + [len(c) for c in chunks])
        encs = [constriction.stream.queue.RangeEncoder() for _ in chunks]
        model = constriction.stream.model.Categorical(perfect=False)

        def step(pix, probs):
            n = len(pix)
            sym = x[:, pix]
            for e, a, b in zip(encs, bounds[:-1], bounds[1:]):
                e.encode(sym[a:b].reshape(-1).astype(np.int32), model, probs[a * n : b * n])
            return sym

        self.run(len(x), step)
        return [_words_to_bytes(e.get_compressed()) for e in encs]

    def decode_units(self, datas: list[bytes], counts: list[int]) -> list[np.ndarray]:
        decs, model = _unit_decoders(datas)
        bounds = np.cumsum([0] + list(counts))

        def step(pix, probs):
            n = len(pix)
            sym = np.empty((bounds[-1], n), np.int64)
            for dec, a, b in zip(decs, bounds[:-1], bounds[1:]):
                try:
                    sym[a:b] = dec.decode(model, probs[a * n : b * n]).reshape(b - a, n)
                except Exception as exc:
                    raise CorruptFile(f"entropy decoding failed ({exc}); the file is damaged") from None
            return sym

        out = self.run(int(bounds[-1]), step).astype(np.uint8)
        return [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def bits(self, x: np.ndarray) -> np.ndarray:
        """Cost of each item in bits under the coded probabilities."""
        x = np.asarray(x, np.int64)
        total = np.zeros(len(x))

        def step(pix, probs):
            sym = x[:, pix]
            total[:] -= np.log2(probs[np.arange(sym.size), sym.reshape(-1)]).reshape(sym.shape).sum(1)
            return sym

        self.run(len(x), step)
        return total


def _kind(card) -> str:
    return card.card.get("config", {}).get("kind", "digits")


@register_codec("pc")
class PcCodec(Codec):
    codec_id = "pc"
    version = 3  # 1: digits (tree over all pixels); 2 adds natural RGB images; 3: digits with a context circuit
    media = ("image",)
    lossless = True
    multi_item = True

    def __init__(self):
        self._models: dict[str, tuple] = {}

    def model(self, model_id: str | None = None, weights_hash: bytes | None = None, kind: str = "digits"):
        """(card, model) for ``model_id`` or the newest installed model of ``kind`` (digits or image)."""
        from .. import zoo
        from ..errors import ModelMismatch

        if model_id is None:
            found = [c for c in zoo.cards().values() if c.codec == "pc" and c.media == "image" and _kind(c) == kind]
            if not found:
                raise ModelMismatch(f"no pc {kind} model is installed")
            model_id = sorted(found, key=lambda c: (-c.rank, c.id))[-1].id
        card = zoo.find("pc", "image", model_id)
        if card.codec != "pc":
            raise ModelMismatch(f"model {card.id!r} is a {card.codec} model, not a pc model")
        if weights_hash is not None and card.hash8 != weights_hash:
            raise ModelMismatch(f"the file was made with other weights of model {card.id!r} "
                                f"(hash {weights_hash.hex()}, installed {card.hash8.hex()})")
        if card.id not in self._models:
            t = zoo.load_tensors_numpy(card)
            cfg = card.card.get("config", {})
            tables = [t[k] for k in ("parent", "prior", "trans", "leaf")]
            if _kind(card) == "image":
                from .pc_image import CondTree

                m = CondTree(*tables)
            elif "neighbours" in cfg:  # digits with a context circuit (codec version 3)
                from .pc_image import CondTree

                tree = CondTree(*tables, n_ctx=len(cfg["neighbours"]) + 2, n_targets=1,
                                msg_bits=cfg.get("msg_bits", 12), trans_bits=cfg.get("table_bits", 14),
                                leaf_bits=cfg.get("leaf_bits", 16))
                m = ContextDigits(tree, tuple(cfg["shape"])[:2], cfg["neighbours"], cfg["shifts"])
            else:
                m = TreeModel(*tables, shape=tuple(cfg["shape"])[:2])
            self._models[card.id] = (card, m)
        return self._models[card.id]

    def encode(self, data, media: str, rate: Rate, model: str | None = None, **info) -> Encoded:
        if any(v is not None for v in (rate.quality, rate.bpp, rate.kbps)):
            raise BadInput("the pc codec is lossless: --quality/--bpp/--bitrate do not apply")
        items = [np.asarray(a) for a in (data if isinstance(data, list) else [data])]
        for i, a in enumerate(items):
            if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)) \
                    or 0 in a.shape:
                raise BadInput(f"item {i} is {'x'.join(map(str, a.shape))} {a.dtype}; the pc codec codes 8-bit "
                               f"grayscale or RGB images")
        if model is not None:
            kind = _kind(self.model(model)[0])
        else:  # small grayscale items of the digits model's size -> digits, anything else -> the image model
            from ..errors import ModelMismatch

            try:
                dshape = tuple(self.model(kind="digits")[1].shape)
            except ModelMismatch:  # no digits model installed
                dshape = None
            kind = "digits" if dshape and all(getattr(_grey(a), "shape", None) == dshape for a in items) \
                else "image"
        if kind == "image":
            return self._encode_rgb(items, model)
        return self._encode_digits(items, model)

    def _encode_digits(self, items, model_id) -> Encoded:
        card, tm = self.model(model_id, kind="digits")
        h, w = tm.shape
        flat = np.empty((len(items), h * w), np.uint8)
        for i, a in enumerate(items):
            g = _grey(a)
            if g is None or g.shape != (h, w):
                raise BadInput(f"model {card.id} codes {h}x{w} 8-bit grayscale images; item {i} is "
                               f"{'x'.join(map(str, a.shape))} (use a pc image model for other images)")
            flat[i] = g.reshape(-1)
        firsts = list(range(0, len(items), ITEMS_PER_UNIT))
        units = []
        for group in range(0, len(firsts), UNITS_PER_PASS):  # many units share one pass (bounded memory)
            part = firsts[group : group + UNITS_PER_PASS]
            chunks = [flat[f : f + ITEMS_PER_UNIT] for f in part]
            units += [Unit((f, len(c), 0, 0), data) for f, c, data in zip(part, chunks, tm.encode_units(chunks))]
        version = 3 if isinstance(tm, ContextDigits) else 1
        header = Header(MediaKind.IMAGE, self.codec_id, version, (h, w, 1), model_id=card.id,
                        weights_hash=card.hash8, rate_kind=RateKind.NONE, colour=1, entropy_coder=2,
                        items=len(items))
        return Encoded(header, units, {})

    def _encode_rgb(self, items, model_id) -> Encoded:
        from . import pc_image

        card, tree = self.model(model_id, kind="image")
        units = []
        for i, a in enumerate(items):
            grey = _grey(a)  # grey items are coded as RGB with equal channels and decoded as grey
            rgb = np.ascontiguousarray(a if grey is None else np.repeat(grey[:, :, None], 3, 2))
            units.append(Unit((i, rgb.shape[0], rgb.shape[1], int(grey is not None)), pc_image.encode(tree, rgb)))
        h, w = items[0].shape[:2]
        header = Header(MediaKind.IMAGE, self.codec_id, 2, (h, w, 3), model_id=card.id,
                        weights_hash=card.hash8, rate_kind=RateKind.NONE, colour=2, entropy_coder=2,
                        items=len(items))
        return Encoded(header, units, {})

    def _check(self, header: Header, units: list[Unit]):
        if not 1 <= header.codec_version <= self.version:
            from ..errors import UnsupportedVersion

            raise UnsupportedVersion(f"pc codec version {header.codec_version} is newer than this ncodec "
                                     f"({self.version}); upgrade ncodec")
        card, m = self.model(header.model_id, header.weights_hash)
        if _kind(card) == "image":
            for i, u in enumerate(units):
                if u.key[0] != i or not (0 < u.key[1] <= 1 << 16 and 0 < u.key[2] <= 1 << 16) or u.key[3] > 1 \
                        or u.key[1] * u.key[2] > 1 << 28:
                    raise CorruptFile(f"unit key {u.key} is not item {i} with its size and colour")
            if len(units) != header.items:
                raise CorruptFile(f"the file has {len(units)} units for {header.items} items")
            return card, m
        if tuple(header.shape) != m.shape + (1,):
            raise CorruptFile(f"header shape {header.shape} does not match model {card.id} ({m.shape})")
        if (header.codec_version == 3) != isinstance(m, ContextDigits):
            raise CorruptFile(f"pc codec version {header.codec_version} does not match model {card.id}")
        seen = 0
        for u in units:
            first, count = u.key[0], u.key[1]
            if first != seen or not 0 < count <= ITEMS_PER_UNIT:
                raise CorruptFile(f"unit key {u.key} does not follow the item sequence")
            seen += count
        if seen != header.items:
            raise CorruptFile(f"units hold {seen} items, the header says {header.items}")
        return card, m

    def decode_items(self, header: Header, units: list[Unit], which: list[int] | None = None) -> list[np.ndarray]:
        """Items in file order (digits: uint8 HxWx1, images: HxWx3); ``which``: indices to decode (only their
        units are decoded)."""
        card, m = self._check(header, units)
        want = set(range(header.items)) if which is None else set(which)
        bad = [i for i in want if not 0 <= i < header.items]
        if bad:
            raise BadInput(f"item {bad[0]} is out of range (the file holds {header.items})")
        if _kind(card) == "image":
            from . import pc_image

            out = {}
            for i in sorted(want):
                u = units[i]
                h, w = u.key[1], u.key[2]
                # lenient read: a damaged unit -> a black item of the right size
                rgb = np.zeros((h, w, 3), np.uint8) if u.data is None else pc_image.decode(m, u.data, h, w)
                out[i] = rgb[:, :, 1:2] if u.key[3] else rgb
            return [out[i] for i in sorted(want)]
        out = {}
        h, w = m.shape
        todo = []
        for u in units:
            first, count = u.key[0], u.key[1]
            if not want.intersection(range(first, first + count)):
                continue
            if u.data is None:
                for i in range(first, first + count):
                    out[i] = np.zeros((h, w, 1), np.uint8)  # lenient read: damaged unit -> black items
                continue
            todo.append(u)
        for group in range(0, len(todo), UNITS_PER_PASS):
            part = todo[group : group + UNITS_PER_PASS]
            for u, px in zip(part, m.decode_units([u.data for u in part], [u.key[1] for u in part])):
                for i in range(u.key[1]):
                    out[u.key[0] + i] = px[i].reshape(h, w, 1)
        return [out[i] for i in sorted(want)]

    def symbols_digest(self, header: Header, units: list[Unit]) -> str:
        """SHA-256 of every decoded pixel (for a lossless codec the symbols are the pixels)."""
        import hashlib

        digest = hashlib.sha256()
        for item in self.decode_items(header, units):
            digest.update(item.tobytes())
        return digest.hexdigest()

    def decode(self, header: Header, units: list[Unit]) -> np.ndarray:
        """First item (single-image files); use decode_items for sets."""
        return self.decode_items(header, units, [0])[0]


def _grey(a: np.ndarray) -> np.ndarray | None:
    """The 2-D grey plane of an item (grey, grey x1 or grey stored as RGB), else None."""
    if a.ndim == 2:
        return a
    if a.shape[2] == 1:
        return a[:, :, 0]
    if (a == a[:, :, :1]).all():
        return a[:, :, 0]
    return None
