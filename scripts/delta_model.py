"""Store a shipped model as a delta on an installed base model: ``python scripts/delta_model.py MODEL_ID BASE_ID``.

For a model that shares tensors with another (walloc-image-v3 is walloc-image-v2's networks, bit for bit, plus a
context model): writes models/<MODEL_ID>.safetensors.planes.xz (``ncodec.zoo.pack_weights``) holding only the tensors that differ from BASE_ID or are
new (with the original's metadata), and points the card at it with ``base_model`` {id, sha256 (the base's
identity), replaced (base tensors the model does not have)}. Before anything is replaced it checks that the
delta merged on the base (``ncodec.zoo``'s merge) gives exactly the model's tensors: names, dtypes, shapes and
bytes.

The card's ``sha256`` then pins the delta file; ``published_sha256`` keeps the SHA-256 of the whole safetensors
as first published, which stays the model's identity: .nc files name it by its first 8 bytes and other cards
pin it as their base, so every file naming the model decodes as before.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
sys.path.insert(0, str(ROOT))


def delta(model_id: str, base_id: str) -> None:
    from safetensors.numpy import load, save

    from ncodec import zoo

    card, base = zoo.cards()[model_id], zoo.cards()[base_id]
    if card.path.parent != MODELS:
        sys.exit(f"{model_id} is not a model of {MODELS}")
    if card.card.get("base_model"):
        sys.exit(f"{model_id} is already stored on a base ({card.card['base_model']['id']})")
    if (card.codec, card.media) != (base.codec, base.media):
        sys.exit(f"{base_id} is a {base.codec} {base.media} model, {model_id} a {card.codec} {card.media} one")
    whole = zoo.read_weights(card)
    mine, theirs = load(whole), zoo.load_tensors_numpy(base)

    def same(a, b):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()

    own = {k: v for k, v in mine.items() if k not in theirs or not same(v, theirs[k])}
    replaced = sorted(k for k in theirs if k not in mine)
    merged = zoo.merge(theirs, own, replaced)
    if merged.keys() != mine.keys() or not all(same(merged[k], mine[k]) for k in mine):
        sys.exit(f"{model_id} on {base_id}: the merge would not give the model's tensors; not touching it")
    data = save(own, metadata=zoo.safetensors_metadata(whole) or None)
    packed = zoo.pack_weights(data)
    new = dict(card.card, file=f"{model_id}.safetensors.planes.xz", sha256=hashlib.sha256(data).hexdigest(),
               published_sha256=card.identity,
               base_model={"id": base_id, "sha256": base.identity, "replaced": replaced})
    old_file, old_size = card.path, card.path.stat().st_size
    dst = MODELS / new["file"]
    tmp = dst.with_name("." + dst.name + ".tmp")
    tmp.write_bytes(packed)
    tmp.replace(dst)
    if old_file != dst:
        old_file.unlink()
    card_path = MODELS / f"{model_id}.json"
    tmp_card = card_path.with_name("." + card_path.name + ".tmp")
    tmp_card.write_text(json.dumps(new, indent=2) + "\n")
    tmp_card.replace(card_path)
    check = zoo.load_tensors_numpy(zoo.cards()[model_id])
    assert check.keys() == mine.keys() and all(np.array_equal(check[k], mine[k]) for k in mine)
    print(f"{model_id}: {len(own)} own tensors of {len(mine)}, {len(replaced)} of {base_id}'s replaced; stored "
          f"{old_size} -> {dst.stat().st_size} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    delta(sys.argv[1], sys.argv[2])
