"""CoD condition codec: index packing, VQ, Encoder/Decoder against official goldens, errors."""
from __future__ import annotations

import json

import pytest
import torch
from cod_golden_utils import DATA_DIR, assert_close_fp32, key_shapes, load_golden
from tiny_models import (
    CODEC_VARIANTS,
    build_seeded,
    fan_in_state_dict,
    seeded_images,
)

from cod_fast.errors import BitstreamError
from cod_fast.models.cod import Codec, VectorQuantizer, pack_bits, unpack_bits
from cod_fast.models.cod.packing import packed_size

# ---------------------------------------------------------------------------------------------
# packing
# ---------------------------------------------------------------------------------------------


def test_pack_bits_msb_first_known_bytes() -> None:
    assert pack_bits(torch.tensor([1, 2, 15, 0]), 4) == bytes([0x12, 0xF0])
    # 3-bit codes 101 011 -> 1010 1100 (zero padding at the end)
    assert pack_bits(torch.tensor([5, 3]), 3) == bytes([0xAC])
    assert pack_bits(torch.tensor([0x1AB]), 9) == bytes([0xD5, 0x80])
    assert pack_bits(torch.tensor([], dtype=torch.int64), 4) == b""


@pytest.mark.parametrize("bits", [1, 3, 4, 7, 8, 11, 16])
@pytest.mark.parametrize("n", [1, 5, 16, 33])
def test_pack_unpack_round_trip(bits: int, n: int) -> None:
    gen = torch.Generator().manual_seed(bits * 100 + n)
    idx = torch.randint(0, 2 ** bits, (n,), generator=gen)
    data = pack_bits(idx, bits)
    assert len(data) == packed_size(n, bits) == (n * bits + 7) // 8
    assert torch.equal(unpack_bits(data, n, bits), idx)
    assert torch.equal(unpack_bits(list(data), n, bits), idx)  # official readers pass a list


def test_pack_bits_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([16]), 4)
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([-1]), 4)
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([[1, 2]]), 4)
    with pytest.raises(TypeError):
        pack_bits(torch.tensor([1.0]), 4)
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([1]), 0)


def test_unpack_bits_rejects_bad_streams() -> None:
    with pytest.raises(BitstreamError):
        unpack_bits(bytes([0x12]), 4, 4)  # too short
    with pytest.raises(BitstreamError):
        unpack_bits(bytes([0x12, 0x34, 0x00]), 4, 4)  # too long
    with pytest.raises(BitstreamError):
        unpack_bits(bytes([0xA1]), 2, 3)  # padding bits 01 are not zero
    with pytest.raises(BitstreamError):
        unpack_bits([1, 300], 4, 4)


# ---------------------------------------------------------------------------------------------
# VQ
# ---------------------------------------------------------------------------------------------


def test_vq_nearest_raster_order_and_codebook_lookup() -> None:
    vq = VectorQuantizer(16, 8, 0.25)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.randn(16, 8, generator=gen))
    z = torch.randn(2, 8, 3, 5, generator=gen)
    z_q, loss, idx = vq(z)
    assert idx.shape == (2 * 3 * 5,) and idx.dtype == torch.int64
    w = vq.embedding.weight
    for b in range(2):
        for r in range(3):
            for c in range(5):
                expect = torch.argmin(((w - z[b, :, r, c]) ** 2).sum(1))
                assert idx[b * 15 + r * 5 + c] == expect
    torch.testing.assert_close(z_q, vq.get_codebook_entry(idx, (3, 5)), rtol=0, atol=1e-6)
    assert loss.ndim == 0 and loss > 0


# ---------------------------------------------------------------------------------------------
# Codec against the official goldens
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(CODEC_VARIANTS))
def test_codec_state_dict_keys_match_official(variant: str) -> None:
    expected = json.loads((DATA_DIR / "cod_state_dict_keys.json").read_text())["Codec_" + variant]
    with torch.device("meta"):
        ours = key_shapes(Codec(**CODEC_VARIANTS[variant]).state_dict())
    assert list(ours.items()) == list(expected.items())


@pytest.fixture(scope="module")
def codec_ds32() -> Codec:
    return build_seeded(Codec, CODEC_VARIANTS["ds32_up2x"], seed=1)


