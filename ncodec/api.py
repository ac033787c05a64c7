"""The Python API: encode / decode / info, usable without the CLI."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import container
from .errors import BadInput
from .registry import DEFAULTS, get_codec_class

_CODECS: dict[str, object] = {}


def _codec(codec_id: str):
    if codec_id not in _CODECS:
        _CODECS[codec_id] = get_codec_class(codec_id)()
    return _CODECS[codec_id]


@dataclass
class Info:
    """What a file's header says (no decoding). Mirrors ``ncodec info --json``."""

    media: str
    codec: str
    codec_version: int
    model: str
    weights_sha256_prefix: str
    format_version: str
    shape: tuple
    rate_kind: str
    rate_value: float
    file_bytes: int
    units: int
    items: int
    sample_rate: int | None = None
    bpp: float | None = None
    kbps: float | None = None
    name: str | None = None
    meta: dict = field(default_factory=dict)
    names: list[str] | None = None  # item names of a multi-item file

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class Decoded:
    data: np.ndarray  # image: uint8 (H, W, 3); audio: float32 (frames, channels); video: uint8 (T, H, W, 3)
    info: Info

    @property
    def sample_rate(self) -> int | None:
        return self.info.sample_rate


def _read_bytes(src) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    path = Path(os.fspath(src))
    try:
        size = path.stat().st_size
        if size > (4 << 30):
            raise BadInput(f"{path} is {size} bytes, above the 4 GiB limit for .nc files")
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None


def _info(f: container.NcFile, size: int) -> Info:
    h = f.header
    media = h.media.name.lower()
    bpp = kbps = None
    if media == "image":
        pixels = h.shape[0] * h.shape[1] * max(h.items, 1)
        if h.codec_id == "pc" and h.colour == 2:  # pc image sets: items of any size, (item, H, W, grey) keys
            pixels = sum(u.key[1] * u.key[2] for u in f.units) or pixels
        bpp = 8 * size / pixels
    elif media == "video":
        bpp = 8 * size / (h.shape[0] * h.shape[1] * h.shape[2])
        if h.rate_num and h.rate_den:
            kbps = 8 * size / (h.shape[0] * h.rate_den / h.rate_num) / 1000
    elif media == "audio" and h.rate_num:
        seconds = h.shape[0] / h.rate_num
        kbps = 8 * size / seconds / 1000 if seconds else None
    return Info(media, h.codec_id, h.codec_version, h.model_id, h.weights_hash.hex(),
                f"{h.format_major}.{h.format_minor}", tuple(h.shape), h.rate_kind.name.lower(), h.rate_value,
                size, len(f.units), h.items, h.rate_num if media == "audio" else None, bpp, kbps, f.name, f.meta, f.names)


def info(src) -> Info:
    """Header information of a .nc file (path or bytes)."""
    data = _read_bytes(src)
    return _info(container.read(data), len(data))


