"""Implicit video codecs (nerv, nirvana): real bitstreams, random access, resumable encodes, CLI, video API."""
import subprocess
import sys

import numpy as np
import pytest

import ncodec
import ncodec.video
from ncodec import container
from ncodec.errors import BadInput, CorruptFile


def _clip(n=12, h=48, w=64):
    """A bright square moving over a gradient: smooth, with motion."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        f = np.stack([xx * 3, yy * 4, (xx + yy) * 2], -1).astype(np.float64) + 20
        y0, x0 = 8 + i, 10 + 2 * i
        f[y0 : y0 + 14, x0 : x0 + 14] = (230, 200, 60)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(out)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def nerv_blob():
    clip = _clip()
    # bounded by epochs, not time, so the result does not depend on the machine's load
    return clip, ncodec.encode(clip, codec="nerv", media="video", quality=40, fps=30,
                               options={"epochs": 40, "time_budget": 600})


def test_nerv_round_trip_beats_a_flat_guess(nerv_blob):
    clip, blob = nerv_blob
    dec = ncodec.decode(blob)
    assert dec.data.shape == clip.shape and dec.data.dtype == np.uint8
    info = ncodec.info(blob)
    assert info.media == "video" and info.codec == "nerv"
    assert info.bpp == pytest.approx(8 * len(blob) / clip[..., 0].size)
    flat = np.broadcast_to(clip.mean((0, 1, 2)), clip.shape)  # best constant colour
    assert _psnr(dec.data, clip) > _psnr(flat, clip) + 3


def test_random_access_decodes_only_the_groups_needed(monkeypatch):
    from ncodec.codecs import nerv

    monkeypatch.setattr(nerv.NirvanaCodec, "default_group", 4)
    monkeypatch.setattr(nerv.NirvanaCodec, "default_intra", 2)
    clip = _clip(12)
    blob = ncodec.encode(clip, codec="nirvana", media="video", quality=10, options={"epochs": 9})
    f = container.read(blob)
    assert [u.key for u in f.units] == [(0, 4, 0, 0), (4, 4, 1, 1), (8, 4, 2, 0)]  # intra, inter, intra
    full = ncodec.decode(blob).data
    video = ncodec.video.open(blob)
    assert len(video) == 12 and video.shape == clip.shape and float(video.fps) == 25
    calls = []
    orig = nerv._Decoder.frames_of
    monkeypatch.setattr(nerv._Decoder, "frames_of", lambda self, g, a, b: calls.append(g) or orig(self, g, a, b))
    part = video[9:11]
    assert calls == [2] and np.array_equal(part, full[9:11])
    calls.clear()
    assert np.array_equal(video[5], full[5]) and calls == [1]  # inter group: weights rebuilt from group 0
    assert np.array_equal(video[::5], full[::5])
    assert np.array_equal(np.stack(list(video)), full)
    with pytest.raises(IndexError):
        video[12]


def test_decode_is_exact_in_integers_under_1_and_2_threads(nerv_blob, decode_with_threads):
    _, blob = nerv_blob
    out = decode_with_threads("nerv", blob)
    assert out[0][0] == out[1][0]
    diff = np.abs(out[0][1].astype(int) - out[1][1].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_interrupted_encode_resumes_from_checkpoint(tmp_path, monkeypatch):
    from ncodec.codecs import nerv

    monkeypatch.setattr(nerv.NervCodec, "default_group", 4)
    clip = _clip(8)
    ckpt = tmp_path / "out.nc.ckpt"

    def stop_in_group_1(g, groups, epoch, epochs, psnr):
        if g == 1 and epoch == 2:
            raise KeyboardInterrupt

    opts = {"epochs": 6, "checkpoint": str(ckpt)}
    with pytest.raises(KeyboardInterrupt):
        ncodec.encode(clip, codec="nerv", media="video", quality=5, options={**opts, "progress": stop_in_group_1})
    assert (ckpt / "group00000.bin").exists() and not (ckpt / "group00001.bin").exists()
    first = (ckpt / "group00000.bin").read_bytes()
    seen = []
    blob = ncodec.encode(clip, codec="nerv", media="video", quality=5,
                         options={**opts, "progress": lambda g, *a: seen.append(g)})
    assert set(seen) == {1}  # group 0 was not fitted again
    assert container.read(blob).units[0].data == first
    assert not ckpt.exists()  # removed after success
    # a checkpoint of another encode is refused rather than mixed in
    ckpt.mkdir()
    (ckpt / "encode.json").write_text("{}")
    with pytest.raises(BadInput):
        ncodec.encode(clip, codec="nerv", media="video", quality=5, options=opts)


def test_bad_video_input_and_damaged_files(nerv_blob, tmp_path):
    from dataclasses import replace

    from ncodec.api import _codec

    _, blob = nerv_blob
    f = container.read(blob)
    with pytest.raises(CorruptFile):
        _codec("nerv").decode(replace(f.header, params=b"\1\2"), f.units)
    with pytest.raises(CorruptFile):
        _codec("nerv").decode(f.header, [container.Unit((0, 12, 0, 0), f.units[0].data[:20])])
    with pytest.raises(BadInput):
        ncodec.encode(np.zeros((3, 4, 4, 3), np.uint8), codec="nerv", media="video")
    with pytest.raises(BadInput):
        ncodec.encode(np.zeros((3, 40, 40), np.uint8), codec="nerv", media="video")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(BadInput):
        ncodec.encode(bad, codec="nerv")
    with pytest.raises(BadInput):
        ncodec.video.open(ncodec.encode(_clip(1)[0]))  # an image file


def test_cli_folder_of_frames_to_y4m_and_pngs(tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(_clip(6, 40, 56)):
        Image.fromarray(f).save(frames / f"f{i:03d}.png")
    cli = [sys.executable, "-m", "cli.main"]
    nc = tmp_path / "v.nc"
    r = subprocess.run(cli + ["encode", str(frames), "-o", str(nc), "--codec", "nerv", "--quality", "5",
                              "--epochs", "5", "--fps", "12", "--frames", "1:"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stderr and not (tmp_path / "v.nc.ckpt").exists()
    assert ncodec.info(nc.read_bytes()).shape == (5, 40, 56, 3)
    y4m = tmp_path / "v.y4m"
    r = subprocess.run(cli + ["decode", str(nc), "-o", str(y4m), "--frames", "1:4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import av

    with av.open(str(y4m)) as c:
        got = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
        assert float(c.streams.video[0].average_rate) == 12
    assert len(got) == 3 and got[0].shape == (40, 56, 3)
    out = tmp_path / "png"
    r = subprocess.run(cli + ["decode", str(nc), "-o", str(out), "--frames", "3:"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["frame000003.png", "frame000004.png"]
    r = subprocess.run(cli + ["decode", str(nc), "-o", str(tmp_path / "x.wav")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and not (tmp_path / "x.wav").exists()
    r = subprocess.run(cli + ["decode", str(nc), "-o", str(tmp_path / "y.y4m"), "--frames", "x"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "A:B" in r.stderr and not (tmp_path / "y.y4m").exists()
    for bad in ("9:12", "4:2", "-1:3"):  # past the end, empty, negative: an error, not an empty video
        r = subprocess.run(cli + ["decode", str(nc), "-o", str(tmp_path / "y.y4m"), "--frames", bad],
                           capture_output=True, text=True)
        assert r.returncode == 3 and "--frames" in r.stderr and not (tmp_path / "y.y4m").exists(), bad


def test_decoding_different_videos_from_threads(nerv_blob):
    import threading

    clip, blob = nerv_blob
    other = ncodec.encode(clip[::-1].copy(), codec="nirvana", media="video", quality=5, options={"epochs": 4})
    blobs = [blob, other, blob]
    expected = [ncodec.decode(b).data for b in blobs]
    got = [None] * 3

    def work(i):
        got[i] = np.stack(list(ncodec.video.open(blobs[i])))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expected, got):
        assert g is not None and np.abs(e.astype(int) - g.astype(int)).max() <= 1


def test_pruning_zeros_weights_and_shrinks_the_file():
    clip = _clip(8)
    opts = {"epochs": 30, "time_budget": 600}
    plain = ncodec.encode(clip, codec="nerv", media="video", quality=40, options=opts)
    pruned = ncodec.encode(clip, codec="nerv", media="video", quality=40, options={**opts, "prune": 0.6})
    assert ncodec.info(pruned).meta["pruned"] == 0.6
    f = container.read(pruned)
    from ncodec.api import _codec
    from ncodec.codecs.nerv import _Decoder

    ints, _ = _Decoder(f.header, f.units).ints(0)
    mats = np.concatenate([q.reshape(-1) for q in ints if q.ndim > 1])
    assert np.mean(mats == 0) >= 0.55  # the pruned entries stay zero through fine-tuning and quantisation
    assert len(pruned) < 0.8 * len(plain)
    assert _psnr(clip, ncodec.decode(pruned).data) > _psnr(clip, np.full_like(clip, clip.mean())) + 5
    assert _codec("nerv").symbols_digest(f.header, f.units)
    with pytest.raises(BadInput, match="nerv"):
        ncodec.encode(clip, codec="nirvana", media="video", quality=40, options={**opts, "prune": 0.5})


def test_version_1_files_still_decode(nerv_blob):
    """Version 1 coded each tensor with a Gaussian picked by RMS; the same weights in that form decode the same."""
    from dataclasses import replace

    from ncodec.api import _codec
    from ncodec.codecs.nerv import _Decoder, pack_weights

    _, blob = nerv_blob
    f = container.read(blob)
    assert f.header.codec_version == 2
    dec = _Decoder(f.header, f.units)
    units = [container.Unit(u.key, pack_weights(*dec.ints(g), version=1)) for g, u in enumerate(f.units)]
    v1 = replace(f.header, codec_version=1)
    codec = _codec("nerv")
    assert np.array_equal(codec.decode(v1, units), codec.decode(f.header, f.units))
    assert sum(len(u.data) for u in units) >= sum(len(u.data) for u in f.units)  # v2 tables never cost more
    with pytest.raises(Exception, match="newer"):
        codec.decode(replace(f.header, codec_version=3), f.units)


def test_step_allocation_trades_bits_between_tensors():
    """The rate-distortion choice of per-tensor steps: x4 / x2 / x0.5 moves from the uniform rule, none when
    there is no time, and never worse than the uniform rule on both bytes and error."""
    import torch

    from ncodec.codecs import nerv

    clip = _clip(8)
    cfg = nerv._quality_config(40, 48, 64, False, 8, 1)
    fitter = nerv._Fitter(cfg, "cpu")
    fitter.fit(clip, 0, 30, 600, lr=5e-3)
    x, t = fitter.target(clip)
    uniform = fitter.steps_for()
    assert fitter.allocate_steps(x, t, 0.0) == uniform
    steps = fitter.allocate_steps(x, t, 600.0)
    ratios = {round(a / b, 6) for a, b in zip(steps, uniform)}
    assert ratios <= {0.5, 1.0, 2.0, 4.0} and ratios != {1.0}

    def measure(st):
        data = nerv.pack_weights(fitter.quantise(st), st)
        probe = nerv._Fitter(cfg, "cpu")
        probe.load_ints(fitter.quantise(st), st)
        with torch.no_grad():
            err = float(((probe.net(t) - x) ** 2).mean())
        return len(data), err

    (b_u, e_u), (b_a, e_a) = measure(uniform), measure(steps)
    assert b_a < b_u or e_a < e_u


def test_fitting_precision_follows_the_hardware_and_can_be_turned_off(monkeypatch):
    """bf16 fitting only where native (an encoder speed-up; decoding stays float32); NCODEC_FIT_BF16=0 forces
    float32, and both paths fit the clip."""
    from ncodec.codecs import nerv

    clip = _clip(6)
    cfg = nerv._quality_config(40, 48, 64, False, 6, 1)
    results = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("NCODEC_FIT_BF16", flag)
        fitter = nerv._Fitter(cfg, "cpu")
        if flag == "0":
            assert fitter.bf16 is False
        results[flag] = fitter.fit(clip, 0, 40, 600.0, lr=5e-3)
        assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in fitter.net.parameters())
    flat = 10 * np.log10(1 / np.mean((clip / 255.0 - (clip / 255.0).mean((0, 1, 2))) ** 2))
    assert min(results.values()) > flat + 3


def test_learned_rounding_puts_each_weight_on_a_neighbouring_integer_and_lowers_the_error():
    """_Fitter.learn_rounding: every weight ends on its step times the integer just below or just above its
    fitted value (so the file costs about what nearest-integer rounding costs), some go the other way than
    nearest rounding would send them, and the quantised network's error on the frames is lower."""
    import torch

    from ncodec.codecs import nerv

    clip = _clip(6)
    cfg = nerv._quality_config(40, 48, 64, False, 6, 1)
    fitter = nerv._Fitter(cfg, "cpu")
    fitter.fit(clip, 0, 30, 600.0, lr=5e-3)
    steps = fitter.steps_for(5)  # coarse, so rounding costs something to win back
    x, t = fitter.target(clip)
    saved = [p.detach().clone() for p in fitter.net.parameters()]

    def quantised_mse():
        with torch.no_grad():
            return float(((fitter.net(t) - x) ** 2).mean())

    nearest = [torch.round(w / s) for w, s in zip(saved, steps)]
    fitter.load_ints([q.numpy() for q in nearest], steps)
    plain = quantised_mse()
    with torch.no_grad():
        for p, w in zip(fitter.net.parameters(), saved):
            p.copy_(w)
    fitter.learn_rounding(clip, steps, 600.0, 300)
    ints = fitter.quantise(steps)
    flipped = 0
    for q, w, s, near in zip(ints, saved, steps, nearest):
        low = torch.floor(w / s).numpy()
        assert np.all((q == low) | (q == low + 1))
        flipped += int((q != near.numpy()).sum())
    assert flipped > 0
    fitter.load_ints(ints, steps)
    assert quantised_mse() < plain


