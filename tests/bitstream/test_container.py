"""Container v1: round trip, exact layout, limits, and a hypothesis fuzz of the parser."""
import struct
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cod_fast import BitstreamError
from cod_fast.bitstream import (
    HEADER_BYTES,
    MAX_IMAGE_SIDE,
    MAX_SECTION_BYTES,
    MAX_SECTIONS,
    ChecksumError,
    Container,
    DecodeParams,
    LimitExceededError,
    SectionType,
    TruncatedStreamError,
    UnsupportedVersionError,
    compute_fingerprint,
    pack_indices_section,
    read_container,
    read_header,
    unpack_indices_section,
    write_container,
)

FP = bytes(range(16))


def _sample() -> bytes:
    return write_container(Container(
        codec_id=1, fingerprint=FP, height=37, width=100,
        sections={
            SectionType.INDICES: pack_indices_section(bytes([0xAB, 0xCD, 0xE0]), 4, 1, 5),
            SectionType.DECODE_PARAMS: DecodeParams("adam2", 25, 3.0, 7, 0.0).to_bytes(),
        }))


VALID = _sample()


def _reheader(data: bytes, **fields: int) -> bytes:
    """Rewrite header fields and fix the header CRC, to reach the checks behind the CRC."""
    names = ["magic", "version", "codec", "flags", "fp", "h", "w", "ch", "count"]
    vals = dict(zip(names, struct.unpack_from("<4sBBH16sIIBB", data)))
    vals.update(fields)
    head = struct.pack("<4sBBH16sIIBB", *[vals[n] for n in names])
    return head + struct.pack("<I", zlib.crc32(head)) + data[HEADER_BYTES:]


def test_round_trip() -> None:
    c = read_container(VALID)
    assert (c.codec_id, c.fingerprint, c.height, c.width, c.channels) == (1, FP, 37, 100, 3)
    assert unpack_indices_section(c.section(SectionType.INDICES)) == (4, 1, 5, bytes([0xAB, 0xCD, 0xE0]))
    p = DecodeParams.from_bytes(c.section(SectionType.DECODE_PARAMS))
    assert p == DecodeParams("adam2", 25, 3.0, 7, 0.0)
    assert write_container(c) == VALID
    assert read_header(VALID).sections == {}


def test_exact_layout() -> None:
    # header fields at the documented offsets
    assert VALID[:4] == b"CODF" and VALID[4] == 1 and VALID[5] == 1
    assert VALID[6:8] == b"\0\0" and VALID[8:24] == FP
    assert struct.unpack_from("<IIBB", VALID, 24) == (37, 100, 3, 2)
    assert struct.unpack_from("<I", VALID, 34)[0] == zlib.crc32(VALID[:34])
    # first section: INDICES (tag 1), length 5+3, CRC over tag+length+payload
    tag, length, crc = struct.unpack_from("<BII", VALID, 38)
    payload = VALID[47:47 + length]
    assert (tag, length) == (1, 8)
    assert payload == bytes([4, 1, 0, 5, 0, 0xAB, 0xCD, 0xE0])
    assert crc == zlib.crc32(VALID[38:43] + payload)
    assert len(VALID) == 38 + 9 + 8 + 9 + 19


def test_future_version_names_supported() -> None:
    bad = VALID[:4] + bytes([2]) + VALID[5:]
    with pytest.raises(UnsupportedVersionError, match=r"version 2 .*reads versions 1"):
        read_container(bad)


@pytest.mark.parametrize("field,value,exc", [
    ("h", MAX_IMAGE_SIDE + 1, LimitExceededError),
    ("w", 0, LimitExceededError),
    ("h", 0xFFFFFFFF, LimitExceededError),
    ("count", MAX_SECTIONS + 1, LimitExceededError),
    ("count", 255, LimitExceededError),
    ("ch", 4, BitstreamError),
    ("flags", 1, BitstreamError),
    ("codec", 0, BitstreamError),
    ("count", 3, TruncatedStreamError),
    ("count", 1, BitstreamError),  # trailing bytes
])
def test_header_limits(field: str, value: int, exc: type) -> None:
    with pytest.raises(exc):
        read_container(_reheader(VALID, **{field: value}))


