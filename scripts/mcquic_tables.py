"""How much McQuic's index coding saves: codec version 2's adaptive coding over the cascaded context tables alone,
and those over per-codebook marginal tables and uniform codes.

    python scripts/mcquic_tables.py --data ../shared/corpus/eval/images/kodak --out docs/results/mcquic-tables
    python scripts/mcquic_tables.py --data ../shared/corpus/train/images/sun_hays80 --out docs/results/mcquic-tables-train --qualities 13,53,100 --limit 10

For every image and quality: file bytes, payload bits (the adaptive coding of codec version 2: tables mixed with
the tile's counts, neighbours' indices tried first), the model cross-entropy with the static context tables
alone (what a version 1 file costs, within 0.3 %), with one marginal table per codebook (fixed frequency
tables, as the McQuic release), and log2(K) per index (the uniform code). Writes results.json (rows + totals
per quality) and prints the totals.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ncodec
from ncodec import container
from ncodec.api import _codec
from ncodec.media import read_image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--qualities", default="0,20,40,60,80,100")
    ap.add_argument("--limit", type=int, default=None, help="the first N images only")
    a = ap.parse_args()
    quals = [float(q) for q in a.qualities.split(",")]
    rows = []
    images = sorted(f for f in Path(a.data).iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    for f in images[: a.limit]:
        img = read_image(f)
        for q in quals:
            blob = ncodec.encode(img, codec="mcquic", quality=q)
            c = container.read(blob)
            bits = _codec("mcquic").bits(c.header, c.units)
            rows.append({"item": f.name, "quality": q, "codebooks": ncodec.info(blob).meta["codebooks"],
                         "file_bytes": len(blob), "pixels": img.shape[0] * img.shape[1], **bits})
    totals = {}
    for q in quals:
        rs = [r for r in rows if r["quality"] == q]
        px = sum(r["pixels"] for r in rs)
        t = {k: sum(r[k] for r in rs) / px for k in ("payload_bits", "context_bits", "marginal_bits", "uniform_bits")}
        t["file_bpp"] = sum(8 * r["file_bytes"] for r in rs) / px
        t["context_vs_marginal"] = t["context_bits"] / t["marginal_bits"] - 1
        t["payload_vs_context"] = t["payload_bits"] / t["context_bits"] - 1
        totals[str(q)] = {k: round(v, 5) for k, v in t.items()}
        print(q, totals[str(q)])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "scripts/mcquic_tables.py"] + sys.argv[1:])
    (out / "results.json").write_text(json.dumps({"command": command, "model": ncodec.info(blob).model,
                                                  "totals_bpp": totals, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
