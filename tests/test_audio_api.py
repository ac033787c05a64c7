"""ncodec.audio: soundfile-style read/write, range reads that decode only the segments they need, streaming."""
import numpy as np
import pytest
import soundfile as sf

import ncodec
import ncodec.audio
from ncodec.codecs.walloc import SEGMENT


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    rate = 16000
    t = np.arange(3 * SEGMENT + 5000) / rate
    sig = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1).astype(np.float32)
    path = tmp_path_factory.mktemp("audio") / "tone.nc"
    info = ncodec.audio.write(path, sig, rate, quality=70)
    assert info.media == "audio" and info.units == 4 and info.sample_rate == rate
    return path, sig


def test_read_whole_and_range(long_file):
    path, sig = long_file
    full, rate = ncodec.audio.read(path)
    assert rate == 16000 and full.shape == sig.shape and full.dtype == np.float32
    assert np.array_equal(full, ncodec.decode(path).data)
    a, b = SEGMENT - 800, SEGMENT + 1200  # straddles a segment boundary
    part, _ = ncodec.audio.read(path, start=a, stop=b)
    assert np.array_equal(part, full[a:b])
    tail, _ = ncodec.audio.read(path, start=-100)
    assert np.array_equal(tail, full[-100:])
    empty, _ = ncodec.audio.read(path, start=10, stop=10)
    assert empty.shape == (0, 2)


def test_range_read_decodes_only_overlapping_segments(long_file, monkeypatch):
    path, _ = long_file
    from ncodec.api import _codec

    codec = _codec("walloc")
    seen = []
    original = codec.decode_segments

    def counting(header, units):
        seen.extend(u.key[0] for u in units)
        return original(header, units)

    monkeypatch.setattr(codec, "decode_segments", counting)
    from ncodec.codecs.walloc import AUDIO_OVERLAP

    ncodec.audio.read(path, start=2 * SEGMENT + AUDIO_OVERLAP + 10, stop=2 * SEGMENT + 16010)
    assert seen == [2 * SEGMENT]  # past the cross-fade with the previous segment: one unit
    seen.clear()
    ncodec.audio.read(path, start=2 * SEGMENT + 10, stop=2 * SEGMENT + 16010)
    assert seen == [SEGMENT, 2 * SEGMENT]  # inside it: its neighbour too
    seen.clear()
    ncodec.audio.read(path, start=SEGMENT - 8000, stop=SEGMENT + 8000)
    assert seen == [0, SEGMENT]


def test_blocks_stream_the_file(long_file):
    path, sig = long_file
    full, _ = ncodec.audio.read(path)
    starts, parts = zip(*ncodec.audio.blocks(path))
    from ncodec.codecs.walloc import AUDIO_OVERLAP

    # each block ends where the cross-fade with the next segment begins
    assert list(starts) == [0] + [k * SEGMENT - AUDIO_OVERLAP for k in (1, 2, 3)]
    assert np.array_equal(np.concatenate(parts), full)


def test_read_refuses_images(tmp_path, photo):
    p = tmp_path / "i.nc"
    p.write_bytes(ncodec.encode(photo, quality=20))
    with pytest.raises(ncodec.BadInput, match="holds image"):
        ncodec.audio.read(p)


def test_write_mono_1d_and_bitrate(tmp_path):
    t = np.arange(16000) / 16000
    info = ncodec.audio.write(tmp_path / "m.nc", 0.3 * np.sin(2 * np.pi * 440 * t), 16000, bitrate=24)
    assert info.shape == (16000, 1) and info.kbps <= 24


def test_cli_decodes_a_time_range(long_file, tmp_path):
    import soundfile as sf
    from click.testing import CliRunner

    from ncodec_cli.main import main

    path, _ = long_file
    out = tmp_path / "part.wav"
    res = CliRunner().invoke(main, ["decode", str(path), "-o", str(out), "--start", "4.5", "--end", "5.5"])
    assert res.exit_code == 0, res.output
    got, rate = sf.read(out, dtype="float32")
    ref, _ = ncodec.audio.read(path, 72000, 88000)
    assert rate == 16000 and got.shape == ref.shape and np.abs(got - ref).max() < 1.5 / 32768
    res = CliRunner().invoke(main, ["decode", str(path), "-o", str(tmp_path / "x.wav"), "--start", "3", "--end", "2"])
    assert res.exit_code == 3 and not (tmp_path / "x.wav").exists()
    # a start at or past the end is an error, not an empty file
    res = CliRunner().invoke(main, ["decode", str(path), "-o", str(tmp_path / "x.wav"), "--start", "999"])
    assert res.exit_code == 3 and "past the end" in res.output and not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("codec", ["rvq", "walloc"])
def test_non_finite_samples_are_bad_input(tmp_path, codec):
    """NaN or infinite samples (arrays, or a float WAV holding them) are a clear error, not silence or a crash;
    nothing is written."""
    import subprocess
    import sys

    x = np.zeros(16000, np.float32)
    x[9000] = np.nan
    with pytest.raises(ncodec.BadInput, match="NaN or infinite"):
        ncodec.encode(x, codec=codec, sample_rate=16000)
    with pytest.raises(ncodec.BadInput, match="NaN or infinite"):
        ncodec.encode(np.full((800, 2), np.inf, np.float32), codec=codec, sample_rate=16000)
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    r = subprocess.run([sys.executable, "-m", "cli.main", "encode", str(tmp_path / "nan.wav"), "-o",
                        str(tmp_path / "nan.nc"), "--codec", codec], capture_output=True, text=True)
    assert r.returncode == 3 and "NaN or infinite" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "nan.nc").exists()


@pytest.mark.parametrize("codec", ["mcquic", "walloc", "vqgan", "pc"])
def test_empty_image_arrays_are_bad_input(codec):
    for shape in ((0, 5, 3), (5, 0, 3)):
        with pytest.raises(ncodec.BadInput):
            ncodec.encode(np.zeros(shape, np.uint8), codec=codec)
