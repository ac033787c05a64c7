"""The `ncodec` command line, through click's runner and through real subprocesses."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ncodec_cli.main import main


@pytest.fixture()
def runner():
    return CliRunner()


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_encode_decode_info_list(runner, photo_png, tmp_path):
    before = sha(photo_png)
    nc, out = tmp_path / "a.nc", tmp_path / "back.png"
    r = runner.invoke(main, ["encode", str(photo_png), "-o", str(nc), "--quality", "60"])
    assert r.exit_code == 0, r.output
    assert sha(photo_png) == before  # input untouched
    r = runner.invoke(main, ["decode", str(nc), "-o", str(out)])
    assert r.exit_code == 0, r.output
    from PIL import Image

    assert Image.open(out).size == Image.open(photo_png).size
    r = runner.invoke(main, ["info", str(nc), "--json"])
    info = json.loads(r.output)
    assert info["codec"] == "walloc" and info["file_bytes"] == nc.stat().st_size and info["name"] == "photo.png"
    assert info["rate_value"] == 60
    r = runner.invoke(main, ["list", "--json"])
    assert any(m["id"] == "walloc-image-v1" for m in json.loads(r.output)["models"])


def test_existing_output_kept_unless_force(runner, photo_png, tmp_path):
    nc = tmp_path / "a.nc"
    nc.write_bytes(b"keep me")
    r = runner.invoke(main, ["encode", str(photo_png), "-o", str(nc)])
    assert r.exit_code == 6 and "exists" in r.output and nc.read_bytes() == b"keep me"
    r = runner.invoke(main, ["encode", str(photo_png), "-o", str(nc), "--force"])
    assert r.exit_code == 0 and nc.read_bytes().startswith(b"\x8bNCD")


@pytest.mark.parametrize("content,code", [(b"", 3), (b"\x8bNCD\r\n\x1a\n" + b"\0" * 40, 3), (b"hello", 3)])
def test_bad_nc_files_one_line_no_output(runner, tmp_path, content, code):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(content)
    out = tmp_path / "o.png"
    r = runner.invoke(main, ["decode", str(bad), "-o", str(out)])
    assert r.exit_code == code
    assert r.output.count("\n") == 1 and r.output.startswith("ncodec: error:")
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_usage_errors(runner, photo_png, tmp_path):
    r = runner.invoke(main, ["encode", str(photo_png), "-o", str(tmp_path / "x.nc"), "--quality", "5", "--bpp", "1"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["encode", str(photo_png), "-o", str(tmp_path / "x.nc"), "--codec", "nope"])
    assert r.exit_code == 2 and "unknown codec" in r.output
    r = runner.invoke(main, ["encode", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.nc")])
    assert r.exit_code == 3 and "does not exist" in r.output
    txt = tmp_path / "notes.txt"
    txt.write_text("not media")
    r = runner.invoke(main, ["encode", str(txt), "-o", str(tmp_path / "x.nc")])
    assert r.exit_code == 3 and r.output.count("\n") == 1
    assert not (tmp_path / "x.nc").exists()


def test_corrupt_file_lenient_decode(runner, photo_png, tmp_path):
    nc = tmp_path / "a.nc"
    assert runner.invoke(main, ["encode", str(photo_png), "-o", str(nc)]).exit_code == 0
    data = bytearray(nc.read_bytes())
    data[-30] ^= 0x10  # inside the last UNIT
    nc.write_bytes(bytes(data))
    r = runner.invoke(main, ["decode", str(nc), "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 3 and "CRC" in r.output
    r = runner.invoke(main, ["decode", str(nc), "-o", str(tmp_path / "o.png"), "--lenient"])
    assert r.exit_code == 0


def _ncodec(*args, **kw):
    exe = [sys.executable, "-m", "ncodec_cli.main"]
    return subprocess.run(exe + list(args), capture_output=True, **kw)


def test_subprocess_pipes_and_exit_codes(photo_png, tmp_path):
    r = _ncodec("encode", "-", "-o", "-", input=photo_png.read_bytes())
    assert r.returncode == 0 and r.stdout.startswith(b"\x8bNCD")
    d = _ncodec("decode", "-", "-o", "-", input=r.stdout)
    assert d.returncode == 0 and d.stdout.startswith(b"\x89PNG")
    bad = _ncodec("decode", str(tmp_path / "missing.nc"), "-o", str(tmp_path / "o.png"))
    assert bad.returncode == 3 and b"Traceback" not in bad.stderr and bad.stderr.count(b"\n") == 1


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, ncodec_cli.main as m; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    r = _ncodec("--help")
    assert r.returncode == 0 and b"encode" in r.stdout


def test_lossy_conversions_are_noted(runner, tmp_path):
    """A 16-bit grey PNG is rounded to 8 bits (Pillow's own conversion clips it at 255: a white image) and
    transparency is dropped, each with a one-line note; an 8-bit grey image converts with no note."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "g8.png")
    r = runner.invoke(main, ["encode", str(tmp_path / "g16.png"), "-o", str(tmp_path / "g16.nc"), "--quality", "100"])
    assert r.exit_code == 0 and "note:" in r.output and "rounded to 8 bits" in r.output, r.output
    runner.invoke(main, ["decode", str(tmp_path / "g16.nc"), "-o", str(tmp_path / "g16.back.png")])
    back = np.asarray(Image.open(tmp_path / "g16.back.png").convert("L"), dtype=np.float64)
    assert abs(back.mean() - ramp.mean() / 257) < 8  # a ramp, not the clipped white
    r = runner.invoke(main, ["encode", str(tmp_path / "rgba.png"), "-o", str(tmp_path / "rgba.nc")])
    assert r.exit_code == 0 and "transparency dropped" in r.output, r.output
    r = runner.invoke(main, ["encode", str(tmp_path / "g8.png"), "-o", str(tmp_path / "g8.nc")])
    assert r.exit_code == 0 and "note:" not in r.output, r.output
    frames = tmp_path / "frames16"  # video from a folder of 16-bit frames: one note, not one per frame
    frames.mkdir()
    for i in range(3):
        Image.fromarray(ramp[:32, :48]).save(frames / f"{i:03d}.png")
    r = runner.invoke(main, ["encode", str(frames), "-o", str(tmp_path / "v.nc"), "--codec", "nerv", "--epochs", "1"])
    assert r.exit_code == 0 and r.output.count("rounded to 8 bits") == 1, r.output


def test_audio_beyond_full_scale_is_noted_once(runner, tmp_path):
    """A float WAV may hold samples beyond [-1, 1]: they are coded, and the note says a decoded audio file clips
    them (once, though every segment of a long file is read separately); audio inside full scale gets no note."""
    import numpy as np
    import soundfile as sf

    t = np.arange(16000 * 12) / 16000
    loud = (1.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    sf.write(tmp_path / "fine.wav", loud / 2, 16000, subtype="FLOAT")
    r = runner.invoke(main, ["encode", str(tmp_path / "loud.wav"), "-o", str(tmp_path / "loud.nc")])
    assert r.exit_code == 0 and r.output.count("beyond full scale") == 1, r.output
    r = runner.invoke(main, ["encode", str(tmp_path / "fine.wav"), "-o", str(tmp_path / "fine.nc")])
    assert r.exit_code == 0 and "note:" not in r.output, r.output
