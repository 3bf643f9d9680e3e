"""cod_fast.bitstream.replace_container: a container re-serialised with fields or sections replaced."""
from __future__ import annotations

import pytest

from cod_fast.bitstream import (
    Container,
    LimitExceededError,
    SectionType,
    read_container,
    replace_container,
    write_container,
)
from cod_fast.errors import BitstreamError

FP = bytes(range(16))


@pytest.fixture(scope="module")
def stream() -> bytes:
    return write_container(Container(codec_id=2, fingerprint=FP, height=40, width=64, sections={
        SectionType.INDICES: b"\x01\x02\x03", SectionType.DECODE_PARAMS: b"\x04"}))


def test_no_change_gives_the_same_bytes(stream: bytes) -> None:
    assert replace_container(stream) == stream
    assert replace_container(bytearray(stream)) == stream
    assert replace_container(memoryview(stream)) == stream


def test_fields_and_sections_replaced_rest_kept(stream: bytes) -> None:
    out = replace_container(stream, height=7, fingerprint=bytes(16),
                            sections={SectionType.INDICES: b"", SectionType.SODEC_PARAMS: b"\x09" * 5})
    c = read_container(out)  # CRCs recomputed: it parses
    assert (c.codec_id, c.fingerprint, c.height, c.width) == (2, bytes(16), 7, 64)
    assert c.sections == {SectionType.INDICES: b"", SectionType.DECODE_PARAMS: b"\x04",
                          SectionType.SODEC_PARAMS: b"\x09" * 5}
    assert read_container(replace_container(stream, codec_id=3)).codec_id == 3
    assert read_container(stream).sections[SectionType.INDICES] == b"\x01\x02\x03"  # input untouched


def test_bad_arguments_and_streams(stream: bytes) -> None:
    with pytest.raises(TypeError, match="version"):
        replace_container(stream, version=2)
    with pytest.raises(TypeError, match="unknown field"):
        replace_container(stream, colour="red")
    with pytest.raises(ValueError, match="fingerprint"):
        replace_container(stream, fingerprint=b"short")
    with pytest.raises(LimitExceededError):
        replace_container(stream, width=(1 << 15) + 1)
    with pytest.raises(ValueError, match="tag"):
        replace_container(stream, sections={300: b""})
    with pytest.raises(BitstreamError):
        replace_container(stream[:-1])
    with pytest.raises(TypeError):
        replace_container("not bytes")  # type: ignore[arg-type]
