"""Entropy coding on constriction: integer frequency tables, grouped coding, weights, FIFO coding."""
from .tables import TableSet, quantize_pmf, gaussian_tables
from .coding import (
    decode_indexed,
    decode_ints,
    decode_sequence,
    encode_indexed,
    encode_ints,
    encode_sequence,
    cross_entropy_bits,
)

__all__ = [
    "TableSet", "quantize_pmf", "gaussian_tables", "encode_indexed", "decode_indexed", "encode_ints",
    "decode_ints", "encode_sequence", "decode_sequence", "cross_entropy_bits",
]
