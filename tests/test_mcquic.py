"""McQuic image codec: cascaded code tables, rates, tiles, determinism, damaged files, training + export."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import ncodec
from ncodec import container
from ncodec.errors import BadInput, CorruptFile

TINY = dict(levels=2, ch=16, width=16, n_res=1, groups=2, coarse_stages=1, fine_stages=2, codebook_size=32)


def psnr(a, b):
    return 10 * np.log10(255**2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-12))


def _corpus(root, photo):
    """A training corpus of crops of the test photo (train/images)."""
    from PIL import Image

    d = root / "train" / "images"
    d.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.ascontiguousarray(np.rot90(photo, i))).save(d / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, photo):
    """A tiny model trained a few steps here (warm-up, seeding, VQ, re-seeding) and exported like the real one."""
    from ncodec.train import mcquic

    root = tmp_path_factory.mktemp("mcquic")
    corpus = _corpus(root / "corpus", photo)
    logs = []
    mcquic.train(root / "run", 4, str(corpus), batch=4, crop=32, config=TINY, warmup=2, save_every=2,
                 log=logs.append)
    mcquic.train(root / "run", 6, str(corpus), batch=4, crop=32, warmup=2, log=logs.append)
    assert any("resumed" in m and "step 4" in m for m in logs)
    assert any("seeded" in m for m in logs)
    card = mcquic.export(root / "run", root / "models", model_id="mcquic-image-tiny", data=str(corpus), crops=16,
                         crop=32, log=logs.append)
    return root / "models", card


@pytest.fixture()
def models(tiny, monkeypatch):
    monkeypatch.setenv("NCODEC_MODELS", str(tiny[0]))
    return tiny[1]


def test_export_card_pins_hash_and_reports_codebooks(models, tiny):
    from ncodec.zoo import sha256_file

    assert models["sha256"] == sha256_file(tiny[0] / "mcquic-image-tiny.safetensors")
    n = 2 * (1 + 2)
    assert len(models["codebooks"]) == n
    assert all(0 < c["used"] <= 1 and c["bits_context"] <= np.log2(32) + 0.1 for c in models["codebooks"])


def test_int8_export_stores_half_the_network_bytes_and_codes_alike(tiny, photo, tmp_path, monkeypatch):
    """``export(int8=True)``: every weight matrix and kernel as 8-bit integers with a float32 step per output
    channel (biases fp16), about half of fp16's bytes; the model encodes and decodes like the fp16 one."""
    from safetensors.numpy import load

    from ncodec import zoo
    from ncodec.train import mcquic

    root = tiny[0].parent
    monkeypatch.setattr(mcquic, "INT8_MIN", 1000)  # the tiny model's tensors are small
    card = mcquic.export(root / "run", tmp_path, model_id="mcquic-image-tiny8", data=str(root / "corpus"),
                         crops=16, crop=32, log=lambda m: None, int8=True)
    assert card["training"]["weights"] == "int8 per output channel"
    fp16, int8 = (load(zoo.read_safetensors(p)) for p in (tiny[0] / "mcquic-image-tiny.safetensors",
                                                           tmp_path / "mcquic-image-tiny8.safetensors"))
    mats = [k for k, v in fp16.items() if k.startswith("net.") and v.ndim >= 2]
    big = [k for k in mats if fp16[k].size >= 1000]
    assert big and all(k not in int8 and int8[k + "#int8"].dtype == np.int8 for k in big)
    assert all(int8[k].dtype == np.float16 for k in fp16 if k.startswith("net.") and k not in big)
    net_bytes = [sum(v.nbytes for k, v in t.items() if k.startswith("net.")) for t in (fp16, int8)]
    assert net_bytes[1] < 0.65 * net_bytes[0]
    assert np.array_equal(int8["codebooks"], fp16["codebooks"])
    quality = []
    for models_dir, model in ((tiny[0], "mcquic-image-tiny"), (tmp_path, "mcquic-image-tiny8")):
        monkeypatch.setenv("NCODEC_MODELS", str(models_dir))
        blob = ncodec.encode(photo, codec="mcquic", quality=100, options={"model": model})
        assert ncodec.info(blob).model == model
        quality.append(psnr(photo, ncodec.decode(blob).data))
    assert abs(quality[1] - quality[0]) < 0.5, quality