def test_codec_ds32_matches_official_golden(codec_ds32: Codec) -> None:
    gold = load_golden("codec_ds32_up2x")
    img = seeded_images(11, (1, 3, 64, 96))  # non-square: 2x3 tokens in raster order
    with torch.no_grad():
        x_hat, res = codec_ds32(img)
        assert torch.equal(res["indices"], gold["indices"])
        assert_close_fp32(x_hat, gold["cond"])
        bitstream = codec_ds32.compress(img)
        assert bitstream == bytes(gold["bitstream"].tolist())
        assert len(bitstream) == codec_ds32.calculate_indices_bytes(64, 96) == 3
        cond = codec_ds32.decompress(bitstream, 64, 96, "cpu")
        assert cond.shape == (1, 64, 4, 6)
        assert_close_fp32(cond, gold["cond"])
        codec_ds32.calculate_uncond(torch.full((1, 3, 64, 96), -1.0))
        assert_close_fp32(codec_ds32.pre_calculated_uncond, gold["uncond"])


def test_codec_geometry() -> None:
    with torch.device("meta"):
        cases = {name: Codec(**args) for name, args in CODEC_VARIANTS.items()}
    # official rates at 512x512: tokens and bytes
    assert cases["ds32_up2x"].calculate_indices_size(512, 512) == (16, 16)
    assert cases["ds32_up2x"].calculate_indices_bytes(512, 512) == 128  # 0.0039 bpp
    assert cases["ds128_up2x"].calculate_indices_bytes(512, 512) == 8  # 64 bits
    assert cases["ds32"].calculate_indices_size(256, 256) == (16, 16)
    assert cases["ds128"].calculate_indices_size(256, 256) == (4, 4)
    assert cases["ds16_up2x"].calculate_indices_bytes(512, 512) == 1024  # 0.03125 bpp
    assert cases["ds8_up2x"].calculate_indices_bytes(512, 512) == 4096  # 0.125 bpp


def _decoder_only_codec(args: dict, seed: int) -> Codec:
    """A Codec whose decoder and codebook carry seeded weights; the (unused) encoder is zeros."""
    with torch.device("meta"):
        codec = Codec(**args)
    codec = codec.to_empty(device="cpu")
    for part in (codec.decoder, codec.bottleneck):
        part.load_state_dict(fan_in_state_dict(part.state_dict(), seed))
    with torch.no_grad():
        for p in codec.encoder.parameters():
            p.zero_()
    return codec.eval()


@pytest.mark.parametrize("name", ["ds32_up2x", "ds32", "ds16_up2x", "ds8_up2x", "ds4_up2x", "ds32_light"])
def test_codec_decompress_shapes_every_geometry(name: str) -> None:
    codec = _decoder_only_codec(dict(CODEC_VARIANTS[name], ch=32), seed=7)
    h, w = codec.calculate_indices_size(64, 96)
    idx = torch.randint(0, 2 ** codec.codebook_bits, (h * w,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = codec.decompress(pack_bits(idx, codec.codebook_bits), 64, 96, "cpu")
    assert cond.shape == (1, 32, 64 // 16, 96 // 16)
    assert torch.isfinite(cond).all()


def test_codec_rejects_bad_arguments(codec_ds32: Codec) -> None:
    with pytest.raises(ValueError):
        Codec(ch=64, codebook_bits=4, ds=64, up2x=True)
    with pytest.raises(ValueError):
        Codec(ch=64, codebook_bits=4, ds=16, up2x=False)
    codec = codec_ds32
    with pytest.raises(ValueError):
        codec.compress(torch.zeros(2, 3, 64, 64))
    with pytest.raises(BitstreamError):
        codec.decompress(b"\x00" * 3, 128, 128, "cpu")  # needs 8 bytes
    with pytest.raises(ValueError):
        codec.decompress(b"", 16, 16, "cpu")  # smaller than one token
    with pytest.raises(ValueError):
        codec.decompress(b"", 70000, 16, "cpu")


def test_codec_uncond_cache_follows_size(codec_ds32: Codec) -> None:
    with torch.no_grad():
        codec_ds32.calculate_uncond(torch.full((1, 3, 32, 32), -1.0))
        first = codec_ds32.pre_calculated_uncond
        assert first.shape == (1, 64, 2, 2)
        codec_ds32.calculate_uncond(torch.full((1, 3, 32, 32), -1.0))
        assert codec_ds32.pre_calculated_uncond is first  # same size: reused
        codec_ds32.calculate_uncond(torch.full((1, 3, 32, 64), -1.0))
        assert codec_ds32.pre_calculated_uncond.shape == (1, 64, 2, 4)
