"""Video sources and sinks: any PyAV-readable file (.mp4, .y4m, raw .264 ...), a folder of frames, or an array.

Sources give uint8 RGB frames (H, W, 3) group by group, so a long video never sits in memory whole.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .io import to_rgb8

VIDEO_EXT = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".y4m", ".264", ".h264", ".265", ".hevc", ".ivf", ".m4v"}
FRAME_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


def _parse_range(frames: tuple[int, int | None] | None, total: int) -> tuple[int, int]:
    a, b = frames or (0, None)
    b = total if b is None else min(b, total)
    if a < 0 or a >= b:
        raise BadInput(f"frame range {a}:{b} is empty for a video of {total} frames")
    return a, b


class ArrayVideo:
    def __init__(self, frames: np.ndarray, fps: float = 25.0):
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
            raise BadInput(f"video must be a uint8 (frames, height, width, 3) array, got {frames.shape} {frames.dtype}")
        self.data, self.fps = frames, Fraction(fps).limit_denominator(1001)
        self.count, self.height, self.width = frames.shape[:3]

    def groups(self, size: int):
        for a in range(0, self.count, size):
            yield a, self.data[a : a + size]


class FolderVideo:
    """A folder of image files, in name order."""

    def __init__(self, folder: Path, fps: float = 25.0, frames=None):
        from PIL import Image

        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in FRAME_EXT)
        if not files:
            raise BadInput(f"no frames ({', '.join(sorted(FRAME_EXT))}) in folder {folder}")
        a, b = _parse_range(frames, len(files))
        self.files = files[a:b]
        self.fps, self.count = Fraction(fps).limit_denominator(1001), len(self.files)
        with Image.open(self.files[0]) as im:
            self.width, self.height = im.size

    def groups(self, size: int):
        from PIL import Image

        for a in range(0, self.count, size):
            out = []
            for p in self.files[a : a + size]:
                with Image.open(p) as im:
                    arr = to_rgb8(im)
                if arr.shape[:2] != (self.height, self.width):
                    raise BadInput(f"frame {p.name} is {arr.shape[1]}x{arr.shape[0]}, the first is "
                                   f"{self.width}x{self.height}")
                out.append(arr)
            yield a, np.stack(out)


class FileVideo:
    """A PyAV-readable video file; frames are counted by demuxing (no decoding) before encoding starts."""

    def __init__(self, path, frames=None):
        import av

        self.path = str(path)
        try:
            with av.open(self.path) as c:
                if not c.streams.video:
                    raise BadInput(f"{path} has no video stream")
                st = c.streams.video[0]
                rate = st.average_rate or st.guessed_rate or 25
                self.width, self.height = st.codec_context.width, st.codec_context.height
                total = sum(1 for p in c.demux(st) if p.size)
        except BadInput:
            raise
        except Exception as exc:  # PyAV raises its own error types per container/codec problem
            raise BadInput(f"cannot read video {path}: {exc}") from None
        if total == 0 or not self.width:
            raise BadInput(f"no video frames in {path}")
        self.first, last = _parse_range(frames, total)
        self.count = last - self.first
        self.fps = Fraction(rate).limit_denominator(1001)

    def groups(self, size: int):
        import av

        buf, index, emitted = [], 0, 0
        with av.open(self.path) as c:
            for fr in c.decode(video=0):
                if index >= self.first:
                    buf.append(fr.to_ndarray(format="rgb24"))
                    if len(buf) == size or emitted + len(buf) == self.count:
                        yield emitted, np.stack(buf)
                        emitted += len(buf)
                        buf = []
                        if emitted == self.count:
                            return
                index += 1
        if buf:
            yield emitted, np.stack(buf)
        if emitted + len(buf) < self.count:
            raise BadInput(f"{self.path} decoded to fewer frames than its packets promised")


def open_source(src, frames=None, fps: float = 25.0):
    if isinstance(src, np.ndarray):
        data = src[slice(*(frames or (0, None)))]
        return ArrayVideo(data, fps)
    p = Path(src)
    if p.is_dir():
        return FolderVideo(p, fps, frames)
    return FileVideo(p, frames)


def write_video(dest, frames_iter, fps: Fraction, fmt: str, size: tuple[int, int]) -> None:
    """Frames (iterable of uint8 RGB arrays) to a binary file object: fmt 'y4m' (4:4:4, lossless from the
    decoded RGB up to the colour conversion) or 'mp4' (x264 4:4:4, CRF 0)."""
    import av

    h, w = size
    with av.open(dest, "w", format="yuv4mpegpipe" if fmt == "y4m" else "mp4") as out:
        if fmt == "y4m":
            st = out.add_stream("rawvideo", rate=fps)
            st.pix_fmt = "yuv444p"
        else:
            st = out.add_stream("libx264", rate=fps)
            st.pix_fmt = "yuv444p"
            st.options = {"crf": "0", "preset": "medium"}
        st.width, st.height = w, h
        for i, f in enumerate(frames_iter):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            for pkt in st.encode(vf):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
