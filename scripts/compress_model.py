"""Store a shipped model's weights xz-compressed: ``python scripts/compress_model.py MODEL_ID [...]``.

Writes models/<file>.xz, checks that it expands to the very bytes the card pins (SHA-256), points the card's
``file`` at it and removes the uncompressed file. The card's SHA-256 is unchanged, so every file naming the model
decodes as before. Worth it where the weights compress well (integer tables, fp16 codebooks); the loader
(``ncodec.zoo.read_weights``) takes either form. Prints each model's sizes.
"""
import hashlib
import json
import lzma
import sys
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "models"


def compress(model_id: str) -> None:
    card_path = MODELS / f"{model_id}.json"
    card = json.loads(card_path.read_text())
    src = MODELS / card["file"]
    if src.name.endswith(".xz"):
        print(f"{model_id}: already {src.name}")
        return
    raw = src.read_bytes()
    if hashlib.sha256(raw).hexdigest() != card["sha256"].lower():
        sys.exit(f"{model_id}: {src.name} does not match its card's SHA-256; not touching it")
    packed = lzma.compress(raw, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
    if hashlib.sha256(lzma.decompress(packed)).hexdigest() != card["sha256"].lower():
        sys.exit(f"{model_id}: the compressed file does not expand to the pinned bytes")
    dst = src.with_name(src.name + ".xz")
    tmp = dst.with_name("." + dst.name + ".tmp")
    tmp.write_bytes(packed)
    tmp.replace(dst)
    card["file"] = dst.name
    tmp_card = card_path.with_name("." + card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    tmp_card.replace(card_path)
    src.unlink()
    print(f"{model_id}: {len(raw)} -> {len(packed)} bytes ({len(packed) / len(raw):.1%})")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for m in sys.argv[1:]:
        compress(m)
