"""Official .cod files byte for byte: expected bytes written out by hand from the official format
(``<H`` ``<H`` then the indices MSB first, raster order)."""
import numpy as np
import pytest

from cod_fast import BitstreamError
from cod_fast.compat import indices_bytes, pack_bits, read_cod, token_grid, unpack_bits, write_cod


def test_pack_bits_4bit_by_hand() -> None:
    # 0x1, 0x2, 0xF, 0x0, 0xA -> nibbles 1 2 | F 0 | A (pad 0)
    assert pack_bits(np.array([1, 2, 15, 0, 10]), 4) == bytes([0x12, 0xF0, 0xA0])
    assert unpack_bits(bytes([0x12, 0xF0, 0xA0]), 5, 4).tolist() == [1, 2, 15, 0, 10]


def test_pack_bits_odd_widths_by_hand() -> None:
    # 3-bit values 5 (101), 3 (011), 7 (111) -> 101 011 11|1 0000000
    assert pack_bits(np.array([5, 3, 7]), 3) == bytes([0b10101111, 0b10000000])
    # 8-bit codebook: one byte per index
    assert pack_bits(np.array([0, 255, 17]), 8) == bytes([0, 255, 17])
    # 10-bit: 0x3FF, 0x001 -> 11111111 11000000 0001(0000)
    assert pack_bits(np.array([1023, 1]), 10) == bytes([0xFF, 0xC0, 0x10])


@pytest.mark.parametrize("bits", [1, 3, 4, 5, 8, 11, 16])
def test_pack_unpack_round_trip(bits: int) -> None:
    rng = np.random.default_rng(bits)
    idx = rng.integers(0, 1 << bits, size=77)
    packed = pack_bits(idx, bits)
    assert len(packed) == (77 * bits + 7) // 8
    assert unpack_bits(packed, 77, bits).tolist() == idx.tolist()


def test_pack_bits_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pack_bits(np.array([16]), 4)
    with pytest.raises(ValueError):
        pack_bits(np.array([-1]), 4)
    with pytest.raises(ValueError):
        pack_bits(np.zeros((2, 2), dtype=np.int64), 4)
    with pytest.raises(BitstreamError):
        unpack_bits(b"\x00", 3, 4)


def test_official_cod_writer_bytes_non_square() -> None:
    # official CoD: write_cod_file(bitstream, H, W) with params (width, height) -> H first.
    # 64 rows x 96 cols at s=32 -> 2x3 tokens -> 24 bits -> 3 bytes
    payload = pack_bits(np.array([0, 1, 2, 3, 4, 5]), 4)
    assert payload == bytes([0x01, 0x23, 0x45])
    expected = bytes([64, 0, 96, 0, 0x01, 0x23, 0x45])  # <H 64, <H 96, then payload
    data = write_cod(None, payload, height=64, width=96, layout="cod")
    assert data == expected
    cod = read_cod(expected, layout="cod", ds=32, up2x=True, codebook_bits=4)
    assert (cod.height, cod.width) == (64, 96)
    assert cod.indices(32, True, 4).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_official_cod_lite_writer_bytes_non_square() -> None:
    # official CoD-Lite one-step: write_cod_file(bitstream, W, H) -> W first
    payload = bytes([0x01, 0x23, 0x45])
    expected = bytes([96, 0, 64, 0]) + payload
    assert write_cod(None, payload, height=64, width=96, layout="cod_lite") == expected
    cod = read_cod(expected, layout="cod_lite", ds=32, up2x=True, codebook_bits=4)
    assert (cod.height, cod.width) == (64, 96)


def test_official_square_kodak_size(tmp_path) -> None:
    # 512x512, 4 bits, ds 32 -> 16x16 tokens -> 128 bytes; both layouts give the same bytes
    idx = np.arange(256) % 16
    payload = pack_bits(idx, 4)
    assert len(payload) == 128 == indices_bytes(512, 512, 32, True, 4)
    assert payload[:2] == bytes([0x01, 0x23])
    p = tmp_path / "kodim.png.cod"
    data = write_cod(p, payload, 512, 512)
    assert p.read_bytes() == data == bytes([0, 2, 0, 2]) + payload
    assert write_cod(None, payload, 512, 512, layout="cod_lite") == data
    cod = read_cod(p)
    assert (cod.height, cod.width) == (512, 512) and cod.payload == payload


def test_token_grid_without_up2x() -> None:
    assert token_grid(512, 256, 32, False) == (32, 16)
    assert token_grid(512, 256, 128, True) == (4, 2)


def test_read_cod_rejects_bad_files(tmp_path) -> None:
    with pytest.raises(BitstreamError):
        read_cod(b"\x00\x02")
    with pytest.raises(BitstreamError):
        read_cod(bytes([0, 0, 0, 2]))  # zero height
    with pytest.raises(BitstreamError, match="needs 128"):
        read_cod(bytes([0, 2, 0, 2]) + bytes(127), ds=32, codebook_bits=4)
    with pytest.raises(BitstreamError, match="smaller than one token"):
        read_cod(bytes([8, 0, 8, 0]), ds=32, codebook_bits=4)
    with pytest.raises(ValueError):
        read_cod(b"\x00" * 8, layout="wh")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        write_cod(None, b"", 70000, 1)
