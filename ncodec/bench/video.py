"""Video benchmark: x264 / x265 (preset medium, CRF sweep) and SVT-AV1 (preset 8, CRF sweep) through PyAV.

Frames are compared in RGB (8-bit) after decoding; PSNR is averaged over frames; bpp = 8 * file bytes /
(width * height * frames); the whole muxed MP4 is counted. Learned video codecs join through the container.
"""
from __future__ import annotations

import io
import time

import numpy as np

CODECS = {
    "x264": ("libx264", {"preset": "medium"}, [18, 23, 28, 33, 38, 43]),
    "x265": ("libx265", {"preset": "medium", "x265-params": "log-level=error"}, [18, 23, 28, 33, 38, 43]),
    "svtav1": ("libsvtav1", {"preset": "8"}, [25, 32, 39, 46, 53, 60]),
}
LEARNED = {"nerv": [5, 30, 60, 100], "nirvana": [5, 30, 60]}  # quality settings of the implicit codecs
SETTINGS = {"nerv": "ncodec nerv, quality sweep, default time budget (6 s per CIF frame), bpp from the .nc file",
            "nirvana": "ncodec nirvana, quality sweep, default time budget (6 s per CIF frame), bpp from the .nc file",
            "x264": "PyAV libx264, preset medium, CRF sweep, yuv420p, MP4",
            "x265": "PyAV libx265, preset medium, CRF sweep, yuv420p, MP4",
            "svtav1": "PyAV libsvtav1, preset 8, CRF sweep, yuv420p, MP4"}


def read_frames(path, max_frames: int | None) -> tuple[list[np.ndarray], float]:
    import av

    frames = []
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        fps = float(st.average_rate or 25)
        for fr in c.decode(video=0):
            frames.append(fr.to_ndarray(format="rgb24"))
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        from ..errors import BadInput

        raise BadInput(f"no video frames in {path}")
    return frames, fps


def rates_for(name: str) -> list[float]:
    return LEARNED[name] if name in LEARNED else CODECS[name][2]


def _psnr_frames(ref: list[np.ndarray], dec) -> float:
    vals = []
    for a, b in zip(ref, dec):
        a = a[: b.shape[0], : b.shape[1]].astype(np.float64)
        vals.append(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-10)))
    return float(np.mean(vals))


def run_learned(name: str, frames: list[np.ndarray], fps: float, quality: float) -> dict:
    """Through the real container: bpp from the .nc bytes; encode time is the fitting time."""
    import ncodec

    t0 = time.perf_counter()
    blob = ncodec.encode(np.stack(frames), codec=name, media="video", quality=quality, fps=fps)
    t1 = time.perf_counter()
    dec = ncodec.decode(blob).data
    t2 = time.perf_counter()
    px = frames[0].shape[0] * frames[0].shape[1] * len(frames)
    return {"bytes": len(blob), "bpp": 8 * len(blob) / px, "psnr": _psnr_frames(frames, dec), "frames": len(frames),
            "decoded_frames": len(dec), "enc_s": t1 - t0, "dec_s": t2 - t1, "pixels": px,
            "kbps": 8 * len(blob) / (len(frames) / fps) / 1000}


def run_one(name: str, frames: list[np.ndarray], fps: float, crf: float) -> dict:
    import av

    if name in LEARNED:
        return run_learned(name, frames, fps, crf)
    codec, opts, _ = CODECS[name]
    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    t0 = time.perf_counter()
    with av.open(buf, "w", format="mp4") as out:
        st = out.add_stream(codec, rate=int(round(fps)))
        st.width, st.height, st.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        st.options = {**opts, "crf": str(int(crf))}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: h - h % 2, : w - w % 2]), format="rgb24")
            vf.pts = i
            for p in st.encode(vf):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    t1 = time.perf_counter()
    data = buf.getvalue()
    dec = []
    with av.open(io.BytesIO(data)) as c:
        for fr in c.decode(video=0):
            dec.append(fr.to_ndarray(format="rgb24"))
    t2 = time.perf_counter()
    n = min(len(dec), len(frames))
    px = frames[0].shape[0] * frames[0].shape[1] * len(frames)
    return {"bytes": len(data), "bpp": 8 * len(data) / px, "psnr": _psnr_frames(frames[:n], dec[:n]),
            "frames": len(frames),
            "decoded_frames": len(dec), "enc_s": t1 - t0, "dec_s": t2 - t1, "pixels": px,
            "kbps": 8 * len(data) / (len(frames) / fps) / 1000}
