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


def test_bench_end_to_end_two_images_and_resume(tmp_path, photo, monkeypatch):
    from PIL import Image

    from ncodec.bench import image as image_bench

    monkeypatch.setattr(image_bench, "_WARMED", set())  # as in a fresh process

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
    # each codec's set-up ran once, untimed, before its first timed image: one row per codec records it
    assert set(res["summary"]["setup_s"]) == {"walloc", "jpeg"} and min(res["summary"]["setup_s"].values()) > 0
    assert sorted(x["codec"] for x in res["rows"] if "setup_s" in x) == ["jpeg", "walloc"]
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
    assert json.loads((out / "results.json").read_text())["summary"]["setup_s"] == {}
    # rows measured with other weights are measured again
    cache = out / "cache.jsonl"
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    cache.write_text("".join(json.dumps(dict(x, model="stale") if x["codec"] == "walloc" else x) + "\n"
                             for x in lines))
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "[6/6]" in r.output


def test_bench_empty_folder_clear_error(tmp_path):
    r = CliRunner().invoke(main, ["bench", "image", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 3 and "no images" in r.output


def test_bench_lossless_and_audio_small(tmp_path, photo):
    import soundfile as sf
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(photo).save(imgs / "a.png")
    r = CliRunner().invoke(main, ["bench", "lossless", "--data", str(imgs), "--out", str(tmp_path / "ll")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "ll" / "results.json").read_text())["summary"]
    res = summary["codecs"]
    assert all(e["all_exact"] for e in res.values()) and res["png"]["bpp"] > 0
    assert "pc" in res and summary["settings"]["pc"].startswith("ncodec, model pc-image-")  # the model is named

    speech = tmp_path / "aud" / "speech"
    speech.mkdir(parents=True)
    t = np.arange(16000) / 16000
    sf.write(speech / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    r = CliRunner().invoke(main, ["bench", "audio", "--codecs", "walloc,opus", "--rates", "12,80",
                                  "--data", str(tmp_path / "aud"), "--out", str(tmp_path / "ab")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ab" / "results.json").read_text())
    rows = res["rows"]
    assert {r["codec"] for r in rows} == {"walloc", "opus"} and all(r["snr"] is not None for r in rows)
    # each codec's set-up ran once, untimed, before its first timed file; speed is in the table
    assert set(res["summary"]["setup_s"]) == {"walloc", "opus"} and min(res["summary"]["setup_s"].values()) > 0
    assert res["summary"]["codecs"]["walloc"]["speech"]["encode_plus_decode_x_realtime"] > 0
    assert "| walloc | " in (tmp_path / "ab" / "results.md").read_text().split("music x real time |")[1]
    r = CliRunner().invoke(main, ["bench", "audio", "--codecs", "walloc,opus", "--rates", "12,80",
                                  "--data", str(tmp_path / "aud"), "--out", str(tmp_path / "ab")])
    assert r.exit_code == 0, r.output  # every row from the cache: nothing to warm up
    assert json.loads((tmp_path / "ab" / "results.json").read_text())["summary"]["setup_s"] == {}


def test_bench_video_small(tmp_path):
    import av

    vids = tmp_path / "vids"
    vids.mkdir()
    with av.open(str(vids / "clip.mp4"), "w") as out:
        st = out.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for i in range(8):
            y, x = np.mgrid[0:48, 0:64]
            fr = np.stack([(x * 4 + i * 8) % 256, (y * 5) % 256, ((x + y) * 2) % 256], -1).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(fr, format="rgb24")
            vf.pts = i
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    r = CliRunner().invoke(main, ["bench", "video", "--codecs", "x264,x265", "--rates", "20,35",
                                  "--data", str(vids), "--out", str(tmp_path / "vo")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "vo" / "results.json").read_text())
    assert len(res["rows"]) == 4 and all(row["decoded_frames"] == 8 for row in res["rows"])
    lo, hi = sorted((row for row in res["rows"] if row["codec"] == "x264"), key=lambda row: row["rate"])
    assert lo["bpp"] > hi["bpp"] and lo["psnr"] > hi["psnr"]


def test_bench_jobs_gives_the_same_rows(tmp_path, photo, monkeypatch):
    from PIL import Image

    from ncodec.bench import image as image_bench

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(photo, 11 * i, axis=0)).save(data / f"im{i}.png")
    res = []
    for jobs in ("1", "2"):
        monkeypatch.setattr(image_bench, "_WARMED", set())  # as in a fresh process (workers fork from it)
        out = tmp_path / f"out{jobs}"
        r = CliRunner().invoke(main, ["bench", "image", "--codecs", "jpeg,webp", "--anchor", "jpeg", "--rates",
                                      "30,70", "--data", str(data), "--out", str(out), "--jobs", jobs])
        assert r.exit_code == 0, r.output
        result = json.loads((out / "results.json").read_text())
        rows = result["rows"]
        res.append(sorted((x["codec"], x["item"], x["rate"], x["bytes"], x["psnr"]) for x in rows))
        # every worker warms up each codec it runs, once
        assert set(result["summary"]["setup_s"]) == {"jpeg", "webp"}
        assert 2 <= sum("setup_s" in x for x in rows) <= 2 * int(jobs)
    assert res[0] == res[1] and len(res[0]) == 12


def test_cached_rows_are_tagged_with_encoder_settings(monkeypatch):
    """A learned codec's cached rows name its model, codec version and encoder settings (mcquic's beam), so rows
    written with another encoder search are redone, and the results say which search ran."""
    from ncodec.bench.run import _model_tags, _settings
    from ncodec.codecs import mcquic

    tag = _model_tags(["mcquic", "walloc"], "image")
    assert tag["mcquic"].endswith(f"-v{mcquic.McquicCodec.version}-beam{mcquic.BEAM},adaptedlengths")
    assert tag["walloc"].split("-")[-1].startswith("v")
    monkeypatch.setattr(mcquic, "BEAM", 1)
    assert _model_tags(["mcquic"], "image")["mcquic"].endswith("-beam1,adaptedlengths") and tag["mcquic"] != \
        _model_tags(["mcquic"], "image")["mcquic"]
    assert _settings("mcquic", {}) == "ncodec, encoder beam 1, adapted lengths, bpp from the .nc file"
    monkeypatch.setattr(mcquic, "ADAPTED_LENGTHS", False)
    assert _model_tags(["mcquic"], "image")["mcquic"].endswith("-beam1")
    assert _settings("walloc", {}) == "ncodec, bpp from the .nc file"