def test_quality_selects_codebooks_and_rate_grows(models, photo):
    sizes, quals = [], []
    for q in (0, 40, 100):
        blob = ncodec.encode(photo, codec="mcquic", quality=q)
        info = ncodec.info(blob)
        assert info.codec == "mcquic" and info.model == "mcquic-image-tiny"
        dec = ncodec.decode(blob)
        assert dec.data.shape == photo.shape and dec.data.dtype == np.uint8
        sizes.append(len(blob))
        quals.append(info.meta["codebooks"])
    assert quals == [1, 3, 6]
    assert sizes[0] < sizes[1] < sizes[2]


def test_bpp_target_is_met_from_file_bytes(models, photo):
    blob = ncodec.encode(photo, codec="mcquic", bpp=0.5)
    assert 8 * len(blob) / (photo.shape[0] * photo.shape[1]) <= 0.5


def test_odd_sizes_and_multiple_tiles(models, monkeypatch):
    from ncodec.codecs import mcquic

    monkeypatch.setattr(mcquic, "TILE", 40)
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(128, 30, (37, 101, 3)), 0, 255).astype(np.uint8)
    blob = ncodec.encode(img, codec="mcquic", quality=100)
    f = container.read(blob)
    assert len(f.units) == 3 and f.units[0].key == (0, 0, 37, 34)
    assert ncodec.decode(blob).data.shape == img.shape


def test_decode_identical_under_1_and_2_threads(models, photo, decode_with_threads):
    blob = ncodec.encode(photo, codec="mcquic", quality=70)
    out = decode_with_threads("mcquic", blob)
    assert out[0][0] == out[1][0]  # the entropy-coded indices are exact
    assert np.abs(out[0][1].astype(int) - out[1][1].astype(int)).max() <= 1


def test_bytes_at_most_the_static_tables_cross_entropy(models, photo):
    """Codec version 2's adaptive coding costs no more than the static tables alone would (version 1 is within
    a coder overhead of their cross-entropy), and those beat a uniform code."""
    from ncodec.api import _codec

    blob = ncodec.encode(photo, codec="mcquic", quality=100)
    f = container.read(blob)
    assert f.header.codec_version == 2
    bits = _codec("mcquic").bits(f.header, f.units)
    assert bits["payload_bits"] <= bits["context_bits"] * 1.02 + 64 * 6  # coder overhead: small
    assert bits["context_bits"] < bits["uniform_bits"]


def test_version_1_files_decode_to_the_same_indices(models, photo, monkeypatch):
    """Files of codec version 1 (static tables, one indexed stream per codebook) still decode; the same indices
    coded both ways give the same pixels, version 2 in fewer bytes on a real photo."""
    from ncodec.api import _codec
    from ncodec.codecs import mcquic

    monkeypatch.setattr(mcquic, "ADAPTED_LENGTHS", False)  # the same indices both ways
    v2 = ncodec.encode(photo, codec="mcquic", quality=100)
    with monkeypatch.context() as m:
        m.setattr(mcquic.McquicCodec, "version", 1)
        v1 = ncodec.encode(photo, codec="mcquic", quality=100)
    assert container.read_header(v1).codec_version == 1 and container.read_header(v2).codec_version == 2
    codec = _codec("mcquic")
    digests = [codec.symbols_digest(f.header, f.units) for f in map(container.read, (v1, v2))]
    assert digests[0] == digests[1]
    assert np.array_equal(ncodec.decode(v1).data, ncodec.decode(v2).data)
    assert len(v2) < len(v1)


def _random_tables(rng, n, k):
    from ncodec.entropy import quantize_pmf

    return np.stack([quantize_pmf(np.append(rng.dirichlet(np.full(k, 0.3)), 1e-6)) for _ in range(n)]).astype(np.int64)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (6, 11), (48, 50)])  # 48 x 50: counts halved once
