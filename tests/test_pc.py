"""Probabilistic-circuit lossless codec: exactness, integer determinism, multi-item files, training code."""
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

import ncodec
from ncodec.api import _codec
from ncodec import container
from ncodec.codecs.pc import ITEMS_PER_UNIT, TreeModel
from ncodec.errors import BadInput, CorruptFile
from ncodec.train import pc as pc_train
from ncodec_cli.main import main


def _random_tree_model(d=36, k=4, seed=0) -> TreeModel:
    rng = np.random.default_rng(seed)
    parent = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, d)])
    rows = lambda *shape: pc_train.quantize_rows(torch.log_softmax(torch.from_numpy(rng.normal(0, 2, shape)), -1))
    return TreeModel(parent, rows(k), rows(d, k, k), rows(d, k, 256), (6, 6))


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """70 digit-like 28x28 grayscale images drawn with PIL (no dataset needed)."""
    out = []
    for i in range(70):
        im = Image.new("L", (14, 14), 0)
        ImageDraw.Draw(im).text((3 + i % 3, 1 + i % 2), str(i % 10), fill=255)
        out.append(np.asarray(im.resize((28, 28), Image.BILINEAR)))
    return np.stack(out)


def test_tree_model_is_exact_and_batch_independent():
    tm = _random_tree_model()
    x = np.random.default_rng(1).integers(0, 256, (9, 36)).astype(np.uint8)
    data = tm.encode(x)
    assert np.array_equal(tm.decode(data, 9), x)
    # the probabilities of one image do not depend on the others coded beside it
    assert np.array_equal(tm.bits(x)[:3], tm.bits(x[:3]))
    assert tm.bits(x[:1])[0] == tm.bits(x[[0, 5, 5]])[0]
    assert abs(len(data) * 8 - tm.bits(x).sum()) < 64 + 0.01 * tm.bits(x).sum()  # real bytes = model bits
    with pytest.raises(CorruptFile):
        tm.decode(data[:-3], 9)


def test_em_training_improves_and_export_matches(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, (400, 1)) * 60
    x = np.clip(base + rng.integers(0, 30, (400, 36)), 0, 255).astype(np.uint8)  # correlated pixels
    parent, _ = pc_train.chow_liu_tree(x, width=6)
    assert (parent < 0).sum() == 1
    model = pc_train.Hclt(parent, 4, data=x)
    first = model.em_step(x, 100, 0.01, 0.01, step_size=0.3)
    for _ in range(4):
        last = model.em_step(x, 100, 0.01, 0.01)
    assert last < first - 0.2
    run = tmp_path / "run"
    run.mkdir()
    torch.save({**model.state(), "iteration": 5, "hidden": 4, "items": 400, "shape": [6, 6]}, run / "checkpoint.pt")
    card = pc_train.export(run, tmp_path / "models", model_id="pc-tiny")
    from safetensors.numpy import load_file

    tm = TreeModel.from_tensors(load_file(str(tmp_path / "models" / card["file"])), (6, 6))
    with torch.no_grad():
        float_bits = -model.log_likelihood(torch.from_numpy(x[:50].astype(np.int64))).sum().item() / np.log(2)
    int_bits = tm.bits(x[:50]).sum()
    assert abs(int_bits - float_bits) < 0.03 * float_bits  # integer tables cost < 3 % over the float model


def test_multi_item_file_roundtrip_and_random_access(digits):
    names = [f"digit{i:03d}.png" for i in range(len(digits))]
    blob = ncodec.encode_items(list(digits), codec="pc", names=names)
    inf = ncodec.info(blob)
    assert inf.items == len(digits) and inf.names == names and inf.codec == "pc"
    assert inf.units == -(-len(digits) // ITEMS_PER_UNIT)
    assert inf.bpp == 8 * len(blob) / (28 * 28 * len(digits))
    assert inf.bpp < 4.0  # far below raw 8 bits per pixel
    items = ncodec.decode_items(blob)
    assert [n for n, _ in items] == names
    assert all(np.array_equal(a[:, :, 0], d) for (_, a), d in zip(items, digits))
    # random access: one item from the second unit
    (name, one), = ncodec.decode_items(blob, [ITEMS_PER_UNIT + 1])
    assert name == names[ITEMS_PER_UNIT + 1] and np.array_equal(one[:, :, 0], digits[ITEMS_PER_UNIT + 1])
    with pytest.raises(BadInput, match="out of range"):
        ncodec.decode_items(blob, [len(digits)])


def test_decoding_in_two_threads_at_once(digits):
    blob = ncodec.encode_items(list(digits[:20]), codec="pc")
    torch.set_num_threads(1)
    ref = ncodec.decode_items(blob)
    torch.set_num_threads(2)
    results = [None, None]

    def work(i):
        results[i] = ncodec.decode_items(blob)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(r, ref))


