"""Conformance vectors: small .nc files in bitstreams/ with the expected results of decoding them.

``bitstreams/vectors.json`` lists, per vector: the file, codec id and version, the SHA-256 of the entropy-decoded
integers (must match exactly on every platform and every later ncodec), and the SHA-256 of the decoded pixels
plus a reference PNG (float synthesis may differ by one level across platforms; exact on the same one).

Regenerate only on purpose: ``python -m ncodec.conformance --regenerate`` (never when a codec version ships:
old vectors must keep decoding identically).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent / "bitstreams"


def check_vector(entry: dict, root: Path = ROOT) -> dict:
    """Decode one vector and compare; returns the measured values and a ``problems`` list."""
    from PIL import Image

    from . import api, container
    from .api import _codec

    data = (root / entry["file"]).read_bytes()
    f = container.read(data)
    codec = _codec(f.header.codec_id)
    out = api.decode(data).data
    measured = {"symbols_sha256": codec.symbols_digest(f.header, f.units),
                "decoded_sha256": hashlib.sha256(out.tobytes()).hexdigest()}
    problems = []
    if measured["symbols_sha256"] != entry["symbols_sha256"]:
        problems.append("entropy-decoded integers differ")
    if measured["decoded_sha256"] != entry["decoded_sha256"]:
        if entry["reference"].endswith(".npy"):  # audio: float32 samples, within 2 LSB of 16-bit
            ref = np.load(root / entry["reference"], allow_pickle=False)
            diff = np.abs(ref.astype(np.float64) - out)
            if ref.shape != out.shape or diff.max() > 2 / 32768:
                problems.append(f"decoded samples differ from the reference by up to {diff.max():.2e}")
        else:
            ref = np.asarray(Image.open(root / entry["reference"]))
            diff = np.abs(ref.astype(int) - out.astype(int))
            if ref.shape != out.shape or diff.max() > 1 or diff.mean() > 0.01:
                problems.append(f"decoded pixels differ from the reference by up to {diff.max()} levels")
    measured["problems"] = problems
    return measured


def regenerate(root: Path = ROOT) -> list[dict]:
    from PIL import Image
    from skimage import data as skdata

    from . import api, container
    from .api import _codec

    img = np.ascontiguousarray(skdata.astronaut()[60:156, 180:308])  # 96 x 128
    entries = []
    for q in (15, 60, 95):
        name = f"walloc-image-v1-astronaut-q{q}"
        blob = api.encode(img, codec="walloc", quality=q, name="astronaut-crop.png")
        (root / "walloc").mkdir(parents=True, exist_ok=True)
        (root / "walloc" / f"{name}.nc").write_bytes(blob)
        out = api.decode(blob).data
        Image.fromarray(out).save(root / "walloc" / f"{name}.png")
        f = container.read(blob)
        entries.append({"file": f"walloc/{name}.nc", "reference": f"walloc/{name}.png", "codec": "walloc",
                        "codec_version": f.header.codec_version, "model": f.header.model_id, "bytes": len(blob),
                        "symbols_sha256": _codec("walloc").symbols_digest(f.header, f.units),
                        "decoded_sha256": hashlib.sha256(out.tobytes()).hexdigest()})
    t = np.arange(8000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * (300 + 400 * t) * t)).astype(np.float32)
    for name, sig, q in (("mono16k-q40", tone[:, None], 40), ("stereo16k-q80", np.stack([tone, tone[::-1]], 1), 80)):
        name = f"walloc-audio-v1-{name}"
        blob = api.encode(sig, codec="walloc", quality=q, sample_rate=16000, name="tone.wav")
        (root / "walloc" / f"{name}.nc").write_bytes(blob)
        out = api.decode(blob).data
        np.save(root / "walloc" / f"{name}.npy", out, allow_pickle=False)
        f = container.read(blob)
        entries.append({"file": f"walloc/{name}.nc", "reference": f"walloc/{name}.npy", "codec": "walloc",
                        "codec_version": f.header.codec_version, "model": f.header.model_id, "bytes": len(blob),
                        "symbols_sha256": _codec("walloc").symbols_digest(f.header, f.units),
                        "decoded_sha256": hashlib.sha256(out.tobytes()).hexdigest()})
    (root / "vectors.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


if __name__ == "__main__":
    if "--regenerate" in sys.argv:
        for e in regenerate():
            print(e["file"], e["bytes"], "bytes")
    else:
        bad = 0
        for e in json.loads((ROOT / "vectors.json").read_text()):
            m = check_vector(e)
            print(e["file"], "OK" if not m["problems"] else m["problems"])
            bad += bool(m["problems"])
        sys.exit(1 if bad else 0)
