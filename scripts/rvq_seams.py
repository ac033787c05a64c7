"""How well adjacent rvq units agree where they are cross-faded (codec version 3 against version 2).

    python scripts/rvq_seams.py AUDIO [AUDIO ...] [--seconds 61] [--kbps 6]

The files (16 kHz) are concatenated as mono, coded once, and the same bytes decoded with
the header's codec version set to 2 and to 3 (the payload is the same). Each unit is decoded alone; over the
samples two neighbours share, prints the correlation of the two decodes (1: in phase, 0: unrelated), the energy of
the raised-cosine cross-fade relative to the parts' energies faded alike (0 dB: no dip), PESQ-WB of the whole decode
(version 3 also has the postfilter, which moves PESQ more than the seams do) and its time.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np


def seams(blob: bytes, version: int):
    from ncodec import container
    from ncodec.codecs.base import fades
    from ncodec.codecs.rvq import RvqCodec

    f = container.read(blob)
    header = dataclasses.replace(f.header, codec_version=version)
    codec = RvqCodec()
    _, _, ov, _, _, _, _ = codec._layout(header)
    hop = codec.model(header.model_id).cfg.hop
    alone = {}
    for unit in f.units:  # each unit decoded by itself: (first internal sample, samples)
        blocks = list(codec._internal_blocks(header, [unit]))
        alone[unit.key[2]] = (blocks[0][0], np.concatenate([b for _, b in blocks])[:, 0])
    corr, dip = [], []
    keys = sorted(alone)
    for k0, k1 in zip(keys, keys[1:]):
        (s0, y0), (s1, y1) = alone[k0], alone[k1]
        lo, hi = (k1 - ov) * hop, (k1 + ov) * hop
        p, q = y0[lo - s0 : hi - s0].astype(np.float64), y1[lo - s1 : hi - s1].astype(np.float64)
        corr.append(float(p @ q / math.sqrt((p @ p) * (q @ q) + 1e-20)))
        fade_in, fade_out = fades(len(p))
        mix = p * fade_out + q * fade_in
        dip.append(10 * math.log10((mix @ mix) / ((p * p) @ fade_out + (q * q) @ fade_in + 1e-20)))
    return corr, dip, header


def main():
    import soundfile as sf
    from pesq import pesq

    import ncodec
    from ncodec import container
    from ncodec.codecs.rvq import RvqCodec

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("audio", nargs="+")
    ap.add_argument("--seconds", type=float, default=61.0)
    ap.add_argument("--kbps", type=float, default=6.0)
    args = ap.parse_args()
    parts = []
    for path in args.audio:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != 16000:
            raise SystemExit(f"{path}: 16 kHz files only (this check compares with PESQ at 16 kHz)")
        parts.append(x.mean(1))
    x = np.concatenate(parts)[: int(args.seconds * 16000)]
    blob = ncodec.encode(x, codec="rvq", media="audio", sample_rate=16000, bitrate=args.kbps)
    print(f"{len(x) / 16000:.1f} s, {len(blob)} bytes, {8 * len(blob) / (len(x) / 16000) / 1000:.2f} kbps")
    for version in (2, 3):
        corr, dip, header = seams(blob, version)
        f = container.read(blob)
        codec = RvqCodec()
        t0 = time.perf_counter()
        y = codec.decode(header, f.units)[:, 0]
        dt = time.perf_counter() - t0
        print(f"codec version {version}: {len(corr)} seams, correlation mean {np.mean(corr):.3f} (min {min(corr):.3f}),"
              f" cross-fade energy {np.mean(dip):+.2f} dB (worst {min(dip):+.2f}), PESQ-WB "
              f"{pesq(16000, x, y, 'wb'):.3f}, decode {dt:.2f} s ({len(x) / 16000 / dt:.0f}x real time)")


if __name__ == "__main__":
    main()
