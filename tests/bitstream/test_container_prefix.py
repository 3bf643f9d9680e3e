"""bitstream.read_container_prefix: the one truncation-tolerant container reader (DiffC's progressive
DIFFC_STEPS section); every other cut or corruption raises as read_container does."""
from __future__ import annotations

import pytest

from cod_fast.bitstream import (
    HEADER_BYTES,
    SECTION_OVERHEAD,
    ChecksumError,
    Container,
    SectionType,
    TruncatedStreamError,
    read_container,
    read_container_prefix,
    write_container,
)

FIRST = bytes(range(22))
LAST = bytes(range(200, 250)) * 3


def _stream() -> bytes:
    return write_container(Container(codec_id=4, fingerprint=bytes(range(16)), height=32, width=48,
                                     sections={SectionType.DIFFC_PARAMS: FIRST, SectionType.DIFFC_STEPS: LAST}))


def test_every_prefix() -> None:
    data = _stream()
    full, complete = read_container_prefix(data, SectionType.DIFFC_STEPS)
    assert complete and full == read_container(data)
    last_start = len(data) - len(LAST)
    assert last_start == HEADER_BYTES + 2 * SECTION_OVERHEAD + len(FIRST)
    for cut in range(len(data)):
        prefix = data[:cut]
        if cut >= last_start:
            c, complete = read_container_prefix(prefix, SectionType.DIFFC_STEPS)
            assert not complete
            assert c.sections[SectionType.DIFFC_STEPS] == LAST[: cut - last_start]
            assert c.sections[SectionType.DIFFC_PARAMS] == FIRST
            assert (c.codec_id, c.height, c.width, c.fingerprint) == (4, 32, 48, bytes(range(16)))
        else:
            with pytest.raises(TruncatedStreamError):
                read_container_prefix(prefix, SectionType.DIFFC_STEPS)
        with pytest.raises(TruncatedStreamError):
            read_container(prefix)


def test_only_the_named_last_section_may_be_cut() -> None:
    data = _stream()[:-5]
    with pytest.raises(TruncatedStreamError):
        read_container_prefix(data, SectionType.INDICES)


def test_corruption_before_the_cut_still_raises() -> None:
    data = bytearray(_stream()[:-5])
    data[HEADER_BYTES + SECTION_OVERHEAD + 3] ^= 1  # inside DIFFC_PARAMS
    with pytest.raises(ChecksumError):
        read_container_prefix(bytes(data), SectionType.DIFFC_STEPS)
