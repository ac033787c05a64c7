"""pc codec on natural RGB images: wavefront order, exact integer circuit, lossless round trips, sets."""
import os
import subprocess
import sys

import numpy as np
import pytest

import ncodec
from ncodec.codecs import pc_image
from ncodec.codecs.pc import PcCodec


def _photo(h, w, seed=0):
    """A photo-like test image (smooth shading, edges, noise) drawn here, no data set needed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([96 + 60 * np.sin(xx / 9.0 + c) + 40 * np.cos(yy / 13.0 - c) for c in range(3)], -1)
    base[(xx - w / 2) ** 2 + (yy - h / 3) ** 2 < (min(h, w) / 4) ** 2] += 50
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _tree():
    return PcCodec().model(kind="image")[1]


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (7, 1), (2, 2), (5, 13), (33, 17)])
def test_wavefront_covers_every_pixel_once_after_its_neighbours(h, w):
    step_of = np.full(h * w, -1)
    for t, (y, x) in enumerate(pc_image.steps(h, w)):
        assert ((2 * y + x) == t).all() and ((x >= 0) & (x < w)).all()
        assert (step_of[y * w + x] == -1).all()
        step_of[y * w + x] = t
    assert (step_of >= 0).all()
    yy, xx = np.divmod(np.arange(h * w), w)
    for name, idx in pc_image.neighbour_index(yy, xx, h, w).items():
        real = idx < h * w  # the others read the constant sentinel
        assert (step_of[idx[real]] < step_of[real]).all(), name


def test_circuit_rows_are_independent_and_bit_exact():
    """The tables of a pixel do not depend on the other rows of the batch (so the encoder's big batches and
    the decoder's wavefront steps agree), and the integer arithmetic is exact (entries are integers)."""
    tree = _tree()
    st = pc_image.State.of_image(_photo(24, 40))
    ctx, sym = st.rows(np.arange(24 * 40))
    whole, parts = [], []
    tree.code(ctx, lambda i, pmf: (whole.append(pmf), sym[:, i])[1])
    for a in range(0, len(ctx), 97):
        got = []
        tree.code(ctx[a:a + 97], lambda i, pmf: (got.append(pmf), sym[a:a + 97, i])[1])
        parts.append(got)
    for i in range(3):
        joined = np.concatenate([p[i] for p in parts])
        assert np.array_equal(joined, whole[i])
        assert (whole[i] == np.floor(whole[i])).all() and whole[i].max() < 2.0 ** 53
        assert (pc_image.probabilities(whole[i]).sum(1) == 1.0).all()


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (7, 1), (33, 17), (64, 96)])
def test_round_trip_is_lossless(h, w):
    img = _photo(h, w, seed=h * w)
    blob = ncodec.encode(img, codec="pc")
    out = ncodec.decode(blob).data
    assert out.shape == img.shape and np.array_equal(out, img)


def test_grey_items_round_trip_as_grey():
    grey = _photo(20, 30)[:, :, 1]
    blob = ncodec.encode(np.repeat(grey[:, :, None], 3, 2), codec="pc")
    out = ncodec.decode(blob).data
    assert out.shape == (20, 30, 1) and np.array_equal(out[:, :, 0], grey)


