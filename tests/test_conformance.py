"""Every vector in bitstreams/ decodes to its recorded integers (exactly) and pixels."""
import json

import pytest

from ncodec.conformance import ROOT, check_vector, damaged

VECTORS = json.loads((ROOT / "vectors.json").read_text()) if (ROOT / "vectors.json").exists() else []


def test_vectors_exist():
    # vectors of every shipped model, and the older ones kept (files written with them must still decode)
    assert {"walloc-image-v1", "walloc-image-v2", "walloc-audio-v1", "walloc-audio-v2", "pc-digits-v1", "pc-digits-v2",
            "pc-image-v1", "pc-image-v2", "rvq-audio-v1"} <= {v["model"] for v in VECTORS}
    # codecs without shipped weights (the network is in the file)
    assert {"nerv", "nirvana"} <= {v["codec"] for v in VECTORS}


@pytest.mark.parametrize("entry", VECTORS, ids=[v["file"] for v in VECTORS])
def test_vector_decodes_identically(entry):
    m = check_vector(entry)
    assert not m["problems"], m


@pytest.mark.parametrize("entry", VECTORS, ids=[v["file"] for v in VECTORS])
def test_damaged_vector_decodes_or_fails_cleanly(entry):
    """Random bytes of a unit's payload replaced (chunk CRCs refitted, so the codec sees the damage): every codec
    decodes such a file or raises NcodecError, never another exception."""
    import ncodec
    from ncodec.errors import NcodecError

    data = (ROOT / entry["file"]).read_bytes()
    outcomes = {"decoded": 0, "error": 0}
    for seed in range(4):
        try:
            ncodec.decode(damaged(data, seed))
            outcomes["decoded"] += 1
        except NcodecError:
            outcomes["error"] += 1
    assert sum(outcomes.values()) == 4
