import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("NCODEC_CORPUS", ROOT.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo available offline (skimage.data if installed, else a Kodak crop, else synthetic)."""
    try:
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[100:196, 150:278])
    except ImportError:
        pass
    kodak = CORPUS / "eval" / "images" / "kodak" / "kodim23.png"
    if kodak.exists():
        from PIL import Image

        return np.asarray(Image.open(kodak))[200:296, 300:428].copy()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], -1) + rng.normal(0, 8, (96, 128, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture()
def photo_png(tmp_path, photo) -> Path:
    from PIL import Image

    p = tmp_path / "photo.png"
    Image.fromarray(photo).save(p)
    return p


@pytest.fixture()
def decode_with_threads():
    """``run(codec_id, blob)``: decode under torch 1 and 2 threads -> [(entropy-decoded digest, decoded array)]."""

    def run(codec_id: str, blob: bytes):
        import torch

        import ncodec
        from ncodec import container
        from ncodec.api import _codec

        f = container.read(blob)
        old = torch.get_num_threads()
        out = []
        try:
            for n in (1, 2):
                torch.set_num_threads(n)
                out.append((_codec(codec_id).symbols_digest(f.header, f.units), ncodec.decode(blob).data))
        finally:
            torch.set_num_threads(old)
        return out

    return run
