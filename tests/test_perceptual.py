"""LPIPS / FID loading code, tested on randomly initialised checkpoints with the official key layouts."""
import json
import subprocess
import sys

import numpy as np
import pytest

from ncodec.errors import BadInput, ModelMismatch


def _img(seed, h=200, w=180):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 1.3) % 256, (y * 0.7 + x * 0.2) % 256, (x + y) % 256], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """The same random weights in torchvision+lin layout and in lpips.LPIPS state-dict layout."""
    import torch
    from safetensors.torch import save_file
    from torchvision.models import alexnet

    d = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    net = alexnet(weights=None)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    tv = {k: v for k, v in net.state_dict().items()}  # features.* and classifier.*, as alexnet-owt-*.pth
    torch.save(tv, d / "alexnet.pth")
    torch.save(lins, d / "alex.pth")
    slices = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5}
    lp = {f"net.slice{slices[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v
          for k, v in net.state_dict().items() if k.startswith("features.")}
    lp.update(lins)
    lp["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    save_file(lp, str(d / "lpips-layout.safetensors"))
    return d


def test_convert_and_lpips_behaviour(lpips_files, tmp_path):
    from ncodec.bench.perceptual import Lpips

    out = tmp_path / "lpips.safetensors"
    cli = [sys.executable, "-m", "cli.main"]
    r = subprocess.run(cli + ["convert-weights", str(lpips_files / "alexnet.pth"), str(lpips_files / "alex.pth"),
                              "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(cli + ["convert-weights", str(lpips_files / "alexnet.pth"), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 6 and "exists" in r.stderr  # no overwrite without --force
    a = _img(0)
    rng = np.random.default_rng(5)
    small, big = (np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8) for s in (3, 30))
    b = _img(1)
    m1, m2 = Lpips(out), Lpips(lpips_files / "lpips-layout.safetensors")
    assert m1(a, a) == pytest.approx(0, abs=1e-7)
    assert m1(a, b) > 0 and m1(a, b) == pytest.approx(m1(b, a), rel=1e-5)
    assert m1(a, small) < m1(a, big)  # more distortion, further away
    assert m1(a, b) == pytest.approx(m2(a, b), rel=1e-6)  # the two layouts load the same network


def test_bad_weights_give_clear_errors(lpips_files, tmp_path):
    from ncodec.bench.perceptual import FidInception, Lpips, convert_checkpoint

    with pytest.raises(ModelMismatch, match="does not exist"):
        Lpips(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelMismatch, match="safetensors"):
        Lpips(junk)
    data, _ = convert_checkpoint([str(lpips_files / "alexnet.pth")], log=lambda m: None)
    only_net = tmp_path / "net.safetensors"
    only_net.write_bytes(data)
    with pytest.raises(ModelMismatch, match="lin0"):
        Lpips(only_net)
    with pytest.raises(ModelMismatch, match="pytorch-fid"):
        FidInception(only_net)
    with pytest.raises(BadInput, match="tensors-only"):
        convert_checkpoint([str(junk)], log=lambda m: None)


def test_frechet_distance_hand_computed():
    from ncodec.bench.perceptual import frechet_distance

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4000, 1))
    y = rng.normal(2, 3, (4000, 1))
    v1, v2 = np.var(x, ddof=1), np.var(y, ddof=1)
    expected = (x.mean() - y.mean()) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    z = rng.normal(0, 1, (500, 8))
    assert frechet_distance(z, z + 1) == pytest.approx(8, rel=1e-6)  # a shift only: |mu1 - mu2|^2


def test_bench_image_with_lpips_and_fid(lpips_files, tmp_path):
    """Random-weight Inception in pytorch-fid's layout; a 2-image bench run writes LPIPS and FID columns."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from torchvision.models.inception import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=1008)
    fid_w = tmp_path / "fid.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, str(fid_w))
    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(2):
        Image.fromarray(_img(i, 170, 300)).save(data / f"im{i}.png")
    lp = tmp_path / "lp.safetensors"
    from ncodec.bench.perceptual import convert_checkpoint

    lp.write_bytes(convert_checkpoint([str(lpips_files / "alexnet.pth"), str(lpips_files / "alex.pth")],
                                      log=lambda m: None)[0])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cli.main", "bench", "image", "--codecs", "jpeg", "--rates", "10,50,90",
           "--data", str(data), "--out", str(out), "--lpips-weights", str(lp), "--fid-weights", str(fid_w)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert all(row["lpips"] > 0 for row in rows)
    by_q = {row["rate"]: row["lpips"] for row in rows if row["item"] == "im0.png"}
    assert by_q[90] < by_q[10]  # better JPEG quality, closer
    curve = res["summary"]["codecs"]["jpeg"]["fid_curve"]
    assert [p["patches"] for p in curve] == [2, 2, 2] and curve[-1]["fid"] < curve[0]["fid"]
    assert "LPIPS@0.5" in (out / "results.md").read_text()
    # cached: a second run computes nothing again, and without weights the rows stay usable
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "[1/" not in r.stderr
    r = subprocess.run(cmd[:-4], capture_output=True, text=True)
    assert r.returncode == 0 and "[1/" not in r.stderr
    r = subprocess.run(cmd[:-2] + ["--fid-weights", str(tmp_path / "nope.safetensors")], capture_output=True,
                       text=True)
    assert r.returncode == 4 and "does not exist" in r.stderr and "Traceback" not in r.stderr
