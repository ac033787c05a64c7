import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from ncodec.bench.metrics import bd_rate, quality_at_rate
from ncodec_cli.main import main


def test_bd_rate_hand_computed():
    r = [0.25, 0.5, 1.0, 2.0]
    q = [28.0, 31.0, 34.0, 37.0]
    assert bd_rate(r, q, r, q) == pytest.approx(0.0, abs=1e-9)
    # B needs exactly half the rate everywhere: -50 %
    assert bd_rate(r, q, [x / 2 for x in r], q) == pytest.approx(-50.0, abs=1e-6)
    # B needs 10 % more rate: +10 %
    assert bd_rate(r, q, [x * 1.1 for x in r], q) == pytest.approx(10.0, abs=1e-6)
    # no overlap in quality: undefined
    assert bd_rate(r, q, r, [40, 41, 42, 43]) is None


def test_bd_rate_linear_in_log_rate_matches_closed_form():
    # quality = 10*log(rate) + c; B shifted up by 1 dB => rate factor exp(-0.1)
    r = np.array([0.2, 0.4, 0.8, 1.6])
    qa = 10 * np.log(r) + 30
    qb = qa + 1.0
    assert bd_rate(r, qa, r, qb) == pytest.approx((math.exp(-0.1) - 1) * 100, abs=1e-6)


def test_quality_at_rate_interpolates_in_log_rate():
    assert quality_at_rate([0.25, 1.0], [30, 34], 0.5) == pytest.approx(32.0)
    assert quality_at_rate([0.25, 1.0], [30, 34], 2.0) is None


def test_bench_end_to_end_two_images_and_resume(tmp_path, photo):
    from PIL import Image

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(photo, 17 * i, axis=1)).save(data / f"im{i}.png")
    out = tmp_path / "out"
    args = ["bench", "image", "--codecs", "walloc,jpeg", "--anchor", "jpeg", "--data", str(data), "--out", str(out),
            "--rates", "20,50,80"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert len(res["rows"]) == 2 * 2 * 3
    assert res["summary"]["codecs"]["walloc"]["bd_rate_psnr"] is not None
    for f in ("results.csv", "results.md", "rd.png", "rd.svg"):
        assert (out / f).exists()
    # bpp comes from the real file: a walloc row equals the size of ncodec.encode's output
    import ncodec

    row = next(x for x in res["rows"] if x["codec"] == "walloc" and x["item"] == "im0.png" and x["rate"] == 50)
    img = np.asarray(Image.open(data / "im0.png"))
    assert row["bytes"] == len(ncodec.encode(img, quality=50))
    # resume: everything cached, nothing re-run
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "[1/" not in r.output


def test_bench_empty_folder_clear_error(tmp_path):
    r = CliRunner().invoke(main, ["bench", "image", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 3 and "no images" in r.output
