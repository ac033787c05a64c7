"""Reading and writing .nc files. Byte order is little-endian everywhere; see bitstreams/FORMAT.md."""
from __future__ import annotations

import enum
import json
import math
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import CorruptFile, LimitExceeded, UnsupportedVersion

SIGNATURE = b"\x8bNCD\r\n\x1a\n"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
_CHUNK_HEAD = struct.Struct("<I4s")
_CRC = struct.Struct("<I")


class MediaKind(enum.IntEnum):
    IMAGE = 1
    AUDIO = 2
    VIDEO = 3


class RateKind(enum.IntEnum):
    NONE = 0
    QUALITY = 1  # 0..100, codec-defined scale
    BPP = 2
    KBPS = 3
    LAMBDA = 4


@dataclass(frozen=True)
class Limits:
    """Safety limits, checked before anything is allocated."""

    max_pixels: int = 1 << 28  # per image or video frame (268 MP)
    max_samples: int = 1 << 33  # audio frames x channels (~24 h of 48 kHz stereo)
    max_frames: int = 1 << 20
    max_channels: int = 16
    max_units: int = 1 << 20
    max_chunk: int = 1 << 30
    max_meta: int = 1 << 20


DEFAULT_LIMITS = Limits()


@dataclass
class Header:
    media: MediaKind
    codec_id: str
    codec_version: int
    shape: tuple[int, ...]  # image (H, W, C); audio (frames, channels); video (frames, H, W, C)
    model_id: str = ""
    weights_hash: bytes = b"\0" * 8  # first 8 bytes of the weights' SHA-256
    rate_kind: RateKind = RateKind.NONE
    rate_value: float = 0.0
    bit_depth: int = 8
    colour: int = 0  # 0 none, 1 gray, 2 RGB, 3 YCbCr 4:2:0
    rate_num: int = 0  # audio sample rate in Hz, or video fps numerator
    rate_den: int = 1
    entropy_coder: int = 1  # 0 raw, 1 constriction ANS (u32 words), 2 constriction range coder (u32 words)
    table_precision: int = 16
    items: int = 1
    params: bytes = b""  # codec parameters, defined by the codec
    format_major: int = FORMAT_MAJOR
    format_minor: int = FORMAT_MINOR


@dataclass
class Unit:
    """An independently decodable piece: a tile, an audio segment, a group of frames, an item."""

    key: tuple[int, int, int, int]  # codec-defined extent, e.g. (y0, x0, h, w) of a tile
    data: bytes | None  # None when the unit was damaged and reading was not strict


@dataclass
class NcFile:
    header: Header
    units: list[Unit]
    meta: dict = field(default_factory=dict)
    name: str | None = None
    ancillary: list[tuple[str, bytes]] = field(default_factory=list)  # unknown ancillary chunks, kept raw
    damaged: list[int] = field(default_factory=list)  # unit indices whose CRC failed (non-strict read)
    names: list[str] | None = None  # per-item names of a multi-item file (ancillary ``inam``)


