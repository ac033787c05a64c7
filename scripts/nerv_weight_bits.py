"""How close nerv's weight coding is to what its integers allow: bytes per coding choice for a nerv/nirvana file.

    python scripts/nerv_weight_bits.py FILE.nc [--out FILE.json]

For every tensor of every group (nirvana: the integers after adding the reference group's, i.e. the weights,
not the coded residuals): the cost under the table the encoder chose (codec version 2: a zero-inflated Gaussian,
one of 256, by cost), the tensor's own empirical entropy (a lower bound for any per-tensor i.i.d. code, table
not counted), the best discretised Laplacian per tensor, and per-output-channel tables (one table byte per row).
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np


def laplace_bits(q: np.ndarray) -> float:
    """Bits of ``q`` under the best zero-mean discretised Laplacian (scale searched on a log grid)."""
    vals, counts = np.unique(q, return_counts=True)
    best = math.inf
    for b in np.exp(np.linspace(math.log(0.05), math.log(500.0), 200)):
        hi = np.exp(-(np.abs(vals) - 0.5).clip(min=0) / b)  # P(|X| >= |v| - 1/2) tail terms
        lo = np.exp(-(np.abs(vals) + 0.5) / b)
        p = np.where(vals == 0, 1 - math.exp(-0.5 / b), 0.5 * (hi - lo))
        best = min(best, float(-(counts * np.log2(np.maximum(p, 1e-300))).sum()))
    return best


def main():
    from ncodec import container
    from ncodec.codecs import nerv

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data = open(args.file, "rb").read()
    f = container.read(data)
    dec = nerv._Decoder(f.header, f.units)
    bits = {"chosen tables": 0.0, "empirical entropy": 0.0, "laplacian": 0.0, "per-row tables": 0.0}
    n = 0
    for g in range(len(f.units)):
        for q in dec.ints(g)[0]:
            flat = q.reshape(-1)
            _, counts = np.unique(flat, return_counts=True)
            bits["chosen tables"] += nerv._table_cost(flat)[1]
            bits["empirical entropy"] += float(-(counts * np.log2(counts / counts.sum())).sum())
            bits["laplacian"] += laplace_bits(flat)
            rows = q.ndim >= 2 and q.shape[0] > 1
            bits["per-row tables"] += (sum(nerv._table_cost(r.reshape(-1))[1] for r in q) + 8 * q.shape[0] if rows
                                       else nerv._table_cost(flat)[1])
            n += flat.size
    out = {"file": args.file, "file_bytes": len(data), "weights": n,
           **{k: round(v / 8) for k, v in bits.items()}}
    print(json.dumps(out, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
