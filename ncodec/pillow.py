"""Pillow plugin: ``Image.open("x.nc")`` and ``img.save("y.nc", quality=..., codec=...)``.

Registered by ``import ncodec``. Opening reads only the signature and the HEAD chunk (size and mode are known
without loading any model); pixels are decoded on ``load()``. Multi-item files expose their items as frames
(``n_frames``, ``seek``). A .nc file that holds audio or video raises Pillow's usual
``UnidentifiedImageError`` with the reason.
"""
from __future__ import annotations

import struct

from PIL import Image, ImageFile, UnidentifiedImageError

from . import container

FORMAT = "NC"
_HEAD_PREFIX = len(container.SIGNATURE) + 8


def _accept(prefix: bytes) -> bool:
    return prefix[: len(container.SIGNATURE)] == container.SIGNATURE


class NcImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "ncodec container (.nc)"

    def _open(self) -> None:
        head = self.fp.read(_HEAD_PREFIX)
        if len(head) < _HEAD_PREFIX or not _accept(head):
            raise SyntaxError("not an ncodec file")
        (length,) = struct.unpack_from("<I", head, len(container.SIGNATURE))
        if length > 1 << 16:
            raise SyntaxError("ncodec HEAD chunk is implausibly large")
        head += self.fp.read(length + 4)
        try:
            header = container.read_header(head)
        except Exception as exc:  # noqa: BLE001 - any parse failure means "not a readable .nc image"
            raise SyntaxError(f"damaged ncodec header: {exc}") from None
        media = header.media.name.lower()
        if media != "image":
            name = getattr(self, "filename", "") or "file"
            raise UnidentifiedImageError(f"cannot identify image file {name!r}: it is an ncodec {media} file "
                                         f"(decode it with ncodec.decode or `ncodec decode`)")
        h, w, c = header.shape
        self._mode = {1: "L", 3: "RGB"}.get(c)
        if self._mode is None:
            raise SyntaxError(f"ncodec image with {c} channels is not supported by the Pillow plugin")
        self._size = (w, h)
        self.n_frames = max(header.items, 1)
        self.is_animated = self.n_frames > 1
        self.info["codec"] = header.codec_id
        self.info["model"] = header.model_id
        self._nc_frame = 0
        self._nc_loaded = None  # frame index currently in self.im
        self.tile = []

    def seek(self, frame: int) -> None:
        if not self._seek_check(frame):
            return
        self._nc_frame = frame

    def tell(self) -> int:
        return self._nc_frame

    def load(self):
        if self._nc_loaded != self._nc_frame:
            import numpy as np

            from . import api

            self.fp.seek(0)
            data = self.fp.read()
            (_, arr), = api.decode_items(data, [self._nc_frame])
            arr = np.ascontiguousarray(arr[:, :, 0] if self._mode == "L" else arr)
            self.im = Image.core.new(self._mode, self._size)
            self.frombytes(arr.tobytes())
            self._nc_loaded = self._nc_frame
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename, save_all: bool = False) -> None:
    import numpy as np

    from . import api

    opts = im.encoderinfo
    codec = opts.get("codec")
    frames = [im]
    if save_all:
        frames = [f.copy() for f in _all_frames(im)] + list(opts.get("append_images", []))
    if len(frames) > 1:
        arrays = [np.asarray(f.convert("L" if codec == "pc" else "RGB")) for f in frames]
        blob = api.encode_items(arrays, codec=codec or "pc")
    else:
        arr = np.asarray(im.convert("RGB"))
        blob = api.encode(arr, codec=codec, quality=opts.get("quality"), bpp=opts.get("bpp"))
    fp.write(blob)


def _save_all(im, fp, filename):
    _save(im, fp, filename, save_all=True)


def _all_frames(im):
    n = getattr(im, "n_frames", 1)
    for i in range(n):
        im.seek(i)
        yield im
    im.seek(0)


def register() -> None:
    if FORMAT in Image.OPEN:
        return
    Image.register_open(FORMAT, NcImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_save_all(FORMAT, _save_all)
    Image.register_extension(FORMAT, ".nc")
    Image.register_mime(FORMAT, "application/x-ncodec")
