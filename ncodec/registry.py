"""Stable codec ids -> codec classes.

Ids are written into files and never change or get reused. The table below names the module that defines
each id, so looking a codec up imports only that module (torch stays unloaded for `ncodec --help`); the
module registers its class with :func:`register_codec` when imported.
"""
from __future__ import annotations

import importlib

from .errors import UnknownCodec

# id -> module. Adding a codec: one module under ncodec/codecs/ plus one line here.
CODEC_MODULES: dict[str, str] = {
    "walloc": "ncodec.codecs.walloc",
    "pc": "ncodec.codecs.pc",
    "rvq": "ncodec.codecs.rvq",
    "nerv": "ncodec.codecs.nerv",
    "nirvana": "ncodec.codecs.nerv",
    "mcquic": "ncodec.codecs.mcquic",
    "vqgan": "ncodec.codecs.vqgan",
}

# media kind -> default codec id
DEFAULTS: dict[str, str] = {"image": "walloc", "audio": "walloc", "video": "nirvana"}

_CLASSES: dict[str, type] = {}


def register_codec(codec_id: str):
    """Class decorator: ``@register_codec("walloc")``. Returns the class unchanged."""

    def deco(cls):
        if codec_id in _CLASSES and _CLASSES[codec_id] is not cls:
            raise ValueError(f"codec id {codec_id!r} is already registered to {_CLASSES[codec_id].__name__}")
        cls.codec_id = codec_id
        _CLASSES[codec_id] = cls
        return cls

    return deco


def codec_ids() -> list[str]:
    return sorted(CODEC_MODULES)


def get_codec_class(codec_id: str) -> type:
    if codec_id not in _CLASSES:
        module = CODEC_MODULES.get(codec_id)
        if module is None:
            raise UnknownCodec(f"unknown codec {codec_id!r}; available: {', '.join(codec_ids())}")
        importlib.import_module(module)
    return _CLASSES[codec_id]