def encode(src, codec: str | None = None, quality: float | None = None, bpp: float | None = None,
           bitrate: float | None = None, media: str | None = None, sample_rate: int | None = None,
           name: str | None = None, meta: dict | None = None, frames: tuple[int, int | None] | None = None,
           fps: float = 25.0, options: dict | None = None) -> bytes:
    """Encode a media file path, its bytes, or an array (uint8 HxWx3 image, float audio with ``sample_rate``,
    or uint8 (frames, H, W, 3) video with ``media="video"``) into .nc bytes. Give at most one of quality / bpp /
    bitrate (kbps). Video: a file PyAV reads or a folder of frames; ``frames=(a, b)`` encodes only that range
    (``fps`` for folders and arrays); ``options`` go to the codec (video: ``time_budget`` seconds,
    ``progress`` callback, ``checkpoint`` folder for a resumable encode, ``plus`` for NeRV++ blocks; rvq:
    ``model`` id, e.g. a converted EnCodec checkpoint; vqgan: ``redundancy=K``, every index's cluster among K
    codewords coded again in units of their own, for recovery, and ``search="ms-ssim"`` (or ``"mse"``), indices
    chosen by the decoded image instead of the nearest codeword (slow); mcquic: ``beam`` paths of the encoder's index
    search, default 4, 1 = greedy and ~3x faster). An option the codec does not take is an error."""
    from .codecs.base import Rate
    from .media import detect_media, read_image
    from .media.audio import ArraySource, FileSource

    if sum(v is not None for v in (quality, bpp, bitrate)) > 1:
        raise BadInput("give at most one of quality, bpp and bitrate")
    if media == "video" or (media is None and not isinstance(src, (np.ndarray, bytes, bytearray))
                            and (Path(os.fspath(src)).is_dir() or _is_video_name(src))):
        from .media.video import open_source

        media = "video"
        if not isinstance(src, np.ndarray):
            name = name or Path(os.fspath(src)).name
        arr = open_source(src, frames, fps)
    elif isinstance(src, np.ndarray):
        arr = src
        media = media or ("audio" if sample_rate else "image")
        if media == "audio":
            if not sample_rate:
                raise BadInput("an audio array needs sample_rate")
            arr = ArraySource(arr, sample_rate)
    else:
        if not isinstance(src, (bytes, bytearray)):
            name = name or Path(os.fspath(src)).name
        raw = bytes(src) if isinstance(src, (bytes, bytearray)) else None
        if raw is not None and not raw:
            raise BadInput("the input is empty")
        media = media or detect_media(name or "", raw[:16] if raw is not None else _head(src))
        if media == "image":
            arr = read_image(raw if raw is not None else src, exact=bool(codec and _codec(codec).lossless))
        else:  # read piece by piece from the file: long audio never sits in memory whole
            import io

            arr = FileSource(io.BytesIO(raw) if raw is not None else src)
    codec_id = codec or DEFAULTS.get(media)
    if codec_id is None:
        raise BadInput(f"no codec for {media}")
    cdc = _codec(codec_id)
    if options:
        import inspect

        accepted = inspect.signature(cdc.encode).parameters
        if options.get("model") is not None and "model" not in accepted:
            raise BadInput(f"codec {codec_id!r} does not take a model choice; `ncodec list` shows the models")
        if options.get("redundancy") is not None and "redundancy" not in accepted:
            raise BadInput(f"codec {codec_id!r} has no redundancy option (vqgan has)")
        named = [k for k, v in accepted.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
        unknown = sorted(k for k, v in options.items() if v is not None and k not in named)
        if unknown:
            raise BadInput(f"codec {codec_id!r} has no option {unknown[0]!r}")

    def final(rate: Rate) -> bytes:
        enc = cdc.encode(arr, media, rate, **(options or {}))
        extra = dict(meta or {})
        extra.update(enc.achieved)
        return container.write(enc.header, enc.units, meta=extra or None, name=name)

    target = bpp if bpp is not None else bitrate
    if target is None or not getattr(cdc, "quality_search", False):
        return final(Rate(quality, bpp, bitrate))
    return _search_quality(final, target, "bpp" if bpp is not None else "kbps")


def _is_video_name(src) -> bool:
    from .media.video import VIDEO_EXT

    return Path(os.fspath(src)).suffix.lower() in VIDEO_EXT


def _rate_of(blob: bytes, unit: str) -> float:
    h = container.read_header(blob)
    if unit == "bpp":
        return 8 * len(blob) / (h.shape[0] * h.shape[1])
    return 8 * len(blob) / (h.shape[0] / h.rate_num) / 1000


def _search_quality(final, target: float, unit: str) -> bytes:
    """Largest quality (0..100) whose whole file, header and metadata included, fits ``target``."""
    from .codecs.base import Rate

    if not target > 0:
        raise BadInput(f"target {unit} must be > 0, got {target}")
    lo = final(Rate(quality=0.0))
    if _rate_of(lo, unit) > target:
        raise BadInput(f"even the lowest quality needs {_rate_of(lo, unit):.4g} {unit}, above the target {target}")
    hi = final(Rate(quality=100.0))
    if _rate_of(hi, unit) <= target:
        return hi
    qlo, qhi, best = 0.0, 100.0, lo
    for _ in range(8):
        mid = (qlo + qhi) / 2
        blob = final(Rate(quality=mid))
        if _rate_of(blob, unit) <= target:
            qlo, best = mid, blob
        else:
            qhi = mid
    return best


def _head(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None


def encode_items(srcs, codec: str = "pc", names: list[str] | None = None, meta: dict | None = None,
                 model: str | None = None) -> bytes:
    """Encode many same-kind images (paths, bytes or uint8 arrays) into one multi-item .nc file.

    Names default to the input file names (``item00000`` ... for arrays and bytes). The codec must accept
    several items (``ncodec list`` shows which do). ``model``: an installed model id (default: the codec's choice).
    """
    from .codecs.base import Rate
    from .media import read_image

    srcs = list(srcs)
    if not srcs:
        raise BadInput("no items to encode")
    cdc = _codec(codec)
    if not getattr(cdc, "multi_item", False):
        raise BadInput(f"codec {codec!r} stores one item per file; multi-item files need e.g. --codec pc")
    arrays, auto = [], []
    for i, s in enumerate(srcs):
        if isinstance(s, np.ndarray):
            arrays.append(s)
            auto.append(f"item{i:05d}")
        elif isinstance(s, (bytes, bytearray)):
            arrays.append(read_image(bytes(s), exact=cdc.lossless))
            auto.append(f"item{i:05d}")
        else:
            arrays.append(read_image(s, exact=cdc.lossless))
            auto.append(Path(os.fspath(s)).name)
    names = list(names) if names is not None else auto
    if len(names) != len(arrays):
        raise BadInput(f"{len(names)} names for {len(arrays)} items")
    enc = cdc.encode(arrays, "image", Rate(), **({"model": model} if model is not None else {}))
    return container.write(enc.header, enc.units, meta=meta or None, names=names)


def decode_items(src, items: list[int] | None = None, strict: bool = True) -> list[tuple[str, np.ndarray]]:
    """(name, image) of every item of a file, or only of ``items`` (indices): random access decodes only
    the units that hold them. Works on single-item files too."""
    data = _read_bytes(src)
    f = container.read(data, strict=strict)
    cdc = _codec(f.header.codec_id)
    n = f.header.items
    names = f.names or [f"item{i:05d}" for i in range(n)]
    idx = list(range(n)) if items is None else [int(i) for i in items]
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise BadInput(f"item {bad[0]} is out of range: the file holds {n} item(s)")
    if hasattr(cdc, "decode_items"):
        arrays = cdc.decode_items(f.header, f.units, sorted(set(idx)))
        by_index = dict(zip(sorted(set(idx)), arrays))
        return [(names[i], by_index[i]) for i in idx]
    if n != 1:
        raise BadInput(f"codec {f.header.codec_id!r} cannot decode multi-item files")
    arr = cdc.decode(f.header, f.units)
    return [(names[0] if f.names else (f.name or "item00000"), arr) for _ in idx]


def _decode_options(codec, options: dict) -> dict:
    """Codec-specific decode options (e.g. vqgan's ``drop_indices``, ``seed``), checked against the codec."""
    options = {k: v for k, v in options.items() if v is not None}
    allowed = getattr(codec, "decode_options", ())
    bad = [k for k in options if k not in allowed]
    if bad:
        raise BadInput(f"decode option {bad[0].replace('_', '-')} does not apply to {codec.codec_id} files")
    return options


def decode(src, strict: bool = True, **options) -> Decoded:
    """Decode .nc bytes or a path. ``strict=False`` decodes around damaged units instead of failing. Codec
    options: vqgan ``drop_indices=F, seed=S`` drops a fraction F of the indices before recovery."""
    data = _read_bytes(src)
    f = container.read(data, strict=strict)
    codec = _codec(f.header.codec_id)
    arr = codec.decode(f.header, f.units, **_decode_options(codec, options))
    return Decoded(arr, _info(f, len(data)))


def decode_to(src, out, fmt: str, strict: bool = True, **options) -> Info:
    """Decode into a writable binary file object in format ``fmt`` (PNG, WAV, FLAC, ...).

    Audio is written segment by segment, so memory stays bounded by one unit whatever the file's length.
    """
    data = _read_bytes(src)
    f = container.read(data, strict=strict)
    codec = _codec(f.header.codec_id)
    options = _decode_options(codec, options)
    inf = _info(f, len(data))
    if inf.media == "audio" and hasattr(codec, "decode_segments"):
        import soundfile as sf

        frames, channels = f.header.shape
        subtype = "PCM_16" if fmt in ("WAV", "FLAC") else None
        with sf.SoundFile(out, "w", samplerate=f.header.rate_num, channels=channels, format=fmt,
                          subtype=subtype) as sink:
            for _, block in codec.decode_segments(f.header, f.units):
                sink.write(block)
        return inf
    arr = codec.decode(f.header, f.units, **options)
    if inf.media == "image":
        from .media import write_image

        write_image(out, arr, fmt)
    else:
        from .media import write_audio

        write_audio(out, arr, f.header.rate_num, fmt)
    return inf