def test_beats_png_on_a_photo(photo):
    """Not a benchmark (docs/results has those): a sanity check that the circuit models photo statistics."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", optimize=True)
    blob = ncodec.encode(photo, codec="pc")
    assert len(blob) < 0.9 * len(buf.getvalue())
    assert np.array_equal(ncodec.decode(blob).data, photo)


def test_sets_of_different_sizes_and_random_access(tmp_path):
    items = [_photo(16, 24, 1), _photo(9, 31, 2), _photo(20, 20, 3)]
    blob = ncodec.encode_items(items, codec="pc", names=["a.png", "b.png", "c.png"])
    got = ncodec.decode_items(blob)
    assert [n for n, _ in got] == ["a.png", "b.png", "c.png"]
    assert all(np.array_equal(a, b) for (_, a), b in zip(got, items))
    (name, one), = ncodec.decode_items(blob, items=[1])
    assert name == "b.png" and np.array_equal(one, items[1])


def test_decode_is_identical_under_one_and_two_threads(tmp_path):
    img = _photo(40, 56, seed=7)
    src = tmp_path / "in.npy"
    np.save(src, img)
    code = ("import sys, hashlib, numpy as np, ncodec; img = np.load(sys.argv[1]); b = ncodec.encode(img, codec='pc');"
            "out = ncodec.decode(b).data; assert (out == img).all();"
            "print(hashlib.sha256(b).hexdigest(), hashlib.sha256(out.tobytes()).hexdigest())")
    res = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        res.append(subprocess.run([sys.executable, "-c", code, str(src)], env=env, capture_output=True, text=True,
                                  check=True).stdout)
    assert res[0] == res[1]


def test_damaged_stream_is_a_clear_error():
    blob = bytearray(ncodec.encode(_photo(16, 16), codec="pc"))
    from ncodec import container

    f = container.read(bytes(blob))
    tree = _tree()
    with pytest.raises(ncodec.CorruptFile):
        pc_image.decode(tree, f.units[0].data + b"\x00", 16, 16)
    with pytest.raises(ncodec.CorruptFile, match="cannot hold"):  # a tiny unit claiming a huge image: no allocation
        pc_image.decode(tree, f.units[0].data, 16384, 16384)


def test_transparency_is_refused_by_the_lossless_codec(tmp_path):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = _photo(8, 8)
    rgba[..., 3] = 128
    path = tmp_path / "a.png"
    Image.fromarray(rgba).save(path)
    with pytest.raises(ncodec.BadInput, match="transparency"):
        ncodec.encode(str(path), codec="pc")
    rgba[..., 3] = 255  # opaque: exact in RGB, accepted
    Image.fromarray(rgba).save(path)
    assert np.array_equal(ncodec.decode(ncodec.encode(str(path), codec="pc")).data, rgba[..., :3])


def test_cli_rgb_set_and_info(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from cli.main import main

    files = []
    for i, (h, w) in enumerate([(12, 20), (17, 9)]):
        p = tmp_path / f"p{i}.png"
        Image.fromarray(_photo(h, w, i)).save(p)
        files.append(str(p))
    out = tmp_path / "set.nc"
    r = CliRunner()
    res = r.invoke(main, ["encode", "--codec", "pc", *files, "-o", str(out)])
    assert res.exit_code == 0, res.output
    inf = ncodec.info(str(out))
    assert inf.items == 2 and abs(inf.bpp - 8 * out.stat().st_size / (12 * 20 + 17 * 9)) < 1e-9
    res = r.invoke(main, ["decode", str(out), "-o", str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    for f in files:
        back = np.asarray(Image.open(tmp_path / "back" / f.rsplit("/", 1)[1]))
        assert np.array_equal(back, np.asarray(Image.open(f)))


def test_image_training_recipe_and_export(tmp_path):
    """A few EM passes on rows of two small images improve the check bits; the exported integer tables load
    into the codec and code within a few percent of the float model."""
    import torch

    from ncodec.train import pc as pc_train

    x = np.concatenate([pc_image.samples(_photo(40, 48, s)) for s in range(3)])
    xc = pc_image.samples(_photo(40, 48, 9))
    parent = pc_train.image_tree(x)
    assert (parent < 0).sum() == 1 and parent[pc_image.N_CTX] == -1
    model = pc_train.Hclt(parent, 4, data=x[:2000])
    before = pc_train.check_bits(model, xc)
    for it in range(3):
        model.em_step(x, 500, 0.01, 0.01, 0.3 if it < 2 else None)
    after = pc_train.check_bits(model, xc)
    assert after < before
    run = tmp_path / "run"
    run.mkdir()
    torch.save({**model.state(), "iteration": 3, "hidden": 4, "rows": len(x), "check_bpp": after},
               run / "checkpoint.pt")
    card = pc_train.export_image(run, tmp_path / "models", model_id="pc-image-tiny")
    assert card["config"]["kind"] == "image"
    from safetensors.numpy import load_file

    t = load_file(str(tmp_path / "models" / card["file"]))
    tree = pc_image.CondTree(*(t[k] for k in ("parent", "prior", "trans", "leaf")))
    img = _photo(40, 48, 9)
    data = pc_image.encode(tree, img)
    assert np.array_equal(pc_image.decode(tree, data, 40, 48), img)
    assert 8 * len(data) / (40 * 48) < 1.05 * after + 0.2  # the file costs about what the model predicts

    # the conditional phase of the recipe, resumed from that EM checkpoint: it lowers the check bits, records
    # both numbers, and a second call with a longer schedule resumes where the first stopped
    np.savez(run / "rows.npz", train=x, check=xc)
    logs = []
    pc_train.train_image(run, 3, None, hidden=4, cond_steps=20, cond_batch=500, log=logs.append)
    st = torch.load(run / "checkpoint.pt", weights_only=True)
    assert st["cond_step"] == 20 and st["em_check_bpp"] == after and st["check_bpp"] < after
    pc_train.train_image(run, 3, None, hidden=4, cond_steps=30, cond_batch=500, log=logs.append)
    assert any("conditional step 20" in m for m in logs if m.startswith("resumed"))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["cond_step"] == 30
    card = pc_train.export_image(run, tmp_path / "models", model_id="pc-image-tiny", overwrite=True)
    assert card["training"]["conditional_steps"] == 30 and card["training"]["check_bits_per_pixel_after_em"] == \
        round(after, 4)
