"""Every vector in bitstreams/ decodes to its recorded integers (exactly) and pixels."""
import json

import pytest

from ncodec.conformance import ROOT, check_vector

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