def test_huge_section_length_rejected_before_allocation() -> None:
    # a section head announcing 4 GiB, with a correct header CRC and only a few bytes behind it
    head = VALID[:HEADER_BYTES]
    for length, exc in ((0xFFFFFFFF, LimitExceededError), (MAX_SECTION_BYTES, TruncatedStreamError)):
        sh = struct.pack("<BI", 1, length)
        data = _reheader(head + sh + struct.pack("<I", 0) + b"xyz", count=1)
        with pytest.raises(exc):
            read_container(data)


def test_duplicate_and_zero_tags() -> None:
    def section(tag: int, payload: bytes) -> bytes:
        sh = struct.pack("<BI", tag, len(payload))
        return sh + struct.pack("<I", zlib.crc32(payload, zlib.crc32(sh))) + payload

    base = VALID[:HEADER_BYTES]
    with pytest.raises(BitstreamError, match="twice"):
        read_container(_reheader(base + section(5, b"a") + section(5, b"b"), count=2))
    with pytest.raises(BitstreamError, match="reserved"):
        read_container(_reheader(base + section(0, b"a"), count=1))


def test_missing_section_and_bad_payloads() -> None:
    c = read_container(_reheader(VALID[:HEADER_BYTES], count=0))
    with pytest.raises(BitstreamError, match="INDICES"):
        c.section(SectionType.INDICES)
    with pytest.raises(BitstreamError):
        unpack_indices_section(bytes([4, 2, 0, 2, 0, 0xFF]))  # 2x2x4 bits need 2 bytes
    with pytest.raises(BitstreamError):
        unpack_indices_section(bytes([0, 1, 0, 1, 0, 0]))  # 0-bit codebook
    with pytest.raises(BitstreamError):
        DecodeParams.from_bytes(struct.pack("<BHfQf", 9, 1, 1.0, 0, 0.0))
    with pytest.raises(BitstreamError):
        DecodeParams.from_bytes(struct.pack("<BHfQf", 1, 1, float("nan"), 0, 0.0))


def test_writer_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        write_container(Container(codec_id=1, fingerprint=b"short", height=1, width=1))
    with pytest.raises(ValueError):
        write_container(Container(codec_id=1, fingerprint=FP, height=0, width=1))
    with pytest.raises(ValueError):
        DecodeParams(sampler="ddim").to_bytes()
    with pytest.raises(TypeError):
        read_container("not bytes")  # type: ignore[arg-type]


def test_corruption_is_a_checksum_error() -> None:
    for pos in (10, 30, len(VALID) - 1, 50):  # header fields, last payload byte, first payload
        bad = bytearray(VALID)
        bad[pos] ^= 0x10
        with pytest.raises(ChecksumError):
            read_container(bytes(bad))


def test_every_truncation_and_bit_flip_is_a_bitstream_error() -> None:
    for cut in range(len(VALID)):
        with pytest.raises(BitstreamError):
            read_container(VALID[:cut])
    for bit in range(len(VALID) * 8):
        flipped = bytearray(VALID)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BitstreamError):
            read_container(bytes(flipped))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    for candidate in (data, b"CODF\x01" + data, VALID[:HEADER_BYTES] + data):
        try:
            read_container(candidate)
        except BitstreamError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_byte_edits(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, val in edits:
        data[pos] = val
    if bytes(data) == VALID:
        return
    with pytest.raises(BitstreamError):
        read_container(bytes(data))


def test_fingerprint_definition() -> None:
    sd = {"b": torch.arange(3, dtype=torch.int16), "a": torch.ones(2, 2)}
    cfg = {"x": 1, "arch": "t"}
    fp = compute_fingerprint(cfg, sd)
    assert len(fp) == 16
    assert compute_fingerprint(dict(reversed(list(cfg.items()))), dict(reversed(list(sd.items())))) == fp
    assert compute_fingerprint(cfg, {**sd, "a": torch.ones(2, 2, dtype=torch.float64)}) != fp
    assert compute_fingerprint(cfg, {**sd, "a": torch.ones(4)}) != fp
    assert compute_fingerprint({**cfg, "x": 2}, sd) != fp
    sd2 = {**sd, "a": sd["a"].clone()}
    sd2["a"][0, 0] = 1.0000001
    assert compute_fingerprint(cfg, sd2) != fp
