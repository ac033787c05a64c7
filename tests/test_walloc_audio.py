"""WaLLoC audio through the real container, with the shipped audio model."""
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import ncodec
from ncodec import container


def tone(rate, seconds, channels, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    sig = 0.3 * np.sin(2 * np.pi * (220 + 300 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    sig = sig + 0.01 * rng.standard_normal(len(t))
    if channels == 2:
        return np.stack([sig, 0.7 * np.roll(sig, 37)], 1).astype(np.float32)
    return sig[:, None].astype(np.float32)


def snr(a, b):
    return 10 * np.log10((a**2).sum() / max(((a - b) ** 2).sum(), 1e-20))


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (22050, 1)])
def test_round_trip_shape_rate_and_order(rate, channels):
    sig = tone(rate, 1.3, channels)
    blobs = [ncodec.encode(sig, sample_rate=rate, quality=q) for q in (20, 90)]
    assert len(blobs[0]) < len(blobs[1])
    decs = [ncodec.decode(b) for b in blobs]
    for d in decs:
        assert d.data.shape == sig.shape and d.sample_rate == rate
    assert snr(sig, decs[1].data) > snr(sig, decs[0].data)
    assert snr(sig, decs[1].data) > 15


def test_segments_are_units_and_decode_alone(monkeypatch):
    from ncodec.codecs import walloc

    monkeypatch.setattr(walloc, "SEGMENT", 4096)
    sig = tone(16000, 1.0, 1)
    blob = ncodec.encode(sig, sample_rate=16000, quality=70)
    f = container.read(blob)
    assert len(f.units) == 4 and f.units[-1].key[:2] == (12288, 16000 - 12288)
    ov = walloc.AUDIO_OVERLAP
    assert [u.key[2:] for u in f.units] == [(0, ov), (ov, ov), (ov, ov), (ov, 0)]  # cores tile, overlaps shared
    codec = walloc.WallocCodec()
    alone = np.concatenate([b for _, b in codec.decode_segments(f.header, [f.units[2]])])
    whole = ncodec.decode(blob).data
    # decoded alone, a unit matches the whole decode outside the cross-fades it shares with its neighbours
    assert np.array_equal(alone[2 * ov : -2 * ov], whole[8192 + ov : 12288 - ov])
    # with the neighbours the units_for_range names, a range across a boundary is exact
    need = codec.units_for_range(f.header, f.units, 8192 - 10, 8192 + 10)
    assert [u.key[0] for u in need] == [4096, 8192]
    got = {a: b for a, b in codec.decode_segments(f.header, need)}
    joined = np.concatenate([got[k] for k in sorted(got)])
    first = min(got)
    assert np.array_equal(joined[8192 - 10 - first : 8192 + 10 - first], whole[8192 - 10 : 8192 + 10])


def test_segment_boundaries_are_smooth(monkeypatch):
    """Version 2 cross-fades overlapping units: no step at a boundary, even at the lowest quality."""
    from ncodec.codecs import walloc

    monkeypatch.setattr(walloc, "SEGMENT", 4096)
    t = np.arange(16000) / 16000
    sig = (0.4 * np.sin(2 * np.pi * 150 * t))[:, None].astype(np.float32)
    dec = ncodec.decode(ncodec.encode(sig, sample_rate=16000, quality=0)).data[:, 0]
    jump = np.abs(np.diff(dec))
    typical = np.median(jump[1000:3000])
    for b in (4096, 8192, 12288):
        assert jump[b - 3 : b + 3].max() < 3 * typical + 1e-3, b


def test_bitrate_target_from_file_bytes():
    sig = tone(16000, 2.0, 1)
    blob = ncodec.encode(sig, sample_rate=16000, bitrate=24)
    kbps = 8 * len(blob) / 2.0 / 1000
    assert kbps <= 24 and ncodec.info(blob).kbps == pytest.approx(kbps)


def test_decode_identical_under_1_and_2_threads():
    import torch

    sig = tone(16000, 0.5, 2)
    blob = ncodec.encode(sig, sample_rate=16000, quality=50)
    old = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            f = container.read(blob)
            outs.append((ncodec.api._codec("walloc").symbols_digest(f.header, f.units), ncodec.decode(blob).data))
    finally:
        torch.set_num_threads(old)
    assert outs[0][0] == outs[1][0]  # entropy-decoded integers: exact
    assert np.abs(outs[0][1] - outs[1][1]).max() < 1 / 32768  # float synthesis: below one 16-bit step


def test_cli_wav_to_nc_to_flac(tmp_path):
    from ncodec_cli.main import main

    wav = tmp_path / "in.wav"
    sf.write(wav, tone(16000, 1.0, 2), 16000, subtype="PCM_16")
    r = CliRunner().invoke(main, ["encode", str(wav), "-o", str(tmp_path / "a.nc"), "--bitrate", "32"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["decode", str(tmp_path / "a.nc"), "-o", str(tmp_path / "out.flac")])
    assert r.exit_code == 0, r.output
    info = sf.info(tmp_path / "out.flac")
    assert info.samplerate == 16000 and info.channels == 2 and info.frames == 16000
    r = CliRunner().invoke(main, ["decode", str(tmp_path / "a.nc"), "-o", str(tmp_path / "out.png")])
    assert r.exit_code == 3 and "audio" in r.output
