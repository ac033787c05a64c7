"""Shipped-model storage: compressed weights (xz, or byte planes and xz) load to the same tensors, pinned by the
same SHA-256."""
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
    assert card.path == card.path.parent / "pc-image-v2.safetensors.planes.xz" and card.path.parent != orig.path.parent
    assert not (card.path.parent / "pc-image-v2.safetensors").exists()
    assert card.sha256 == orig.sha256 and card.path.stat().st_size < len(plain)
    assert zoo.read_weights(card) == plain
    a, b = zoo.load_tensors_numpy(orig), zoo.load_tensors_numpy(card)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_byte_planes_regroup_multi_byte_tensors_and_undo_exactly(tmp_path):
    """byte_planes keeps the header and each tensor's region, regroups the bytes of every tensor of a multi-byte
    dtype by position (fp16: all low bytes, then all high bytes), leaves one-byte tensors alone, and its inverse
    restores the file; a .safetensors.planes.xz and the older .safetensors.xz of the same bytes read the same;
    a planes file whose header does not fit its data is refused as damaged."""
    import lzma

    from safetensors.numpy import save

    a = np.array([0x0102, 0x0304, 0x0506], np.uint16).view(np.float16)
    data = save({"a": a, "b": np.array([7, 8], np.uint8), "c": np.array([0x0A0B0C0D], np.int32)})
    planes = zoo.byte_planes(data)
    n = 8 + int.from_bytes(data[:8], "little")
    assert planes[:n] == data[:n] and len(planes) == len(data) and planes != data
    body, flat = planes[n:], data[n:]
    order = json.loads(data[8:n])
    for name, expect in (("a", bytes([2, 4, 6, 1, 3, 5])), ("b", bytes([7, 8])), ("c", bytes([0x0D, 0x0C, 0x0B, 0x0A]))):
        lo, hi = order[name]["data_offsets"]
        assert body[lo:hi] == expect and sorted(flat[lo:hi]) == sorted(expect)
    assert zoo.byte_planes(planes, inverse=True) == data
    (tmp_path / "m.safetensors.planes.xz").write_bytes(zoo.pack_weights(data))
    (tmp_path / "m.safetensors.xz").write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ))
    assert zoo.read_safetensors(tmp_path / "m.safetensors.planes.xz") == data
    assert zoo.read_safetensors(tmp_path / "m.safetensors.xz") == data
    (tmp_path / "bad.safetensors.planes.xz").write_bytes(lzma.compress(data[:n] + data[n + 1 :], format=lzma.FORMAT_XZ))
    with pytest.raises(ModelMismatch, match="damaged"):
        zoo.read_safetensors(tmp_path / "bad.safetensors.planes.xz")


def test_shipped_cards_pin_their_weights():
    """Every shipped card's weights (plain or compressed) match its SHA-256."""
    shipped = [c for c in zoo.cards().values() if c.path.parent == ROOT / "models"]
    assert len(shipped) >= 13 and any(c.path.name.endswith(".planes.xz") for c in shipped)
    for c in shipped:
        zoo.read_weights(c)


