"""LPIPS and FID for the image benchmark, from weights the user supplies (nothing is downloaded).

LPIPS (Zhang et al. 2018, "v0.1", AlexNet variant): the ReLU outputs 1-5 of torchvision's AlexNet features,
unit-normalised over channels, squared differences weighted by five learned 1x1 layers, averaged over space and
summed. Inputs are scaled to [-1, 1] and then shifted/scaled per channel as the reference implementation does.
One safetensors file holds both parts, in either layout:
  - torchvision ``features.{i}.weight/bias`` (from ``alexnet-owt-*.pth``) + ``lin{k}.model.1.weight`` (from the
    lpips package's ``weights/v0.1/alex.pth``), merged by ``ncodec convert-weights A.pth B.pth -o lpips.safetensors``;
  - the state dict of an ``lpips.LPIPS(net='alex')`` module (``net.slice{k}.{i}.*`` + ``lin{k}.model.1.weight``).

FID (Heusel et al. 2017) with the TensorFlow Inception ported by pytorch-fid (``pt_inception-2015-12-05-*.pth``,
converted with ``ncodec convert-weights``): torchvision's Inception-v3 layout with 1008 classes, its average
pools not counting padding and the last block max-pooling, as that port does; 2048-d pool features of inputs
resized to 299x299 and scaled to [-1, 1]. Kodak has 24 images, far fewer than FID's 2048 dimensions, so
features are taken per 256x256 patch (non-overlapping; HiFiC's protocol), 6 per Kodak image. FID over 144
patches is still biased upwards: compare codecs within one run, not with published numbers.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import BadInput, ModelMismatch

LPIPS_CHANNELS = (64, 192, 384, 256, 256)
LPIPS_TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs in torchvision's alexnet().features
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
FID_PATCH = 256
FID_BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")


def _load(path, what: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise ModelMismatch(f"{what} weights file {p} does not exist; see docs/benchmarks.md for where to get them")
    try:
        return {k: v.float() for k, v in load_file(str(p)).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelMismatch(f"{what} weights {p} are not a readable safetensors file ({e}); convert a torch "
                            f"checkpoint with `ncodec convert-weights IN.pth -o OUT.safetensors`") from None


class Lpips:
    """LPIPS distance between two uint8 RGB images (lower = more similar)."""

    def __init__(self, path):
        import torch
        from torchvision.models import alexnet

        tensors = _load(path, "LPIPS")
        feats = {}
        for k, v in tensors.items():
            m = re.fullmatch(r"(?:net\.slice\d\.|features\.)(\d+)\.(weight|bias)", k)
            if m and int(m[1]) <= LPIPS_TAPS[-1]:
                feats[f"{m[1]}.{m[2]}"] = v
        self.features = alexnet(weights=None).features[: LPIPS_TAPS[-1] + 1].eval()
        try:
            self.features.load_state_dict(feats)
        except RuntimeError as e:
            raise ModelMismatch(f"{path} does not hold AlexNet features in torchvision or lpips layout: "
                                f"{str(e).splitlines()[0]}") from None
        self.lins = []
        for k, c in enumerate(LPIPS_CHANNELS):
            w = tensors.get(f"lin{k}.model.1.weight")
            if w is None or tuple(w.shape) != (1, c, 1, 1):
                raise ModelMismatch(f"{path} lacks the LPIPS layer lin{k}.model.1.weight of shape (1, {c}, 1, 1); "
                                    f"merge the lpips package's weights/v0.1/alex.pth into it")
            self.lins.append(w)
        self.shift = torch.tensor(LPIPS_SHIFT)[None, :, None, None]
        self.scale = torch.tensor(LPIPS_SCALE)[None, :, None, None]

    def taps(self, img: np.ndarray) -> list:
        """Unit-normalised features of one image (compute a reference's once, compare it with many decodes)."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
            x = (x - self.shift) / self.scale
            out = []
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in LPIPS_TAPS:
                    out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def distance(self, ref_taps: list, img: np.ndarray) -> float:
        import torch

        with torch.no_grad():
            return sum(float(torch.nn.functional.conv2d((fa - fb).square(), w).mean())
                       for fa, fb, w in zip(ref_taps, self.taps(img), self.lins))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.distance(self.taps(a), b)


class FidInception:
    """2048-d Inception pool features of 256x256 patches, for FID."""

    def __init__(self, path):
        import torch.nn.functional as F
        from torchvision.models.inception import inception_v3

        net = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7b", "Mixed_7c"):
            blk = getattr(net, name)
            # the TF graph's pools: average without the padded zeros, and a max pool in the last block
            pool = (lambda x: F.max_pool2d(x, 3, 1, 1)) if name == "Mixed_7c" else \
                (lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
            blk.forward = _tf_pool_forward(blk, pool)
        state = _load(path, "FID Inception")
        own = net.state_dict()
        missing = [k for k in own if not k.startswith("fc.") and k not in state]
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or wrong:
            bad = (missing or wrong)[0]
            raise ModelMismatch(f"{path} is not pytorch-fid's Inception (pt_inception-2015-12-05): "
                                f"{len(missing)} tensors missing, {len(wrong)} of another shape (first: {bad})")
        net.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
        self.net = net.eval()

    def features(self, img: np.ndarray) -> np.ndarray:
        """(patches, 2048) float32: non-overlapping 256x256 patches (the whole image when smaller)."""
        import torch
        import torch.nn.functional as F

        h, w = img.shape[:2]
        ph, pw = min(FID_PATCH, h), min(FID_PATCH, w)
        patches = [img[y : y + ph, x : x + pw] for y in range(0, h - ph + 1, ph) for x in range(0, w - pw + 1, pw)]
        out = []
        with torch.no_grad():
            for p in patches:
                x = torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1)[None].float() / 255
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
                for name in FID_BLOCKS:
                    x = getattr(self.net, name)(x)
                out.append(x.reshape(-1).numpy())
        return np.stack(out).astype(np.float32)


def _tf_pool_forward(blk, pool):
    """Forward of a torchvision Inception A/C/E block with its pool branch recomputed on ``pool(x)``."""
    import torch

    def forward(x):
        outs = blk._forward(x)  # branches in order, the pool branch last
        outs[-1] = blk.branch_pool(pool(x))
        return torch.cat(outs, 1)

    return forward


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (n, d): |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^1/2).

    Tr((S1 S2)^1/2) is the sum of the singular values of A1 A2^T / sqrt((n1-1)(n2-1)) (A: centred features),
    because S1 S2 and (A1 A2^T)(A1 A2^T)^T share their non-zero eigenvalues: exact, and with few samples far
    cheaper and more stable than a d x d matrix square root. With more samples than dimensions the same trace
    comes from symmetric eigen-decompositions (S1^1/2 S2 S1^1/2 is positive semi-definite)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if len(f1) < 2 or len(f2) < 2:
        raise BadInput("FID needs at least two feature vectors per set")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    c1, c2 = len(f1) - 1, len(f2) - 1
    tr1, tr2 = (a1 * a1).sum() / c1, (a2 * a2).sum() / c2
    if min(len(f1), len(f2)) <= f1.shape[1]:
        cross = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt(c1 * c2)
    else:
        s1, s2 = a1.T @ a1 / c1, a2.T @ a2 / c2
        w, v = np.linalg.eigh(s1)
        r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2 * cross)


