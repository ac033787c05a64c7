"""Training data: images held in memory as uint8 arrays, random crops and flips."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def corpus_root(explicit: str | None = None) -> Path:
    """The shared corpus: ``--data``, then $NCODEC_CORPUS, then ../shared/corpus beside the project."""
    for cand in (explicit, os.environ.get("NCODEC_CORPUS"),
                 Path(__file__).resolve().parents[2].parent / "shared" / "corpus"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    raise FileNotFoundError(
        "training corpus not found: pass --data DIR or set NCODEC_CORPUS (expected ../shared/corpus)")


def load_images(folder: Path, min_side: int) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_EXT:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"))
            if min(a.shape[:2]) >= min_side:
                out.append(a)
    if not out:
        raise FileNotFoundError(f"no images of at least {min_side} px found under {folder}")
    return out


class CropSampler:
    def __init__(self, images: list[np.ndarray], size: int, seed: int = 0):
        self.images, self.size = images, size
        self.rng = np.random.default_rng(seed)
        # sample big images more often (proportional to area)
        area = np.array([a.shape[0] * a.shape[1] for a in images], dtype=np.float64)
        self.p = area / area.sum()

    def batch(self, n: int) -> np.ndarray:
        s = self.size
        out = np.empty((n, s, s, 3), dtype=np.uint8)
        for k, i in enumerate(self.rng.choice(len(self.images), n, p=self.p)):
            a = self.images[i]
            y = self.rng.integers(0, a.shape[0] - s + 1)
            x = self.rng.integers(0, a.shape[1] - s + 1)
            c = a[y : y + s, x : x + s]
            if self.rng.random() < 0.5:
                c = c[:, ::-1]
            out[k] = c
        return out


AUDIO_EXT = {".flac", ".wav", ".ogg"}


def load_audio(folder: Path, min_len: int) -> list[np.ndarray]:
    """Every clip as mono float32 arrays (stereo files give mid and side as two clips)."""
    import soundfile as sf

    out = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in AUDIO_EXT:
            a, _ = sf.read(p, dtype="float32", always_2d=True)
            chans = [a[:, 0]] if a.shape[1] == 1 else [a[:, :2].mean(1), (a[:, 0] - a[:, 1]) / 2]
            out += [c for c in chans if len(c) >= min_len and np.abs(c).max() > 1e-3]
    if not out:
        raise FileNotFoundError(f"no audio clips of at least {min_len} samples under {folder}")
    return out


class AudioSampler:
    def __init__(self, clips: list[np.ndarray], size: int, seed: int = 0):
        self.clips, self.size = clips, size
        self.rng = np.random.default_rng(seed)
        n = np.array([len(c) for c in clips], dtype=np.float64)
        self.p = np.sqrt(n) / np.sqrt(n).sum()  # long clips more often, but not in proportion

    def batch(self, n: int) -> np.ndarray:
        out = np.empty((n, self.size), dtype=np.float32)
        for k, i in enumerate(self.rng.choice(len(self.clips), n, p=self.p)):
            c = self.clips[i]
            s = self.rng.integers(0, len(c) - self.size + 1)
            out[k] = c[s : s + self.size] * (-1 if self.rng.random() < 0.5 else 1)
        return out