def test_damaged_or_cut_compressed_weights_are_refused(packed):
    card = packed[2]
    data = card.path.read_bytes()
    for bad in (data[: len(data) // 2], data[:40] + bytes([data[40] ^ 1]) + data[41:], b"not xz at all"):
        card.path.write_bytes(bad)
        with pytest.raises(ModelMismatch, match="damaged"):
            zoo.read_weights(card)


def test_exports_never_replace_a_model_unless_told(tmp_path):
    """write_model refuses an id already in the folder (weights, xz weights or card); with overwrite it replaces
    it whole (nothing of the old card carries over: a stale base_model would merge the wrong tensors) and drops
    a stale .safetensors.xz of that id."""
    import numpy as np

    from ncodec.errors import ModelExists
    from ncodec.zoo import sha256_file, write_model

    card = write_model(tmp_path, "m-t", "pc", "image", {"a": np.arange(4, dtype=np.int32)}, {"k": 1},
                       {"base_model": {"id": "x"}})
    assert card["sha256"] == sha256_file(tmp_path / "m-t.safetensors") and card["config"] == {"k": 1}
    before = (tmp_path / "m-t.safetensors").read_bytes()
    with pytest.raises(ModelExists, match="m-t"):
        write_model(tmp_path, "m-t", "pc", "image", {"a": np.zeros(4, np.int32)}, None, {})
    assert (tmp_path / "m-t.safetensors").read_bytes() == before
    (tmp_path / "x-t.json").write_text("{}")  # a model stored as .safetensors.xz has a card and no .safetensors
    with pytest.raises(ModelExists):
        write_model(tmp_path, "x-t", "pc", "image", {"a": np.zeros(4, np.int32)}, None, {})
    (tmp_path / "m-t.safetensors.xz").write_bytes(b"stale")
    card = write_model(tmp_path, "m-t", "pc", "image", {"a": np.ones(4, np.int32)}, {"k": 2},
                       {"sha256": "not this"}, overwrite=True)
    assert "base_model" not in card and card["config"] == {"k": 2}
    assert json.loads((tmp_path / "m-t.json").read_text()) == card
    assert card["sha256"] == sha256_file(tmp_path / "m-t.safetensors") != "not this"
    assert not (tmp_path / "m-t.safetensors.xz").exists()
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("recipe,model_id", [("walloc-image", "walloc-image-v2"), ("pc-image", "pc-image-v2"),
                                             ("rvq", "rvq-audio-v1"), ("vqgan", "vqgan-image-v1")])
def test_train_export_refuses_a_shipped_id_before_training(tmp_path, recipe, model_id):
    import subprocess
    import sys

    models = Path(__file__).resolve().parents[1] / "models"
    r = subprocess.run([sys.executable, "-m", "cli.main", "train", recipe, "--run", str(tmp_path / "run"),
                        "--data", str(tmp_path / "none"), "--export", str(models)], capture_output=True, text=True)
    assert r.returncode == 6 and model_id in r.stderr and "--force" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


def test_delta_model_stores_the_difference_and_keeps_the_identity(tmp_path, monkeypatch):
    """scripts/delta_model.py: the model's file keeps only its new and changed tensors, names the base tensors it
    lacks as replaced, loads to the very same tensors, and keeps its identity (hash8) for files naming it."""
    spec = importlib.util.spec_from_file_location("delta_model", ROOT / "scripts" / "delta_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    base = {"net.a": rng.standard_normal((64, 64)).astype(np.float16), "net.b": np.arange(9, dtype=np.int32),
            "net.gone": np.ones(3, np.float32)}
    model = {"net.a": base["net.a"], "net.b": base["net.b"] + 1, "cm.t": np.arange(5, dtype=np.int32)}
    zoo.write_model(tmp_path, "m-base", "walloc", "image", base, None, {})
    zoo.write_model(tmp_path, "m-new", "walloc", "image", model, {"k": 1}, {})
    monkeypatch.setenv("NCODEC_MODELS", str(tmp_path))
    monkeypatch.setattr(mod, "MODELS", tmp_path)
    before = zoo.find("walloc", "image", "m-new")
    mod.delta("m-new", "m-base")
    after = zoo.find("walloc", "image", "m-new")
    assert after.hash8 == before.hash8 and after.sha256 != before.sha256
    assert after.card["base_model"] == {"id": "m-base", "sha256": zoo.find("walloc", "image", "m-base").identity,
                                        "replaced": ["net.gone"]}
    assert not (tmp_path / "m-new.safetensors").exists() and after.path.name == "m-new.safetensors.planes.xz"
    from safetensors.numpy import load

    assert sorted(load(zoo.read_weights(after))) == ["cm.t", "net.b"]
    assert zoo.safetensors_metadata(zoo.read_weights(after))["config"] == '{"k": 1}'
    got = zoo.load_tensors_numpy(after)
    assert got.keys() == model.keys() and all(np.array_equal(got[k], model[k]) for k in model)
    with pytest.raises(SystemExit, match="already stored on a base"):
        mod.delta("m-new", "m-base")


def test_int8_tensors_load_as_float32_steps_times_integers(tmp_path, monkeypatch):
    """A tensor stored as ``name#int8`` with a float32 step per row (``zoo.quantise_rows``) loads as float32
    ``name`` = integer x step, the same numbers from the torch and the numpy loader; a pair that does not match
    is refused as a damaged file."""
    import torch

    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w[3] = 0
    q, step = zoo.quantise_rows(w)
    assert q.dtype == np.int8 and step.dtype == np.float32 and step[3] == 1 and np.abs(q).max() == 127
    assert np.abs(q.astype(np.float32) * step[:, None, None, None] - w).max() <= step.max() / 2 + 1e-7
    zoo.write_model(tmp_path, "m-int8", "walloc", "image",
                    {"net.w#int8": q, "net.w#scale": step, "net.b": np.ones(6, np.float16)}, None, {})
    monkeypatch.setenv("NCODEC_MODELS", str(tmp_path))
    card = zoo.find("walloc", "image", "m-int8")
    a, t = zoo.load_tensors_numpy(card), zoo.load_tensors(card)
    assert sorted(a) == sorted(t) == ["net.b", "net.w"]
    assert a["net.w"].dtype == np.float32 and t["net.w"].dtype == torch.float32
    assert np.array_equal(a["net.w"], q.astype(np.float32) * step[:, None, None, None])
    assert np.array_equal(t["net.w"].numpy(), a["net.w"])
    for bad in ({"w#int8": q}, {"w#scale": step}, {"w#int8": q, "w#scale": step[:5]},
                {"w#int8": q.astype(np.int16), "w#scale": step}, {"w#int8": q, "w#scale": step, "w": w}):
        with pytest.raises(ModelMismatch, match="damaged"):
            zoo.dequantise(bad, "m")