@lru_cache(maxsize=2)
def lpips_model(path: str) -> Lpips:
    return Lpips(path)


@lru_cache(maxsize=2)
def fid_model(path: str) -> FidInception:
    return FidInception(path)


def weights_tag(path: str | None) -> str | None:
    """SHA-256 prefix of a weights file (recorded with every result computed from it)."""
    if not path:
        return None
    from ..zoo import sha256_file

    return sha256_file(Path(path))[:16]


def convert_checkpoint(sources: list[str], log=print) -> tuple[bytes, int]:
    """Merge torch checkpoints (loaded with ``weights_only=True``: tensors only, no code runs) into the bytes of
    one safetensors file; nested ``state_dict`` / ``model`` entries are unwrapped. Returns (bytes, tensors)."""
    import torch
    from safetensors.torch import save

    from ..zoo import load_torch_state

    merged: dict = {}
    for src in sources:
        obj = load_torch_state(src)
        for k, v in obj.items():
            if not isinstance(v, torch.Tensor):
                continue
            if k in merged:
                raise BadInput(f"tensor {k!r} is in more than one input; convert them separately")
            merged[k] = v.contiguous()
        log(f"{src}: {sum(isinstance(v, torch.Tensor) for v in obj.values())} tensors")
    if not merged:
        raise BadInput("no tensors found in the inputs")
    return save(merged), len(merged)