def test_pc_rejects_other_images(photo):
    with pytest.raises(BadInput, match="28x28 8-bit grayscale"):  # the digits model, asked for by name
        ncodec.encode(photo, codec="pc", options={"model": "pc-digits-v1"})
    with pytest.raises(BadInput, match="8-bit grayscale or RGB"):
        ncodec.encode(np.zeros((4, 4, 2), np.uint8), codec="pc")
    with pytest.raises(BadInput, match="lossless"):
        ncodec.encode(np.zeros((28, 28, 3), np.uint8), codec="pc", quality=50)
    with pytest.raises(BadInput, match="one item per file"):
        ncodec.encode_items([photo, photo], codec="walloc")


def test_item_names_table_is_ancillary():
    h = container.Header(container.MediaKind.IMAGE, "pc", 1, (28, 28, 1), items=2)
    names = ["a.png", "ü/../b.png"]
    f = container.read(container.write(h, [], names=names))
    assert f.names == names
    with pytest.raises(ValueError):
        container.write(h, [], names=["only one"])


def test_cli_sets(tmp_path, digits):
    files = []
    for i, d in enumerate(digits[:5]):
        p = tmp_path / f"d{i}.png"
        Image.fromarray(d).save(p)
        files.append(str(p))
    r = CliRunner()
    out = tmp_path / "set.nc"
    res = r.invoke(main, ["encode", *files, "-o", str(out)])
    assert res.exit_code == 2 and "multi-item codec" in res.output
    res = r.invoke(main, ["encode", "--codec", "pc", *files, "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["decode", str(out), "-o", str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    for f in files:
        name = f.rsplit("/", 1)[1]
        assert np.array_equal(np.asarray(Image.open(tmp_path / "back" / name)), np.asarray(Image.open(f)))
    res = r.invoke(main, ["decode", str(out), "-o", str(tmp_path / "back")])
    assert res.exit_code == 6  # would overwrite
    res = r.invoke(main, ["decode", str(out), "-o", str(tmp_path / "all.png")])
    assert res.exit_code == 3 and "--item" in res.output and not (tmp_path / "all.png").exists()
    res = r.invoke(main, ["decode", str(out), "--item", "3", "-o", str(tmp_path / "three.png")])
    assert res.exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "three.png")), digits[3])
    res = r.invoke(main, ["decode", str(out), "--item", "9", "-o", str(tmp_path / "nine.png")])
    assert res.exit_code == 3 and "out of range" in res.output
    assert not (tmp_path / "nine.png").exists()
    # a set with a chosen model: the older digits model and the natural-image model both take these digits
    for model_id, version in (("pc-digits-v1", 1), ("pc-image-v2", 2), ("pc-digits-v2", 3)):
        one = tmp_path / f"{model_id}.nc"
        res = r.invoke(main, ["encode", "--codec", "pc", "--model", model_id, *files, "-o", str(one)])
        assert res.exit_code == 0, res.output
        assert (ncodec.info(one.read_bytes()).model, ncodec.info(one.read_bytes()).codec_version) == (model_id, version)
        assert all(np.array_equal(a[:, :, 0], d) for (_, a), d in zip(ncodec.decode_items(one.read_bytes()), digits))


