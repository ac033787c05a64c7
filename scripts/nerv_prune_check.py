"""nerv on foreman (60 frames, q30, default budget): plain vs --prune 0.5 on the 2-core machine.

Usage: python scripts/nerv_prune_check.py docs/results/video-foreman-prune/results.json
"""
import json, sys, time
import numpy as np
import ncodec
from ncodec.bench.video import read_frames, _psnr_frames

frames, fps = read_frames("../shared/corpus/eval/video/foreman_cif_352x288_300f_intra.264", 60)
clip = np.stack(frames)
out = []
for prune in (0.0, 0.5):
    t0 = time.time()
    blob = ncodec.encode(clip, codec="nerv", media="video", quality=30, fps=fps, options={"prune": prune} if prune else None)
    te = time.time() - t0
    dec = ncodec.decode(blob).data
    row = {"prune": prune, "bytes": len(blob), "bpp": 8 * len(blob) / clip[..., 0].size, "psnr": _psnr_frames(frames, dec), "enc_s": te}
    print(row, flush=True)
    out.append(row)
json.dump(out, open(sys.argv[1], "w"), indent=1)