def test_fast_pixel_shuffle_is_torchs_exactly_forward_and_backward():
    """The network's x2 shuffle (a view + permute, faster than torch's kernel here) gives the same numbers and
    gradients as torch.nn.functional.pixel_shuffle, so decoding and the files are unchanged by it."""
    import torch
    import torch.nn.functional as F

    from ncodec.codecs.nerv import _shuffle2

    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 20, 9, 11, dtype=dtype, requires_grad=True)
        g = torch.randn(3, 5, 18, 22, dtype=dtype)
        ours = _shuffle2(x)
        ref = F.pixel_shuffle(x, 2)
        assert torch.equal(ours, ref)
        (gx_ours,) = torch.autograd.grad(ours, x, g)
        (gx_ref,) = torch.autograd.grad(ref, x, g)
        assert torch.equal(gx_ours, gx_ref)
    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=torch.channels_last)  # not viewable: still right
    assert torch.equal(_shuffle2(x), F.pixel_shuffle(x, 2))


def test_steps_start_at_6_bits_at_every_quality_and_bpp_targets_follow(nerv_blob):
    """nerv's and nirvana's uniform step rule is 6 bits whatever the quality (a wider network buys quality; the
    rising 6 / 7 / 8-bit rule of before stays selectable). The file's parameters carry the bits, and --bpp targets
    follow them."""
    from ncodec.api import _codec
    from ncodec.codecs import nerv

    clip, blob = nerv_blob
    f = container.read(blob)
    assert nerv.NervConfig.unpack(f.header.params, 48, 64).bits == 6  # quality 40
    for name in ("nerv", "nirvana"):
        assert [nerv._quality_config(q, 48, 64, False, 12, 1, bits=_codec(name).bits).bits for q in (5, 40, 90)] \
            == [6, 6, 6]
    assert [nerv._quality_config(q, 48, 64, False, 12, 1).bits for q in (5, 40, 90)] == [6, 7, 8]
    # 0.15 bpp on 60 CIF frames: quality 77 with 6-bit weights (61 with the rising rule)
    assert _codec("nerv")._quality_for_bpp(0.15, 288, 352, 60, False, 60) == 77


def test_fit_learning_rates(monkeypatch):
    """Intra groups fit from the codec's ``fit_lr`` (a class attribute: scripts/nerv_variants.py --lr sets it),
    nirvana's warm-started inter groups from the lower INTER_LR (smaller residuals to code)."""
    from ncodec.codecs import nerv

    seen = []
    fit = nerv._Fitter.fit

    def recording(self, frames, first, epochs, budget_s, lr, **k):
        seen.append(lr)
        return fit(self, frames, first, 2, budget_s, lr, **k)

    monkeypatch.setattr(nerv._Fitter, "fit", recording)
    monkeypatch.setattr(nerv.NervCodec, "fit_lr", 7e-3)
    ncodec.encode(_clip(8, 32, 32), codec="nerv", media="video", quality=50, options={"epochs": 2})
    monkeypatch.setattr(nerv.NirvanaCodec, "default_group", 4)
    ncodec.encode(_clip(8, 32, 32), codec="nirvana", media="video", quality=50, options={"epochs": 2})
    assert seen == [7e-3, nerv.NirvanaCodec.fit_lr, nerv.INTER_LR] and nerv.INTER_LR < nerv.NirvanaCodec.fit_lr