def test_stored_names_cannot_escape_the_folder(tmp_path, digits):
    blob = ncodec.encode_items(list(digits[:3]), codec="pc", names=["../evil.png", "/etc/x", ".hidden"])
    src = tmp_path / "set.nc"
    src.write_bytes(blob)
    res = CliRunner().invoke(main, ["decode", str(src), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["evil.png", "item00002.png", "x.png"]
    assert not (tmp_path / "evil.png").exists()


def _random_context_digits(k=4, seed=0):
    from ncodec.codecs.pc import ContextDigits
    from ncodec.codecs.pc_image import CondTree

    rng = np.random.default_rng(seed)
    d = 5  # 2 neighbours, row, column, the value
    parent = np.array([4, 0, 4, 1, -1])
    rows = lambda *shape: pc_train.quantize_rows(torch.log_softmax(torch.from_numpy(rng.normal(0, 2, shape)), -1),
                                                 floor=1)
    tree = CondTree(parent, rows(k), rows(d, k, k), pc_train.quantize_rows(
        torch.log_softmax(torch.from_numpy(rng.normal(0, 2, (d, k, 256))), -1), bits=16, floor=1), n_ctx=4, n_targets=1)
    return ContextDigits(tree, (6, 7), [(0, -1), (-1, 1)], [4, 5])


def test_context_digits_exact_and_batch_independent():
    cd = _random_context_digits()
    x = np.random.default_rng(1).integers(0, 256, (9, 42)).astype(np.uint8)
    a, b = cd.encode_units([x[:4], x[4:]])
    assert cd.encode_units([x[4:]])[0] == b  # a unit's bytes do not depend on the units coded beside it
    back = cd.decode_units([a, b], [4, 5])
    assert np.array_equal(np.concatenate(back), x)
    assert np.array_equal(cd.bits(x)[:3], cd.bits(x[:3]))
    bits = cd.bits(x).sum()
    assert abs((len(a) + len(b)) * 8 - bits) < 128 + 0.01 * bits  # real bytes = model bits
    with pytest.raises(CorruptFile):
        cd.decode_units([a[:-3]], [4])
    with pytest.raises(ValueError, match="neighbours"):  # a neighbour on the same wavefront step is not causal
        type(cd)(cd.tree, (6, 7), [(0, -1), (-1, 2)], [4, 5])


def test_context_digits_training_and_codec(tmp_path, digits, monkeypatch):
    """Rows -> tree -> EM + conditional steps -> exported integer model -> a pc file that decodes exactly."""
    rows_tr = pc_train.digit_rows(digits[:60])
    rows_ck = pc_train.digit_rows(digits[60:])
    n_ctx = len(pc_train.DIGIT_NEIGHBOURS) + 2
    assert rows_tr.shape == (60 * 784, n_ctx + 1)
    run = tmp_path / "run"
    logs = []
    model = pc_train.train_conditional(run, lambda: (rows_tr, rows_ck), pc_train.digits_tree, n_ctx, 2, 4, 4000,
                                       None, logs.append, 0.3, 0.01, 40, 3e-2, 2000, em_rows=20000, init_rows=5000)
    st = torch.load(run / "checkpoint.pt", weights_only=True)
    assert st["cond_step"] == 40 and st["check_bpp"] < st["em_check_bpp"]
    models = tmp_path / "models"
    card = pc_train.export_digits_context(run, models, model_id="pc-digits-tiny")
    assert card["config"]["neighbours"][0] == [0, -1]
    monkeypatch.setenv("NCODEC_MODELS", str(models))
    blob = ncodec.encode_items(list(digits[:10]), codec="pc", model="pc-digits-tiny")
    assert ncodec.info(blob).codec_version == 3
    back = ncodec.decode_items(blob)
    assert all(np.array_equal(a[:, :, 0], d) for (_, a), d in zip(back, digits[:10]))
    float_bits = pc_train.check_bits(model, pc_train.digit_rows(digits[60:70]), n_ctx=n_ctx) * 7840
    int_bits = _codec("pc").model("pc-digits-tiny")[1].bits(digits[60:70].reshape(10, -1)).sum()
    assert abs(int_bits - float_bits) < 0.03 * float_bits  # integer tables cost < 3 % over the float model


def test_bench_digits_counts_file_bytes(tmp_path, digits):
    """The digits benchmark on a small IDX file: pc as one set file, PNG per digit and tiled, all exact."""
    import gzip
    import json

    from ncodec.bench.digits import run_digits

    data = tmp_path / "mnist"
    data.mkdir()
    raw = np.array([2051, 12, 28, 28], ">u4").tobytes() + digits[:12].tobytes()
    with gzip.open(data / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    out = tmp_path / "out"
    summary = run_digits(["pc", "png"], data, out, start=2, count=8)
    pc, png = summary["codecs"]["pc"], summary["codecs"]["png"]
    assert pc["exact"] and png["exact"]
    assert pc["bits_per_dim"] == 8 * pc["file_bytes"] / (8 * 784) > pc["bits_per_dim_without_names"]
    assert "pc-digits-v2" in pc["setting"] and png["tiled_bits_per_dim"] < png["bits_per_dim"]
    assert json.loads((out / "results.json").read_text())["codecs"]["pc"]["file_bytes"] == pc["file_bytes"]
