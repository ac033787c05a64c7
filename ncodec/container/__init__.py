"""The .nc container (stdlib only): signature, typed CRC-checked chunks, a core header, a unit table.

See bitstreams/FORMAT.md for the byte-level specification.
"""
from .format import (
    FORMAT_MAJOR, FORMAT_MINOR, SIGNATURE, Header, Limits, MediaKind, NcFile, RateKind, Unit, read, read_header,
    write,
)

__all__ = ["FORMAT_MAJOR", "FORMAT_MINOR", "SIGNATURE", "Header", "Limits", "MediaKind", "NcFile", "RateKind",
           "Unit", "read", "read_header", "write"]
