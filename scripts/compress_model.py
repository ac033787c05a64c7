"""Store a shipped model's weights compressed: ``python scripts/compress_model.py MODEL_ID [...]``.

Writes models/<id>.safetensors.planes.xz (each multi-byte tensor's bytes regrouped into byte planes, then xz:
``ncodec.zoo.pack_weights``) from the model's plain ``.safetensors`` or older ``.safetensors.xz``, checks that it
expands to the very bytes the card pins (SHA-256), points the card's ``file`` at it and removes the old file. The
card's SHA-256 is unchanged, so every file naming the model decodes as before. A ``.safetensors.xz`` that byte planes
would not make smaller (integer tables of small values) stays as it is. The loader
(``ncodec.zoo.read_weights``) takes any of the three forms. Prints each model's sizes.
"""
import hashlib
import json
import lzma
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
sys.path.insert(0, str(ROOT))


def compress(model_id: str) -> None:
    from ncodec import zoo

    card_path = MODELS / f"{model_id}.json"
    card = json.loads(card_path.read_text())
    src = MODELS / card["file"]
    if src.name.endswith(".planes.xz"):
        print(f"{model_id}: already {src.name}")
        return
    raw = zoo.read_safetensors(src)
    if hashlib.sha256(raw).hexdigest() != card["sha256"].lower():
        sys.exit(f"{model_id}: {src.name} does not match its card's SHA-256; not touching it")
    dst = MODELS / (src.name.removesuffix(".xz") + ".planes.xz")
    old_size = src.stat().st_size
    packed = zoo.pack_weights(raw)
    if hashlib.sha256(zoo.byte_planes(lzma.decompress(packed), inverse=True)).hexdigest() != card["sha256"].lower():
        sys.exit(f"{model_id}: the compressed file does not expand to the pinned bytes")
    if src.name.endswith(".xz") and len(packed) >= old_size:
        print(f"{model_id}: kept as {src.name} ({old_size} bytes; in byte planes {len(packed)})")
        return
    tmp = dst.with_name("." + dst.name + ".tmp")
    tmp.write_bytes(packed)
    tmp.replace(dst)
    card["file"] = dst.name
    tmp_card = card_path.with_name("." + card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    tmp_card.replace(card_path)
    src.unlink()
    print(f"{model_id}: {len(raw)} bytes; {src.name} {old_size} -> {dst.name} {len(packed)} "
          f"({len(packed) / old_size:.1%})")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for m in sys.argv[1:]:
        compress(m)
