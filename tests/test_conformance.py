"""Every vector in bitstreams/ decodes to its recorded integers (exactly) and pixels."""
import json

import pytest

from ncodec.conformance import ROOT, check_vector

VECTORS = json.loads((ROOT / "vectors.json").read_text()) if (ROOT / "vectors.json").exists() else []


def test_vectors_exist():
    assert len(VECTORS) >= 5 and {v["file"].split("-")[1] for v in VECTORS} == {"image", "audio"}


@pytest.mark.parametrize("entry", VECTORS, ids=[v["file"] for v in VECTORS])
def test_vector_decodes_identically(entry):
    m = check_vector(entry)
    assert not m["problems"], m