# --------------------------------------------------------------------------------------------- primitives


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Cursor:
    def __init__(self, buf: bytes, what: str):
        self.buf, self.pos, self.what = buf, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise CorruptFile(f"{self.what} chunk is too short; the file is damaged or truncated")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(b)

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def f32(self) -> float:
        return struct.unpack("<f", self.take(4))[0]

    def varint(self) -> int:
        value = shift = 0
        while True:
            b = self.u8()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise CorruptFile(f"varint longer than 64 bits in {self.what}; the file is damaged")

    def string(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise CorruptFile(f"non-ASCII identifier in {self.what}; the file is damaged") from None

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise CorruptFile(f"{len(self.buf) - self.pos} unexpected trailing bytes in {self.what}")


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return _CHUNK_HEAD.pack(len(payload), ctype) + payload + _CRC.pack(zlib.crc32(ctype + payload))


def _short_str(s: str, what: str) -> bytes:
    raw = s.encode("ascii")
    if len(raw) > 255:
        raise ValueError(f"{what} {s!r} is longer than 255 bytes")
    return bytes([len(raw)]) + raw


# --------------------------------------------------------------------------------------------- header


def _pack_header(h: Header) -> bytes:
    if len(h.weights_hash) != 8:
        raise ValueError("weights_hash must be 8 bytes (a SHA-256 prefix)")
    out = bytearray([h.format_major, h.format_minor, int(h.media), h.entropy_coder, h.table_precision])
    out += _short_str(h.codec_id, "codec id")
    out += struct.pack("<H", h.codec_version)
    out += _short_str(h.model_id, "model id")
    out += h.weights_hash
    out += bytes([int(h.rate_kind)]) + struct.pack("<f", h.rate_value)
    out += _varint(len(h.shape)) + b"".join(_varint(d) for d in h.shape)
    out += bytes([h.bit_depth, h.colour])
    out += _varint(h.rate_num) + _varint(h.rate_den) + _varint(h.items)
    out += _varint(len(h.params)) + h.params
    return bytes(out)


def _check_shape(media: int, shape: tuple[int, ...], limits: Limits) -> None:
    n = math.prod(shape) if shape else 0
    if media == MediaKind.IMAGE:
        if len(shape) != 3 or shape[2] > limits.max_channels:
            raise CorruptFile(f"image shape {shape} is not (height, width, channels<={limits.max_channels})")
        if shape[0] * shape[1] > limits.max_pixels:
            raise LimitExceeded(f"image of {shape[0]}x{shape[1]} pixels is above the limit of "
                                f"{limits.max_pixels} pixels; raise Limits.max_pixels if it is genuine")
    elif media == MediaKind.AUDIO:
        if len(shape) != 2 or shape[1] > limits.max_channels:
            raise CorruptFile(f"audio shape {shape} is not (frames, channels<={limits.max_channels})")
        if n > limits.max_samples:
            raise LimitExceeded(f"audio of {n} samples is above the limit of {limits.max_samples}")
    elif media == MediaKind.VIDEO:
        if len(shape) != 4 or shape[3] > limits.max_channels:
            raise CorruptFile(f"video shape {shape} is not (frames, height, width, channels)")
        if shape[0] > limits.max_frames or shape[1] * shape[2] > limits.max_pixels:
            raise LimitExceeded(f"video of shape {shape} is above the frame or pixel limits")


def _unpack_header(payload: bytes, limits: Limits) -> Header:
    c = _Cursor(payload, "HEAD")
    major, minor = c.u8(), c.u8()
    if major != FORMAT_MAJOR:
        if major > FORMAT_MAJOR:
            raise UnsupportedVersion(f"file uses .nc format {major}.{minor}; this ncodec reads {FORMAT_MAJOR}.x: "
                                     f"upgrade ncodec")
        raise CorruptFile(f"unknown .nc format major version {major}")
    media = c.u8()
    if media not in MediaKind._value2member_map_:
        raise CorruptFile(f"unknown media kind {media} in HEAD")
    coder, precision = c.u8(), c.u8()
    codec_id = c.string()
    codec_version = c.u16()
    model_id = c.string()
    whash = c.take(8)
    rate_kind = c.u8()
    if rate_kind not in RateKind._value2member_map_:
        raise CorruptFile(f"unknown rate kind {rate_kind} in HEAD")
    rate_value = c.f32()
    ndim = c.varint()
    if ndim > 8:
        raise CorruptFile(f"{ndim} dimensions in HEAD; at most 8 are allowed")
    shape = tuple(c.varint() for _ in range(ndim))
    _check_shape(media, shape, limits)
    bit_depth, colour = c.u8(), c.u8()
    rate_num, rate_den, items = c.varint(), c.varint(), c.varint()
    if items < 1 or items > limits.max_units:
        raise CorruptFile(f"item count {items} in HEAD is outside 1..{limits.max_units}")
    params = c.take(c.varint())
    c.done()
    return Header(MediaKind(media), codec_id, codec_version, shape, model_id, whash, RateKind(rate_kind),
                  rate_value, bit_depth, colour, rate_num, rate_den, coder, precision, items, params, major, minor)


# --------------------------------------------------------------------------------------------- write


def write(header: Header, units: list[Unit], meta: dict | None = None, name: str | None = None,
          ancillary: list[tuple[str, bytes]] = (), names: list[str] | None = None) -> bytes:
    """Serialise a file. ``meta`` is stored as JSON (ancillary ``meta``), ``name`` as ancillary ``name``,
    ``names`` (one per item of a multi-item file) as ancillary ``inam``."""
    out = [SIGNATURE, _chunk(b"HEAD", _pack_header(header))]
    if meta:
        out.append(_chunk(b"meta", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()))
    if name:
        out.append(_chunk(b"name", name.encode("utf-8")))
    if names is not None:
        if len(names) != header.items:
            raise ValueError(f"{len(names)} names for {header.items} items")
        blob = bytearray(_varint(len(names)))
        for n in names:
            raw = n.encode("utf-8")
            blob += _varint(len(raw)) + raw
        packed = zlib.compress(bytes(blob), 9)  # names of a set are alike (d0001.png, d0002.png ...)
        out.append(_chunk(b"inam", b"\x01" + packed if len(packed) < len(blob) else b"\x00" + bytes(blob)))
    for ctype, payload in ancillary:
        if not ctype[:1].islower():
            raise ValueError(f"extra chunk type {ctype!r} must be ancillary (first letter lower case)")
        out.append(_chunk(ctype.encode("ascii"), payload))
    toc = bytearray(_varint(len(units)))
    for u in units:
        if u.data is None:
            raise ValueError("cannot write a damaged unit")
        toc += _varint(len(u.data)) + b"".join(_varint(k) for k in u.key)
    out.append(_chunk(b"UTOC", bytes(toc)))
    out += [_chunk(b"UNIT", u.data) for u in units]
    out.append(_chunk(b"NEND", b""))
    return b"".join(out)


# --------------------------------------------------------------------------------------------- read


def _chunks(data: bytes | memoryview, limits: Limits, strict: bool):
    """Yield (type, payload or None if CRC failed) for each chunk after the signature."""
    pos, n = len(SIGNATURE), len(data)
    while True:
        if pos + 8 > n:
            raise CorruptFile("file ends before its NEND chunk; it is truncated")
        length, ctype = _CHUNK_HEAD.unpack_from(data, pos)
        if length > limits.max_chunk:
            raise LimitExceeded(f"chunk of {length} bytes is above the limit of {limits.max_chunk}")
        if pos + 12 + length > n:
            raise CorruptFile(f"chunk {ctype!r} claims {length} bytes but the file ends first; it is truncated")
        if not all(65 <= b <= 90 or 97 <= b <= 122 for b in ctype):
            raise CorruptFile(f"invalid chunk type {ctype!r}; the file is damaged")
        body = bytes(data[pos + 4 : pos + 8 + length])
        (crc,) = _CRC.unpack_from(data, pos + 8 + length)
        pos += 12 + length
        ok = zlib.crc32(body) == crc
        if not ok and (strict or ctype != b"UNIT"):
            raise CorruptFile(f"CRC mismatch in chunk {ctype.decode()}; the file is damaged")
        yield ctype.decode(), (body[4:] if ok else None)
        if ctype == b"NEND":
            if pos != n:
                raise CorruptFile(f"{n - pos} bytes after the NEND chunk; the file is damaged")
            return


def _check_signature(data: bytes | memoryview) -> None:
    if bytes(data[: len(SIGNATURE)]) != SIGNATURE:
        head = bytes(data[:8])
        if head[1:4] == b"NCD":
            raise CorruptFile("signature damaged (was the file transferred in text mode?)")
        raise CorruptFile("not an .nc file (bad signature)")


def read_header(data: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> Header:
    """Parse only the signature and HEAD (cheap: for `info`, Pillow's open)."""
    _check_signature(data)
    for ctype, payload in _chunks(data, limits, strict=True):
        if ctype != "HEAD":
            raise CorruptFile(f"first chunk is {ctype}, expected HEAD")
        return _unpack_header(payload, limits)
    raise CorruptFile("no HEAD chunk")  # pragma: no cover (the generator raises first)


def read(data: bytes | memoryview, limits: Limits = DEFAULT_LIMITS, strict: bool = True) -> NcFile:
    """Parse a whole file. With ``strict=False`` a UNIT whose CRC fails is kept as ``data=None``."""
    _check_signature(data)
    header, toc, units, meta, name, extra, damaged, names = None, None, [], {}, None, [], [], None
    for ctype, payload in _chunks(data, limits, strict):
        if header is None:
            if ctype != "HEAD":
                raise CorruptFile(f"first chunk is {ctype}, expected HEAD")
            header = _unpack_header(payload, limits)
        elif ctype == "HEAD":
            raise CorruptFile("second HEAD chunk")
        elif ctype == "UTOC":
            if toc is not None:
                raise CorruptFile("second UTOC chunk")
            toc = _unpack_toc(payload, limits)
        elif ctype == "UNIT":
            if toc is None or len(units) >= len(toc):
                raise CorruptFile("UNIT chunk not announced by the UTOC table")
            size, key = toc[len(units)]
            if payload is not None and len(payload) != size:
                raise CorruptFile(f"unit {len(units)} has {len(payload)} bytes, the UTOC says {size}")
            if payload is None:
                damaged.append(len(units))
            units.append(Unit(key, payload))
        elif ctype == "NEND":
            break
        elif ctype == "meta":
            if len(payload) > limits.max_meta:
                raise LimitExceeded(f"metadata of {len(payload)} bytes is above {limits.max_meta}")
            try:
                meta = json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise CorruptFile("metadata chunk is not valid JSON") from None
        elif ctype == "name":
            name = payload.decode("utf-8", errors="replace")
        elif ctype == "inam" and header is not None:
            names = _unpack_names(payload, header.items)
        elif ctype[0].isupper():
            raise CorruptFile(f"unknown critical chunk {ctype}: written by a newer ncodec? upgrade ncodec")
        else:
            extra.append((ctype, payload))
    if toc is None:
        raise CorruptFile("no UTOC chunk")
    if len(units) != len(toc):
        raise CorruptFile(f"UTOC lists {len(toc)} units but the file holds {len(units)}")
    return NcFile(header, units, meta, name, extra, damaged, names)


def _unpack_names(payload: bytes, items: int) -> list[str] | None:
    """Item names; a damaged or inconsistent table is dropped (ancillary data never stops a decode)."""
    try:
        if payload[:1] == b"\x01":
            d = zlib.decompressobj()
            payload = d.decompress(payload[1:], 1 << 24)  # bounded: a zip bomb cannot allocate more
            if d.unconsumed_tail or not d.eof:
                return None
        elif payload[:1] == b"\x00":
            payload = payload[1:]
        else:
            return None
        cur = _Cursor(payload, "inam")
        n = cur.varint()
        if n != items:
            return None
        names = []
        for _ in range(n):
            names.append(cur.take(cur.varint()).decode("utf-8", errors="replace"))
        cur.done()
        return names
    except (CorruptFile, zlib.error):
        return None


def _unpack_toc(payload: bytes, limits: Limits) -> list[tuple[int, tuple[int, int, int, int]]]:
    c = _Cursor(payload, "UTOC")
    n = c.varint()
    if n > limits.max_units:
        raise LimitExceeded(f"{n} units is above the limit of {limits.max_units}")
    if n > len(payload):  # each entry takes at least 5 bytes: refuse before allocating
        raise CorruptFile(f"UTOC claims {n} units in {len(payload)} bytes; the file is damaged")
    toc = []
    for _ in range(n):
        size = c.varint()
        toc.append((size, (c.varint(), c.varint(), c.varint(), c.varint())))
    c.done()
    return toc
