"""Shipped models: cards in models/*.json, weights in safetensors, SHA-256 checked at load.

A card is JSON with at least ``id``, ``codec``, ``media``, ``file`` and ``sha256``. A ``file`` ending in
``.safetensors.xz`` is the same safetensors file stored xz-compressed, ``.safetensors.planes.xz`` the same with each
multi-byte tensor's bytes regrouped into byte planes before compression (:func:`byte_planes`; ~5 % smaller for
fp16 weights; ``scripts/compress_model.py`` writes it); the card's SHA-256 pins the safetensors bytes as published,
so files that name the model decode the same from any of the three forms. Models are
looked up in $NCODEC_MODELS (if set) and then in the models/ folder of this project; when a file names no model,
the encoder uses the highest id of the first folder that has a model for the codec and media.

A card with ``base_model`` {id, sha256, replaced} stores only what differs from an installed base model, which it
pins by its identity (:attr:`ModelCard.identity`); the loader merges the two. A tensor may be stored as 8-bit
integers with a float32 step per output channel (``name#int8`` + ``name#scale``); the loaders hand it over as
float32 ``name`` (:func:`dequantise`).
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import ModelMismatch


def model_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("NCODEC_MODELS"):
        dirs.append(Path(os.environ["NCODEC_MODELS"]))
    dirs.append(Path(__file__).resolve().parent.parent / "models")
    return [d for d in dirs if d.is_dir()]


@dataclass(frozen=True)
class ModelCard:
    id: str
    codec: str
    media: str
    path: Path
    sha256: str
    card: dict = field(hash=False, compare=False)
    rank: int = field(default=0, hash=False, compare=False)  # position of its folder in model_dirs()

    @property
    def identity(self) -> str:
        """The SHA-256 that names the model: of its whole safetensors as first published. That is the pinned
        file's own unless the card says ``published_sha256`` (a model re-stored as a delta on its base,
        ``scripts/delta_model.py``): .nc files name a model by its first 8 bytes and cards pin their base by it."""
        return str(self.card.get("published_sha256", self.sha256)).lower()

    @property
    def hash8(self) -> bytes:
        return bytes.fromhex(self.identity)[:8]


def cards() -> dict[str, ModelCard]:
    found: dict[str, ModelCard] = {}
    dirs = model_dirs()
    for rank, d in reversed(list(enumerate(dirs))):  # earlier dirs win
        for p in sorted(d.glob("*.json")):
            try:
                c = json.loads(p.read_text())
                found[c["id"]] = ModelCard(c["id"], c["codec"], c["media"], d / c["file"], c["sha256"].lower(), c,
                                           rank)
            except (KeyError, ValueError, OSError):
                continue
    return found


def find(codec: str, media: str, model_id: str | None = None) -> ModelCard:
    all_cards = cards()
    if model_id:
        if model_id not in all_cards:
            raise ModelMismatch(f"model {model_id!r} is not installed (looked in "
                                f"{', '.join(map(str, model_dirs())) or 'no model folder'}); "
                                f"put its .safetensors and card there or set NCODEC_MODELS")
        return all_cards[model_id]
    matches = [c for c in all_cards.values() if c.codec == codec and c.media == media]
    if not matches:
        raise ModelMismatch(f"no {media} model for codec {codec!r} is installed")
    # the newest id of the first folder that has one: models in $NCODEC_MODELS take over from the shipped ones
    return sorted(matches, key=lambda c: (-c.rank, c.id))[-1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=8)
def load_tensors(card: ModelCard) -> dict:
    """The model's tensors (torch), after checking the file's SHA-256 against its card (and its base model's);
    tensors stored as 8-bit integers come back as float32 (:func:`dequantise`)."""
    from safetensors.torch import load

    return _with_base(card, dequantise(load(read_weights(card)), card.id), load_tensors)


def load_tensors_numpy(card: ModelCard) -> dict:
    """The model's arrays (numpy; no torch import), after checking the file's SHA-256 against its card."""
    from safetensors.numpy import load

    return _with_base(card, dequantise(load(read_weights(card)), card.id), load_tensors_numpy)


# A tensor ``name`` may be stored as 8-bit integers ``name#int8`` (its shape) and one float32 step per row of its
# first dimension ``name#scale`` (output channels of a conv or linear weight): a quarter of float32's bytes, half
# of fp16's. :func:`quantise_rows` makes them, :func:`dequantise` (the loaders) undoes them exactly as written here,
# one float32 product per weight, so every machine gets the same weights.
INT8, SCALE = "#int8", "#scale"


def quantise_rows(w) -> tuple:
    """(int8 array, float32 steps) of a float array of >= 2 dimensions: symmetric, per row of dimension 0, the
    largest magnitude of each row on +-127 (an all-zero row gets step 1)."""
    import numpy as np

    w = np.ascontiguousarray(w, np.float32)
    rows = w.reshape(w.shape[0], -1)
    peak = np.abs(rows).max(1)
    step = np.where(peak > 0, peak / 127, 1).astype(np.float32)
    q = np.clip(np.rint(rows / step[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), step


def dequantise(tensors: dict, model_id: str = "") -> dict:
    """``tensors`` (torch or numpy) with every ``name#int8`` / ``name#scale`` pair replaced by float32 ``name``."""
    out = {k: v for k, v in tensors.items() if not k.endswith((INT8, SCALE))}
    for k, q in tensors.items():
        if not k.endswith(INT8):
            continue
        name = k[: -len(INT8)]
        step = tensors.get(name + SCALE)
        if (name in out or step is None or str(q.dtype).split(".")[-1] != "int8" or len(q.shape) < 2
                or tuple(step.shape) != (q.shape[0],) or str(step.dtype).split(".")[-1] != "float32"):
            raise ModelMismatch(f"8-bit tensor {name!r} of model {model_id!r} lacks a matching float32 step per "
                                f"row; the file is damaged or not the published one")
        shape = (q.shape[0],) + (1,) * (len(q.shape) - 1)
        out[name] = (q.float() if hasattr(q, "float") else q.astype("float32")) * step.reshape(shape)
    if any(k.endswith(SCALE) and k[: -len(SCALE)] + INT8 not in tensors for k in tensors):
        raise ModelMismatch(f"model {model_id!r} holds a step without its 8-bit tensor; the file is damaged")
    return out


def _with_base(card: ModelCard, own: dict, load) -> dict:
    """A card with ``base_model`` {id, sha256, replaced}: its file holds only what differs from an installed base
    model (pinned by SHA-256): the base's tensors, less those under the ``replaced`` prefixes, plus its own."""
    base = card.card.get("base_model")
    if not base:
        return own
    parent = find(card.codec, card.media, base["id"])
    if parent.identity != base["sha256"].lower():
        raise ModelMismatch(f"model {card.id!r} builds on {base['id']} with SHA-256 {base['sha256'][:16]}..., but "
                            f"the installed {base['id']} is {parent.identity[:16]}...; install the published one")
    return merge(load(parent), own, base.get("replaced", ()))


def merge(base: dict, own: dict, replaced=()) -> dict:
    """A delta model's tensors: the base's, less those under the ``replaced`` prefixes, plus its own."""
    drop = tuple(replaced)
    return {**{k: v for k, v in base.items() if not (drop and k.startswith(drop))}, **own}


MAX_WEIGHTS = 1 << 30  # bytes a compressed weights file may expand to (ours are < 20 MB)


def read_weights(card: ModelCard) -> bytes:
    """The model's safetensors bytes (decompressed from a ``.xz`` file), checked against the card's SHA-256."""
    if not card.path.is_file():
        raise ModelMismatch(f"weights file {card.path} of model {card.id!r} is missing")
    data = read_safetensors(card.path, f" of model {card.id!r}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.sha256:
        raise ModelMismatch(f"weights of model {card.id!r} have SHA-256 {digest[:16]}..., the card pins "
                            f"{card.sha256[:16]}...; the file is damaged or not the published one")
    return data


DTYPE_BYTES = {  # safetensors dtypes' widths (bytes)
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def byte_planes(data: bytes, inverse: bool = False) -> bytes:
    """Safetensors bytes with the data of every tensor of a multi-byte dtype regrouped into byte planes (all first
    bytes of its elements, then all second bytes, ...), the header and the tensors' regions where they were; xz
    then sees the sign and exponent bytes of fp16 weights together, apart from their near-random low bytes.
    ``inverse``: undo it (the header is the same either way)."""
    import numpy as np

    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    out = bytearray(data)
    body = 8 + n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        width = DTYPE_BYTES.get(t["dtype"], 1)
        a, b = (body + int(o) for o in t["data_offsets"])
        if (b - a) % width or not body <= a <= b <= len(data):
            raise ValueError(f"tensor {name!r}: data offsets do not fit its dtype or the file")
        if width == 1:
            continue
        seg = np.frombuffer(data, np.uint8, b - a, a)
        out[a:b] = (seg.reshape(width, -1).T if inverse else seg.reshape(-1, width).T).tobytes()
    return bytes(out)


def pack_weights(data: bytes) -> bytes:
    """Safetensors bytes as a ``.safetensors.planes.xz`` file stores them (:func:`read_safetensors` undoes it)."""
    return lzma.compress(byte_planes(data), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def read_safetensors(path: Path, what: str = "") -> bytes:
    """A safetensors file's bytes, expanded when it is stored xz-compressed (``.safetensors.xz``), and regrouped
    from byte planes when stored as ``.safetensors.planes.xz`` (:func:`byte_planes`)."""
    data = Path(path).read_bytes()
    if Path(path).name.endswith(".xz"):
        dec = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        try:
            data = dec.decompress(data, max_length=MAX_WEIGHTS)
        except lzma.LZMAError:
            data = None
        if data is None or not dec.eof:  # damaged, cut short, or expanding past MAX_WEIGHTS
            raise ModelMismatch(f"weights file {path}{what} is not a whole xz stream; the file is damaged or not "
                                f"the published one")
        if Path(path).name.endswith(".planes.xz"):
            try:
                data = byte_planes(data, inverse=True)
            except (struct.error, ValueError, KeyError, TypeError, AttributeError):
                raise ModelMismatch(f"weights file {path}{what} does not hold safetensors in byte planes; the file "
                                    f"is damaged or not the published one") from None
    return data


def safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` strings of safetensors bytes (e.g. the ``config`` JSON our exports store)."""
    try:
        (n,) = struct.unpack_from("<Q", data, 0)
        header = json.loads(data[8 : 8 + n])
    except (struct.error, ValueError):
        raise ModelMismatch("not a safetensors file") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def load_torch_state(path) -> dict:
    """A torch checkpoint the user converts (official weights), read with ``weights_only=True`` (tensors only,
    no code runs); a nested ``state_dict`` / ``model`` entry is unwrapped. Our own models load from safetensors."""
    import torch

    from .errors import BadInput

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist") from None
    except Exception as e:  # torch raises several kinds for a file that is not a tensors-only checkpoint
        raise BadInput(f"{path} is not a tensors-only torch checkpoint ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise BadInput(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def check_new_model(out: Path, model_id: str, overwrite: bool = False) -> None:
    """Refuse (:class:`ModelExists`) to write model ``model_id`` into ``out`` when a model of that id is there
    (weights, xz-compressed weights or card): files naming a shipped model must keep decoding, so an export
    replaces one only with ``overwrite``."""
    from .errors import ModelExists

    if overwrite:
        return
    for name in (f"{model_id}.safetensors", f"{model_id}.safetensors.xz", f"{model_id}.safetensors.planes.xz",
                 f"{model_id}.json"):
        if (Path(out) / name).exists():
            raise ModelExists(f"{Path(out) / name} exists: a model {model_id} is already there; choose another "
                              f"id or use --force to replace it")


def write_model(out: Path, model_id: str, codec: str, media: str, tensors: dict, config: dict | None,
                card_extra: dict, overwrite: bool = False) -> dict:
    """Write ``<out>/<id>.safetensors`` and its JSON card (SHA-256 pinned); ``tensors``: torch tensors, or all
    numpy arrays.

    An existing model of that id is refused unless ``overwrite`` (:func:`check_new_model`); then it is replaced
    whole (a new card: nothing of the old one, e.g. a ``base_model``, carries over) and a stale
    ``.safetensors.xz`` or ``.safetensors.planes.xz`` of it removed. Both files are written whole to temporary
    names and then renamed, so a failure leaves no partial model behind."""
    check_new_model(out, model_id, overwrite)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{model_id}.safetensors"
    tmp = out / f".{model_id}.safetensors.tmp"
    meta = {"model_id": model_id} if config is None else {"model_id": model_id, "config": json.dumps(config)}
    import numpy as np

    if all(isinstance(v, np.ndarray) for v in tensors.values()):
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file
    save_file(tensors, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # safetensors creates it readable by its owner only; shipped weights are for every user
    card_path = out / f"{model_id}.json"
    card = dict(card_extra)
    card.update({"id": model_id, "codec": codec, "media": media, "file": weights.name, "sha256": sha256_file(tmp)})
    if config is not None:
        card["config"] = config
    tmp.replace(weights)
    tmp_card = out / f".{model_id}.json.tmp"
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    tmp_card.replace(card_path)
    for stale in (f"{model_id}.safetensors.xz", f"{model_id}.safetensors.planes.xz"):
        (out / stale).unlink(missing_ok=True)
    return card
