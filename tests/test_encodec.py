"""Official EnCodec 24 kHz checkpoints in the rvq codec: tested on a small random checkpoint with EnCodec's keys."""
import subprocess
import sys

import numpy as np
import pytest

import ncodec
from ncodec.errors import ModelMismatch

SMALL = dict(n_filters=4, dimension=16, lstm=2, n_q=4, codebook_size=64)


def _official_state(cfg_kw, seed=0):
    """A state dict laid out as EnCodec's (weight-normalised SConv1d / SConvTranspose1d nesting, EMA codebook
    buffers), built from our module tree with torch's own weight_norm."""
    import torch
    from torch import nn

    from ncodec.codecs.encodec_net import EncodecConfig, EncodecNet

    torch.manual_seed(seed)
    net = EncodecNet(EncodecConfig(**cfg_kw))
    state = {}
    for name, mod in net.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.ConvTranspose1d)):
            wn = nn.utils.weight_norm(type(mod)(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride,
                                                dilation=mod.dilation))
            with torch.no_grad():
                wn.weight_g.mul_(torch.rand_like(wn.weight_g) + 0.5)
            inner = "conv" if isinstance(mod, nn.Conv1d) else "convtr"
            for k, v in wn.state_dict().items():
                state[f"{name}.{inner}.{k}"] = v.clone()  # X.conv -> X.conv.conv.weight_g, as SConv1d nests it
        elif isinstance(mod, nn.LSTM):
            for k, v in mod.state_dict().items():
                state[f"{name}.{k}"] = v.clone()
    for k in range(cfg_kw.get("n_q", 32)):
        embed = torch.randn(cfg_kw.get("codebook_size", 1024), cfg_kw.get("dimension", 128)) * 0.3
        p = f"quantizer.vq.layers.{k}._codebook."
        state.update({p + "embed": embed, p + "embed_avg": embed.clone(), p + "inited": torch.ones(1),
                      p + "cluster_size": torch.ones(embed.shape[0])})
    return state


def test_full_size_layout_frames_and_lengths():
    import torch

    from ncodec.codecs.encodec_net import EncodecConfig, EncodecNet

    cfg = EncodecConfig()
    net = EncodecNet(cfg).eval()
    assert cfg.frame_rate == 75 and cfg.kbps(8) == 6.0 and cfg.kbps(32) == 24.0
    with torch.no_grad():
        z = net.encoder(torch.randn(1, 1, 24000))
        assert tuple(z.shape) == (1, 128, 75)
        assert tuple(net.decoder(z).shape) == (1, 1, 24000)
    official = _official_state({}, seed=1)
    assert "encoder.model.0.conv.conv.weight_g" in official and "decoder.model.3.convtr.convtr.weight_v" in official
    assert "encoder.model.1.shortcut.conv.conv.weight_v" in official and "encoder.model.13.lstm.weight_hh_l1" in official


def test_weight_norm_folds_exactly():
    import torch

    from ncodec.codecs.encodec_net import from_official

    official = _official_state(SMALL)
    cfg, ours = from_official(official)
    assert (cfg.n_filters, cfg.dimension, cfg.n_q, cfg.codebook_size, cfg.lstm) == (4, 16, 4, 64, 2)
    for key in ("encoder.model.3.conv", "decoder.model.3.convtr", "decoder.model.4.block.1.conv"):
        inner = key.rsplit(".", 1)[1]
        g, v = official[f"{key}.{inner}.weight_g"], official[f"{key}.{inner}.weight_v"]
        assert torch.allclose(ours[f"{key}.weight"], torch._weight_norm(v, g, 0), atol=1e-6)
    bad = dict(official)
    bad["encoder.model.0.norm.weight"] = torch.ones(4)
    with pytest.raises(ModelMismatch, match="48 kHz"):
        from_official(bad)
    del official["decoder.model.15.conv.conv.bias"]
    with pytest.raises(ModelMismatch, match="missing"):
        from_official(official)


def test_convert_then_encode_with_model_option(tmp_path, monkeypatch):
    import soundfile as sf
    import torch

    ckpt = tmp_path / "encodec_24khz-small.th"
    torch.save(_official_state(SMALL), ckpt)
    audio = tmp_path / "audio" / "speech"
    audio.mkdir(parents=True)
    t = np.arange(48000) / 24000
    sf.write(audio / "a.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 24000)
    models = tmp_path / "models"
    models.mkdir()
    cli = [sys.executable, "-m", "cli.main"]
    r = subprocess.run(cli + ["convert-encodec", str(ckpt), "-o", str(models), "--data", str(tmp_path / "audio")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cli + ["convert-encodec", str(ckpt), "-o", str(models)], capture_output=True, text=True)
    assert r.returncode == 6  # exists
    monkeypatch.setenv("NCODEC_MODELS", str(models))
    sig = (0.2 * np.sin(2 * np.pi * 440 * np.arange(22050 * 4) / 22050)).astype(np.float32)
    # 64 codes: 6 bits x 75 Hz = 0.45 kbps a codebook
    blob = ncodec.encode(sig, codec="rvq", bitrate=0.9, sample_rate=22050, options={"model": "encodec-24khz"})
    inf = ncodec.info(blob)
    assert inf.model == "encodec-24khz" and inf.meta["codebooks"] == [2] and inf.rate_value == pytest.approx(0.9)
    assert inf.kbps < 0.9  # entropy-coded below the nominal rate
    dec = ncodec.decode(blob)
    assert dec.data.shape == (len(sig), 1) and dec.sample_rate == 22050 and np.isfinite(dec.data).all()
    stereo = np.stack([sig, 0.5 * sig], 1)  # mid and side both through the EnCodec decoder
    dec = ncodec.decode(ncodec.encode(stereo, codec="rvq", bitrate=1.35, sample_rate=22050,
                                      options={"model": "encodec-24khz"}))
    assert dec.data.shape == stereo.shape and np.isfinite(dec.data).all()
    with pytest.raises(ModelMismatch):
        ncodec.encode(sig, codec="rvq", bitrate=1.5, sample_rate=22050, options={"model": "no-such-model"})
    with pytest.raises(ncodec.BadInput, match="model"):
        ncodec.encode(np.zeros((4, 16, 16, 3), np.uint8), codec="nerv", media="video",
                      options={"model": "encodec-24khz"})
    with pytest.raises(ModelMismatch, match="not a mcquic image model"):
        ncodec.encode(np.zeros((16, 16, 3), np.uint8), codec="mcquic", options={"model": "encodec-24khz"})
    with pytest.raises(ModelMismatch, match="not a walloc image model"):
        ncodec.encode(np.zeros((16, 16, 3), np.uint8), codec="walloc", options={"model": "encodec-24khz"})
    with pytest.raises(ModelMismatch, match="not a pc model"):
        ncodec.encode(np.zeros((16, 16, 3), np.uint8), codec="pc", options={"model": "encodec-24khz"})
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"\0" * 100)
    r = subprocess.run(cli + ["convert-encodec", str(junk), "-o", str(models), "--id", "x"], capture_output=True,
                       text=True)
    assert r.returncode == 3 and "tensors-only" in r.stderr and not (models / "x.safetensors").exists()
