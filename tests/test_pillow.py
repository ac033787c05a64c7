"""Pillow plugin: Image.open / save of .nc files, frames of multi-item files, clear refusal of audio."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import ncodec
from ncodec.conformance import digit_set


def test_open_reads_header_only_and_loads_lazily(tmp_path, photo):
    path = tmp_path / "p.nc"
    path.write_bytes(ncodec.encode(photo, quality=60))
    code = (
        "import sys, ncodec\n"
        "from PIL import Image\n"
        f"im = Image.open({str(path)!r})\n"
        "assert (im.format, im.size, im.mode, im.n_frames) == ('NC', "
        f"({photo.shape[1]}, {photo.shape[0]}), 'RGB', 1), (im.format, im.size, im.mode)\n"
        "assert 'torch' not in sys.modules, 'opening must not load a model'\n"
        "im.load()\n"
        "assert 'torch' in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), ncodec.decode(path).data)


def test_save_with_options(tmp_path, photo):
    lo, hi = tmp_path / "lo.nc", tmp_path / "hi.nc"
    Image.fromarray(photo).save(lo, quality=10)
    Image.fromarray(photo).save(hi, quality=90)
    assert ncodec.info(lo).codec == "walloc" and ncodec.info(lo).rate_value == 10
    assert lo.stat().st_size < hi.stat().st_size
    target = tmp_path / "b.nc"
    Image.fromarray(photo).save(target, bpp=2.0)
    assert ncodec.info(target).bpp <= 2.0


def test_multi_item_files_are_frames(tmp_path):
    digits = digit_set()
    frames = [Image.fromarray(d) for d in digits]
    path = tmp_path / "set.nc"
    frames[0].save(path, save_all=True, append_images=frames[1:], codec="pc")
    with Image.open(path) as im:
        assert im.n_frames == len(digits) and im.is_animated and im.mode == "L" and im.size == (28, 28)
        for i in (2, 0, 1):
            im.seek(i)
            assert np.array_equal(np.asarray(im), digits[i])
        with pytest.raises(EOFError):
            im.seek(len(digits))


def test_audio_file_gives_pillows_error_with_the_reason(tmp_path):
    path = tmp_path / "a.nc"
    path.write_bytes(ncodec.encode(np.zeros((4000, 1), np.float32), sample_rate=16000))
    with pytest.raises(UnidentifiedImageError, match="ncodec audio file"):
        Image.open(path)


def test_damaged_header_is_not_identified(tmp_path, photo):
    blob = bytearray(ncodec.encode(photo, quality=30))
    blob[20] ^= 0xFF  # inside HEAD: CRC fails
    path = tmp_path / "bad.nc"
    path.write_bytes(bytes(blob))
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)
