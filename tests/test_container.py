import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from ncodec.container import Header, Limits, MediaKind, RateKind, Unit, read, read_header, write
from ncodec.errors import CorruptFile, LimitExceeded, NcodecError, UnsupportedVersion


def make(units=((0, 0, 64, 64, b"payload"),), **kw):
    h = Header(MediaKind.IMAGE, "walloc", 1, (64, 64, 3), "walloc-image-v1", b"\x01" * 8, RateKind.QUALITY,
               42.5, colour=2, params=b"\x00\x04", **kw)
    return h, [Unit(u[:4], u[4]) for u in units]


def test_round_trip_fields():
    h, units = make()
    data = write(h, units, meta={"a": 1}, name="x.png", ancillary=[("zzzz", b"skip me")])
    f = read(data)
    assert f.header == h
    assert f.units == units
    assert f.meta == {"a": 1} and f.name == "x.png"
    assert f.ancillary == [("zzzz", b"skip me")]
    assert read_header(data) == h


def test_overhead_is_small():
    h, units = make(units=((0, 0, 64, 64, b""),))
    assert len(write(h, units)) < 128  # signature + 4 chunks + header fields


unit_st = st.tuples(st.integers(0, 2**40), st.integers(0, 2**20), st.integers(0, 5000), st.integers(0, 5000),
                    st.binary(max_size=300))


@settings(max_examples=200, deadline=None)
@given(units=st.lists(unit_st, max_size=12), meta=st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
       extra=st.lists(st.tuples(st.sampled_from(["abcd", "zxyw", "qqqq"]), st.binary(max_size=50)), max_size=3),
       rate=st.floats(width=32, allow_nan=False), params=st.binary(max_size=40))
def test_random_layouts_round_trip(units, meta, extra, rate, params):
    h, us = make(units)
    h.rate_value, h.params = rate, params
    f = read(write(h, us, meta=meta, ancillary=extra))
    assert f.header == h and f.units == us and f.meta == meta and f.ancillary == extra


def test_every_single_bit_flip_is_an_error():
    h, units = make(units=((0, 0, 32, 32, b"abcdefgh"), (0, 32, 32, 32, b"ijkl")))
    data = write(h, units, meta={"q": 1}, name="n")
    for bit in range(len(data) * 8):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(NcodecError):
            read(bytes(bad))


def test_truncations_and_garbage_give_clean_errors():
    h, units = make()
    data = write(h, units)
    for n in range(len(data)):
        with pytest.raises(CorruptFile):
            read(data[:n])
    import random

    rng = random.Random(1)
    for _ in range(500):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        with pytest.raises(NcodecError):
            read(blob)
        with pytest.raises(NcodecError):
            read(data[:8] + blob)


def _with_head(payload_patch):
    """Rebuild a file whose HEAD payload went through ``payload_patch`` (CRC recomputed)."""
    h, units = make()
    data = write(h, units)
    length = struct.unpack_from("<I", data, 8)[0]
    payload = payload_patch(bytearray(data[16 : 16 + length]))
    chunk = struct.pack("<I", len(payload)) + b"HEAD" + payload + struct.pack("<I", zlib.crc32(b"HEAD" + payload))
    return data[:8] + chunk + data[16 + length + 4 :]


def test_huge_dimensions_refused_before_allocating():
    h, units = make()
    h.shape = (10**6, 10**6, 3)  # 10^12 pixels
    data = write(h, units)
    with pytest.raises(LimitExceeded):
        read(data)
    h.shape = (1000, 1000, 3)
    with pytest.raises(LimitExceeded):
        read(write(h, units), limits=Limits(max_pixels=10**5))


def test_huge_unit_count_refused():
    h, units = make()
    data = bytearray(write(h, units))
    # hand-build a UTOC claiming 2**40 units
    toc = bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x20])
    start = data.index(b"UTOC") - 4
    length = struct.unpack_from("<I", data, start)[0]
    new = struct.pack("<I", len(toc)) + b"UTOC" + toc + struct.pack("<I", zlib.crc32(b"UTOC" + toc))
    data = bytes(data[:start]) + new + bytes(data[start + 12 + length :])
    with pytest.raises(LimitExceeded):
        read(data)


def test_versions():
    def major(p):
        p[0] = 2
        return p

    def minor(p):
        p[1] = 9
        return p

    with pytest.raises(UnsupportedVersion, match="upgrade"):
        read(_with_head(major))
    assert read(_with_head(minor)).header.format_minor == 9


def test_unknown_critical_chunk_is_an_error_ancillary_is_skipped():
    h, units = make()
    data = write(h, units)
    end = data.index(b"NEND") - 4

    def chunk(t, p):
        return struct.pack("<I", len(p)) + t + p + struct.pack("<I", zlib.crc32(t + p))

    with pytest.raises(CorruptFile, match="critical"):
        read(data[:end] + chunk(b"XTRA", b"1") + data[end:])
    h2, u2 = make()
    f = read(write(h2, u2, ancillary=[("qxyz", b"1")]))
    assert f.ancillary == [("qxyz", b"1")]


def test_damaged_unit_can_be_skipped_when_lenient():
    h, units = make(units=((0, 0, 8, 8, b"first unit"), (0, 8, 8, 8, b"second unit")))
    data = bytearray(write(h, units))
    data[data.index(b"first unit")] ^= 0xFF
    with pytest.raises(CorruptFile, match="CRC"):
        read(bytes(data))
    f = read(bytes(data), strict=False)
    assert f.damaged == [0] and f.units[0].data is None and f.units[1].data == b"second unit"


def test_text_mode_corruption_named():
    h, units = make()
    data = write(h, units)
    with pytest.raises(CorruptFile, match="text mode"):
        read(data.replace(b"\r\n", b"\n", 1))


def test_errors_are_also_builtins():
    assert issubclass(CorruptFile, ValueError) and issubclass(LimitExceeded, ValueError)