def test_adaptive_kernel_round_trip(shape):
    """The version 2 coding loop on synthetic index maps (smooth regions, so neighbour matches happen, and noise):
    the decoder gets every index back, codebook by codebook; a repetitive map costs fewer bits than its size
    under the static tables; damaged words never raise, they decode to a status or other indices."""
    from ncodec.codecs.mcquic_kernel import OK, Decoder, encode_unit

    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    k = 64
    freqs = _random_tables(rng, 5, k)
    h, w = shape
    streams = []
    for _ in range(3):
        base = rng.integers(0, k, (h // 3 + 1, w // 3 + 1)).repeat(3, 0).repeat(3, 1)[:h, :w]
        noise = rng.random((h, w)) < 0.2
        sym = np.where(noise, rng.integers(0, k, (h, w)), base).reshape(-1)
        streams.append((sym, rng.integers(0, len(freqs), h * w), h, w))
    words = encode_unit(streams, freqs)
    dec = Decoder(words, freqs)
    for sym, tidx, hh, ww in streams:
        got, status = dec.codebook(tidx, hh, ww)
        assert status == OK and np.array_equal(got, sym)
    if h * w > 50:
        static = sum(-np.log2(freqs[t, s] / 2**16).sum() for s, t, _, _ in streams)
        assert 32 * len(words) < static
    for seed in range(3):
        junk = np.random.default_rng(seed).integers(0, 2**32, max(len(words), 1), dtype=np.uint64).astype(np.uint32)
        dec = Decoder(junk, freqs)
        for _, tidx, hh, ww in streams:
            got, status = dec.codebook(tidx, hh, ww)
            assert got.shape == (hh * ww,) and (status != OK or (got.min() >= 0 and got.max() < k))


def test_damaged_or_inconsistent_files_fail_cleanly(models, photo):
    from ncodec.api import _codec

    blob = ncodec.encode(photo, codec="mcquic", quality=60)
    f = container.read(blob)
    codec = _codec("mcquic")
    with pytest.raises(CorruptFile):
        codec.decode(replace(f.header, params=b"\0"), f.units)
    with pytest.raises(CorruptFile):
        codec.decode(replace(f.header, params=(1024).to_bytes(2, "little") + bytes([99])), f.units)
    with pytest.raises(CorruptFile):
        codec.decode(f.header, [container.Unit((0, 0, 5000, 10), f.units[0].data)])
    with pytest.raises(CorruptFile):
        codec.decode(f.header, [container.Unit(f.units[0].key, f.units[0].data + b"\0\0\0\0")])
    with pytest.raises(CorruptFile):
        codec.decode(f.header, [container.Unit(f.units[0].key, f.units[0].data[: len(f.units[0].data) // 2])])
    with pytest.raises(BadInput):
        ncodec.encode(np.zeros((10, 10), np.uint8), codec="mcquic")
    with pytest.raises(BadInput):
        ncodec.encode(photo, codec="mcquic", quality=101)


def test_cli_round_trip_and_clean_errors(models, photo_png, tmp_path):
    before = photo_png.read_bytes()
    nc, png = tmp_path / "p.nc", tmp_path / "p.png"
    cli = [sys.executable, "-m", "cli.main"]
    r = subprocess.run(cli + ["encode", str(photo_png), "-o", str(nc), "--codec", "mcquic", "--quality", "80"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert photo_png.read_bytes() == before
    r = subprocess.run(cli + ["info", str(nc), "--json"], capture_output=True, text=True)
    assert json.loads(r.stdout)["codec"] == "mcquic"
    r = subprocess.run(cli + ["decode", str(nc), "-o", str(png)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr and png.exists()
    r = subprocess.run(cli + ["encode", str(photo_png), "-o", str(tmp_path / "x.nc"), "--codec", "mcquic",
                              "--bpp", "0.0001"], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and not (tmp_path / "x.nc").exists()


def test_shipped_model_quality_and_context_gain(photo):
    """The shipped model: better than a coarse floor at full rate, and its cascaded tables beat the marginals."""
    from ncodec import zoo
    from ncodec.api import _codec

    try:
        zoo.find("mcquic", "image")
    except Exception:
        pytest.skip("no mcquic model installed")
    blob = ncodec.encode(photo, codec="mcquic", quality=100)
    assert psnr(ncodec.decode(blob).data, photo) > 24
    f = container.read(blob)
    bits = _codec("mcquic").bits(f.header, f.units)
    assert bits["context_bits"] < bits["marginal_bits"] < bits["uniform_bits"]


def test_rate_aware_index_choice_saves_bits(models, photo, monkeypatch):
    """The encoder's entropy-constrained index choice (format unchanged) costs fewer bytes than nearest codewords."""
    from ncodec.codecs import mcquic

    sizes = {}
    for alpha in (0.0, 2.0):
        monkeypatch.setattr(mcquic, "RD_ALPHA", alpha)
        blob = ncodec.encode(photo, codec="mcquic", quality=100)
        sizes[alpha] = len(blob)
        assert ncodec.decode(blob).data.shape == photo.shape
    assert sizes[2.0] < sizes[0.0]


def test_beam_search_index_choice(photo):
    """The encoder's beam search through the residual stages: beam 1 is the greedy stage-by-stage choice, index
    for index; wider beams end on a lower cost (squared error + lambda * bits) on average; files written with
    any beam decode; a bad beam is a clear error."""
    import torch

    from ncodec import zoo
    from ncodec.codecs.mcquic import RD_ALPHA, McquicModel

    m = McquicModel.from_card(zoo.find("mcquic", "image", "mcquic-image-v2"))
    x = torch.from_numpy(photo[:64, :96].copy()).permute(2, 0, 1)[None].float() / 255
    n = m.cfg.n_codebooks
    greedy = m.net.encode_codes(x, n, m.cbs, m.code_bits, RD_ALPHA)
    y1, _ = m.net.analysis(x, torch.tensor([n]))
    with torch.no_grad():
        for alpha in (0.0, RD_ALPHA):  # same choices, whichever path computes them
            ref = m.net.encode_codes(x, n, m.cbs, m.code_bits, alpha)
            one = m.net.encode_codes(x, n, m.cbs, m.code_bits, alpha, beam=1)  # greedy loop
            fine = m.cfg.n_coarse
            codes = [c.clone() for c in ref[:fine]]
            y2_hat = m.net.latent_of_codes(codes, (8, 12), m.cbs)  # y1_hat with the coarse codes only = pred
            m.net._beam_codes_of_scale(y1 - y2_hat, fine, m.cfg.fine_stages, n, m.cbs, codes, m.code_bits, alpha, 1)
            assert all(torch.equal(a, b) for a, b in zip(ref, one))
            assert all(torch.equal(a, b) for a, b in zip(ref, codes))
        err = {}
        for beam in (1, 4):
            codes = m.net.encode_codes(x, n, m.cbs, None, 0.0, beam)
            err[beam] = float((m.net.latent_of_codes(codes, (8, 12), m.cbs) - y1).pow(2).mean())
        assert err[4] < 0.97 * err[1]
        # vectors searched a few at a time (bounded memory) find the same paths when no rate term is involved
        fine = m.cfg.n_coarse
        resid = y1 - m.net.latent_of_codes(codes[:fine], (8, 12), m.cbs)
        whole, parts = list(codes[:fine]), list(codes[:fine])
        m.net._beam_codes_of_scale(resid, fine, m.cfg.fine_stages, n, m.cbs, whole, None, 0.0, 4)
        m.net._beam_codes_of_scale(resid, fine, m.cfg.fine_stages, n, m.cbs, parts, None, 0.0, 4, chunk=7)
        assert all(torch.equal(a, b) for a, b in zip(whole, codes))
        assert all(torch.equal(a, b) for a, b in zip(whole, parts))
    assert len(greedy) == n
    blobs = {b: ncodec.encode(photo, codec="mcquic", quality=70, options={"beam": b}) for b in (1, 3)}
    assert blobs[1] != blobs[3]
    for b, blob in blobs.items():
        assert psnr(ncodec.decode(blob).data, photo) > 24
    with pytest.raises(BadInput, match="beam"):
        ncodec.encode(photo, codec="mcquic", options={"beam": 0})


def test_warm_start_adds_fine_stages(models, tiny, photo, tmp_path):
    """`ncodec train mcquic --init ID --fine-stages S`: the networks and codebooks come from the installed model,
    the added stages are seeded from data, and a resumed run does not fall back to the autoencoder warm-up."""
    import torch

    from ncodec.codecs.mcquic_net import McquicConfig, McquicNet
    from ncodec.train import mcquic
    from ncodec.zoo import find, load_tensors

    tensors = load_tensors(find("mcquic", "image", "mcquic-image-tiny"))
    net = McquicNet(McquicConfig(**{**TINY, "fine_stages": 3}))
    assert mcquic.warm_start(net, "mcquic-image-tiny") == 6
    assert torch.equal(net.enc_in.weight, tensors["net.enc_in.weight"].float())
    for j in range(6):
        assert torch.equal(net.vq[j].embed, tensors["codebooks"][j].float())
    emb = net.rate_emb.weight
    assert torch.equal(emb[:7], tensors["net.rate_emb.weight"].float()) and torch.equal(emb[7], emb[6])
    with pytest.raises(ValueError, match="layout"):
        mcquic.warm_start(McquicNet(McquicConfig(**{**TINY, "groups": 4})), "mcquic-image-tiny")

    corpus = _corpus(tmp_path / "corpus", photo)
    logs = []
    mcquic.train(tmp_path / "run", 2, str(corpus), batch=4, crop=32, config={"fine_stages": 3},
                 init="mcquic-image-tiny", save_every=2, log=logs.append)
    assert any("started from mcquic-image-tiny" in m for m in logs)
    assert any("seeded codebooks 6..7" in m for m in logs)
    logs.clear()
    mcquic.train(tmp_path / "run", 3, str(corpus), batch=4, crop=32, log=logs.append)
    assert any("resumed" in m for m in logs) and not any("seeded" in m for m in logs)

    # exporting under an installed model's id is refused before any training (its files must keep decoding)
    r = subprocess.run([sys.executable, "-m", "cli.main", "train", "mcquic", "--run", str(tmp_path / "run2"),
                        "--steps", "1", "--data", str(corpus), "--export", str(tiny[0]), "--model-id",
                        "mcquic-image-tiny"], capture_output=True, text=True)
    assert r.returncode != 0 and "exists" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run2").exists()


def test_decoder_recipe_grows_resumes_and_keeps_the_base_bytes(tiny, photo, tmp_path, monkeypatch):
    """`ncodec train mcquic-decoder`: added residual blocks start as the identity (step 0 = the base decoder), a
    run resumes, the encoder half of the rate embedding never moves, and the exported model (decoder tensors only,
    the rest from its pinned base) writes the base model's units byte for byte: only the pixels change."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from ncodec import zoo
    from ncodec.codecs.mcquic import McquicModel
    from ncodec.errors import ModelExists, ModelMismatch
    from ncodec.train import mcquic

    folder = tmp_path / "models"
    folder.mkdir()
    for f in tiny[0].glob("mcquic-image-tiny.*"):
        shutil.copy(f, folder)
    monkeypatch.setenv("NCODEC_MODELS", str(folder))
    corpus, logs, run = _corpus(tmp_path / "corpus", photo), [], tmp_path / "run"
    net, step = mcquic.train_decoder(run, "mcquic-image-tiny", 0, str(corpus), crop=32, n_res=2, check_crop=32,
                                     log=logs.append)
    base = McquicModel.from_card(zoo.find("mcquic", "image", "mcquic-image-tiny"))
    y, n = torch.randn(2, 16, 4, 6), torch.tensor([3, 6])
    with torch.no_grad():
        assert step == 0 and len(net.dec) == len(base.net.dec) + 1
        assert torch.allclose(net.synthesis(y, n), base.net.synthesis(y, n), atol=1e-6)
    mcquic.train_decoder(run, "mcquic-image-tiny", 2, str(corpus), batch=2, crop=32, n_res=2, check_every=2,
                         check_crop=32, log=logs.append)
    mcquic.train_decoder(run, "mcquic-image-tiny", 4, str(corpus), batch=2, crop=32, check_crop=32, log=logs.append)
    assert any("resumed" in m and "step 2" in m for m in logs)
    card = mcquic.export_decoder(run, folder, "mcquic-image-tinydec", log=logs.append)
    assert card["config"]["n_res"] == 2 and card["decoder_finetune"]["steps"] == 4
    assert card["base_model"] == {"id": "mcquic-image-tiny", "sha256": tiny[1]["sha256"],
                                  "replaced": [f"net.{p}" for p in mcquic.DECODER_PARAMS]}
    with pytest.raises(ModelExists):
        mcquic.export_decoder(run, folder, "mcquic-image-tinydec", log=logs.append)
    own = load_file(str(folder / card["file"]))
    assert "codebooks" not in own and not any(k.startswith(("net.enc", "net.pred", "net.vq")) for k in own)
    w2 = 2 * TINY["width"]  # the encoder's FiLM columns
    assert torch.equal(own["net.rate_emb.weight"][:, :w2], base.net.rate_emb.weight[:, :w2].half())
    assert not torch.equal(own["net.rate_emb.weight"][:, w2:], base.net.rate_emb.weight[:, w2:].half())
    for q in (20, 100):
        a = ncodec.encode(photo, codec="mcquic", quality=q, options={"model": "mcquic-image-tiny"})
        b = ncodec.encode(photo, codec="mcquic", quality=q)  # the newest installed: the fine-tuned one
        fa, fb = container.read(a), container.read(b)
        assert fb.header.model_id == "mcquic-image-tinydec" and fa.header.model_id == "mcquic-image-tiny"
        assert [u.data for u in fa.units] == [u.data for u in fb.units]
        da, db = ncodec.decode(a).data, ncodec.decode(b).data
        assert not np.array_equal(da, db) and psnr(da, db) > 25  # four small steps: close, not equal
    with pytest.raises(ModelMismatch, match="not a mcquic"):
        ncodec.encode(photo, codec="mcquic", options={"model": "walloc-image-v4"})


def test_adapted_lengths_price_the_tiles_own_indices(photo, monkeypatch):
    """Codec version 2's encoder prices indices with the adaptive coder's mixture of table and the tile's counts
    (from a greedy first pass): the index a codebook used most gets cheaper than its table says, an unused one
    dearer; files written with or without it decode (the bitstream does not depend on it)."""
    import torch

    from ncodec import zoo
    from ncodec.codecs import mcquic
    from ncodec.codecs.mcquic import RD_ALPHA, McquicModel

    m = McquicModel.from_card(zoo.find("mcquic", "image", "mcquic-image-v2"))
    x = torch.from_numpy(photo[:64, :96].copy()).permute(2, 0, 1)[None].float() / 255
    codes = [c.numpy() for c in m.net.encode_codes(x, 3, m.cbs, m.code_bits, RD_ALPHA)]
    adapted = m.adapted_lengths(codes)
    counts = np.bincount(codes[0].reshape(-1), minlength=m.cfg.codebook_size)
    top, unused = int(counts.argmax()), int(np.flatnonzero(counts == 0)[0])
    assert adapted[0, top] < m.code_len[0, top] and adapted[0, unused] > m.code_len[0, unused]
    assert torch.equal(adapted[m.bases[3]:], m.code_len[m.bases[3]:])  # codebooks without codes: their tables
    crop = np.ascontiguousarray(photo[:64, :96])
    for on in (True, False):
        monkeypatch.setattr(mcquic, "ADAPTED_LENGTHS", on)
        blob = ncodec.encode(crop, codec="mcquic", quality=60)
        assert psnr(ncodec.decode(blob).data, crop) > 20
