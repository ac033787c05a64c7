"""Shipped-model storage: xz-compressed weights load to the same tensors, pinned by the same SHA-256."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ncodec import zoo
from ncodec.errors import ModelMismatch

ROOT = Path(__file__).resolve().parent.parent


def _compressor():
    spec = importlib.util.spec_from_file_location("compress_model", ROOT / "scripts" / "compress_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def packed(tmp_path, monkeypatch):
    """A small shipped model (stored compressed) written out plain, then compressed again by
    scripts/compress_model.py in a folder first on the search path: (shipped card, plain bytes, new card)."""
    orig = zoo.find("pc", "image", "pc-image-v2")
    plain = zoo.read_weights(orig)
    (tmp_path / "pc-image-v2.safetensors").write_bytes(plain)
    (tmp_path / "pc-image-v2.json").write_text(json.dumps(dict(orig.card, file="pc-image-v2.safetensors")))
    mod = _compressor()
    monkeypatch.setattr(mod, "MODELS", tmp_path)
    mod.compress(orig.id)
    monkeypatch.setenv("NCODEC_MODELS", str(tmp_path))
    return orig, plain, zoo.find("pc", "image", orig.id)


def test_compressed_weights_load_the_same_tensors_under_the_same_pin(packed):
    orig, plain, card = packed
    assert card.path == card.path.parent / "pc-image-v2.safetensors.xz" and card.path.parent != orig.path.parent
    assert not (card.path.parent / "pc-image-v2.safetensors").exists()
    assert card.sha256 == orig.sha256 and card.path.stat().st_size < len(plain)
    assert zoo.read_weights(card) == plain
    a, b = zoo.load_tensors_numpy(orig), zoo.load_tensors_numpy(card)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_shipped_cards_pin_their_weights():
    """Every shipped card's weights (plain or compressed) match its SHA-256."""
    shipped = [c for c in zoo.cards().values() if c.path.parent == ROOT / "models"]
    assert len(shipped) >= 13 and any(c.path.name.endswith(".xz") for c in shipped)
    for c in shipped:
        zoo.read_weights(c)


def test_damaged_or_cut_compressed_weights_are_refused(packed):
    card = packed[2]
    data = card.path.read_bytes()
    for bad in (data[: len(data) // 2], data[:40] + bytes([data[40] ^ 1]) + data[41:], b"not xz at all"):
        card.path.write_bytes(bad)
        with pytest.raises(ModelMismatch, match="damaged"):
            zoo.read_weights(card)
