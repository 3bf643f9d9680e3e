"""encode/decode end to end with tiny seeded models: sizes, padding, image types, parameters,
registry lookup, model mismatch and the official .cod path."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import cod_fast
from cod_fast import BitstreamError, ModelMismatchError
from cod_fast.bitstream import Container, DecodeParams, SectionType, read_container, write_container
from cod_fast.compat import read_cod
from cod_fast.image_io import pad_to_multiple, to_uint8_chw


@pytest.fixture(scope="module")
def pixel_stream(pixel_codec, small_image) -> bytes:
    return cod_fast.encode(small_image, pixel_codec, steps=2, seed=5, cfg=2.0)


def test_multi_step_round_trip_odd_size(pixel_codec, small_image, pixel_stream) -> None:
    c = read_container(pixel_stream)
    assert (c.height, c.width) == (40, 52)
    assert DecodeParams.from_bytes(c.section(SectionType.DECODE_PARAMS)) == DecodeParams("adam2", 2, 2.0, 5, 0.0)
    out = cod_fast.decode(pixel_stream, pixel_codec)
    assert out.dtype == torch.uint8 and out.shape == (3, 40, 52)
    assert len(set(out.flatten().tolist())) > 10  # a real picture, not a flat field
    # decode reproduces the encoder's recorded settings by default; overrides change pixels
    assert torch.equal(pixel_codec.decode(pixel_stream, seed=5, steps=2), out)
    assert not torch.equal(pixel_codec.decode(pixel_stream, seed=6), out)
    # no model given: found by fingerprint in the registry of loaded models
    assert torch.equal(cod_fast.decode(pixel_stream), out)


def test_padding_replicates_bottom_right() -> None:
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 4)
    assert y[0, 0].tolist() == [[0, 1, 2, 2], [3, 4, 5, 5], [3, 4, 5, 5], [3, 4, 5, 5]]
    assert pad_to_multiple(x, 1) is x


def test_one_step_codecs_round_trip(one_step_codec, lite_codec, small_image) -> None:
    for codec, cid in ((one_step_codec, 2), (lite_codec, 3)):
        data = codec.encode(small_image)
        c = read_container(data)
        assert c.codec_id == cid
        assert DecodeParams.from_bytes(c.section(SectionType.DECODE_PARAMS)).sampler == "none"
        out = codec.decode(data)
        assert out.shape == (3, 40, 52) and out.dtype == torch.uint8
        assert torch.equal(codec.decode(data), out)  # deterministic (noise level 0)


def test_image_types_give_the_same_stream(one_step_codec, small_image, tmp_path) -> None:
    small_image = small_image[:, 3:23, 5:30]  # 20x25: one token, cheap to encode 7 times
    hwc = np.ascontiguousarray(small_image.permute(1, 2, 0).numpy())
    Image.fromarray(hwc).save(tmp_path / "img.png")
    ref = one_step_codec.encode(small_image)
    assert one_step_codec.encode(hwc) == ref
    assert one_step_codec.encode(Image.fromarray(hwc)) == ref
    assert one_step_codec.encode(Image.fromarray(hwc).convert("RGBA")) == ref
    assert one_step_codec.encode(tmp_path / "img.png") == ref
    assert one_step_codec.encode(str(tmp_path / "img.png")) == ref
    assert one_step_codec.encode(small_image.float() / 255) == ref


def test_image_conversions() -> None:
    grey = np.full((4, 5), 7, dtype=np.uint8)
    assert to_uint8_chw(grey).shape == (3, 4, 5)
    assert torch.equal(to_uint8_chw(Image.fromarray(grey)), to_uint8_chw(grey))
    pal = Image.fromarray(grey).convert("P")
    assert to_uint8_chw(pal).shape == (3, 4, 5)
    assert to_uint8_chw(torch.ones(1, 3, 2, 2)).tolist() == [[[255, 255], [255, 255]]] * 3


@pytest.mark.parametrize("bad,exc", [
    (np.zeros((4, 4, 3), dtype=np.float64), TypeError),
    (np.zeros((4, 4, 4), dtype=np.uint8), ValueError),
    (np.zeros((0, 4, 3), dtype=np.uint8), ValueError),
    (np.zeros((2, 4, 4, 3), dtype=np.uint8), ValueError),
    (torch.zeros(3, 4), ValueError),
    (torch.zeros(3, 0, 4), ValueError),
    (torch.full((3, 2, 2), 1.5), ValueError),
    (torch.full((3, 2, 2), float("nan")), ValueError),
    (torch.zeros(3, 2, 2, dtype=torch.int32), TypeError),
    ([[1, 2], [3, 4]], TypeError),
    ("/no/such/image.png", ValueError),
])
def test_bad_images_raise_clearly(bad, exc) -> None:
    with pytest.raises(exc):
        to_uint8_chw(bad)


def test_unreadable_image_file(tmp_path) -> None:
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        to_uint8_chw(tmp_path / "x.png")


def test_wrong_model_and_bad_streams(pixel_codec, one_step_codec, pixel_stream) -> None:
    with pytest.raises(ModelMismatchError) as info:
        one_step_codec.decode(pixel_stream)
    assert pixel_codec.fingerprint_hex in str(info.value) and one_step_codec.fingerprint_hex in str(info.value)
    unknown = bytearray(pixel_stream)
    unknown[8] ^= 0xFF
    unknown[34:38] = struct.pack("<I", zlib.crc32(bytes(unknown[:34])))
    with pytest.raises(ModelMismatchError, match="no loaded or named model"):
        cod_fast.decode(bytes(unknown))
    with pytest.raises(BitstreamError):
        pixel_codec.decode(pixel_stream[:-1])
    # a header size that does not fit the INDICES grid (CRC fixed so the container parses)
    resized = bytearray(pixel_stream)
    resized[24:28] = struct.pack("<I", 200)
    resized[34:38] = struct.pack("<I", zlib.crc32(bytes(resized[:34])))
    with pytest.raises(BitstreamError, match="grid"):
        pixel_codec.decode(bytes(resized))
    with pytest.raises(TypeError):
        cod_fast.decode("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown decode parameter"):
        pixel_codec.decode(pixel_stream, stepz=3)
    # settings that do not fit the codec: ValueError from the caller, BitstreamError from a stream
    with pytest.raises(ValueError, match="sampler"):
        pixel_codec.encode(torch.zeros(3, 8, 8, dtype=torch.uint8), sampler="none")
    with pytest.raises(ValueError, match="one-step"):
        one_step_codec.encode(torch.zeros(3, 8, 8, dtype=torch.uint8), steps=4)
    with pytest.raises(ValueError, match="steps"):
        pixel_codec.decode(pixel_stream, steps=0)
    c = read_container(pixel_stream)
    for params in (DecodeParams("none", 1), DecodeParams("euler", 5000)):
        forged = write_container(Container(c.codec_id, c.fingerprint, c.height, c.width, sections={
            **c.sections, SectionType.DECODE_PARAMS: params.to_bytes()}))
        with pytest.raises(BitstreamError, match="DECODE_PARAMS"):
            pixel_codec.decode(forged)


def test_official_cod_files_through_the_codec(one_step_codec) -> None:
    img = torch.randint(0, 256, (3, 64, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = one_step_codec.encode_cod(img)  # official CoD writer layout: H first
    assert data[:4] == struct.pack("<HH", 64, 32)
    assert len(data) == 4 + (2 * 1 * 4 + 7) // 8
    cod = read_cod(data, ds=32, codebook_bits=4)
    ours = one_step_codec.encode(img)
    packed = read_container(ours).section(SectionType.INDICES)[5:]
    assert cod.payload == packed  # the same indices in both formats
    out = one_step_codec.decode_cod(data)
    assert out.shape == (3, 64, 32)
    assert torch.equal(out, one_step_codec.decode(ours))
    lite_layout = one_step_codec.encode_cod(img, layout="cod_lite")
    assert lite_layout[:4] == struct.pack("<HH", 32, 64)
    assert torch.equal(one_step_codec.decode_cod(lite_layout, layout="cod_lite"), out)
    with pytest.raises(ValueError, match="multiples of 32"):
        one_step_codec.encode_cod(img[:, :40])
    assert one_step_codec.official_layout == "cod"
    with pytest.raises(BitstreamError):
        one_step_codec.decode_cod(data[:-1])


TINY_DDT = {
    "class_path": "cod.models.latent_dit.DDT",
    "init_args": dict(in_channels=4, patch_size=2, num_groups=2, hidden_size=64, num_blocks=2,
                      num_cond_blocks=1, ds=32, codebook_bits=4, up2x=True),
}
TINY_VAE = dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1, latent_channels=4,
                norm_num_groups=32, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.18215)


def test_latent_cod_with_vae(tmp_path, small_image) -> None:
    import json

    from safetensors.torch import save_file
    from tiny_models import official_checkpoint

    from cod_fast.models.vae import AutoencoderKL

    vae_dir = tmp_path / "vae"
    vae_dir.mkdir()
    (vae_dir / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **TINY_VAE}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(**TINY_VAE)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()},
              str(vae_dir / "diffusion_pytorch_model.safetensors"))
    cfg = {"model": {"latent": True, "denoiser": TINY_DDT,
                     "vae": {"class_path": "cod.models.autoencoder.LatentAE",
                             "init_args": {"weight_path": "stabilityai/sd-vae-ft-ema"}}}}
    ckpt = tmp_path / "latent.pt"
    torch.save(official_checkpoint(TINY_DDT, 4), ckpt)
    with pytest.raises(ValueError, match="SD-VAE"):
        cod_fast.load_model(cfg, ckpt)
    codec = cod_fast.load_model(cfg, ckpt, vae=vae_dir)
    assert codec.stride == 32 and codec.spec.latent
    data = codec.encode(small_image, steps=2)
    out = codec.decode(data)
    assert out.shape == (3, 40, 52) and out.dtype == torch.uint8


def test_named_registry_and_autocast_dtype(one_step_codec, small_image) -> None:
    from cod_fast import registry

    data = one_step_codec.encode(small_image)
    calls = []

    def loader():
        calls.append(1)
        return one_step_codec

    registry.register_named("tiny-one-step", loader)
    try:
        assert registry.find(b"\x00" * 16) is None and calls == [1]  # loaded once to learn its id
        assert registry.find(one_step_codec.fingerprint) is one_step_codec
        assert "tiny-one-step" in registry.named()
    finally:
        registry.unregister_named("tiny-one-step")
    ref = one_step_codec.decode(data).float()
    low = one_step_codec.decode(data, dtype="bf16").float()
    assert low.shape == ref.shape
    assert (low - ref).abs().mean() < 8  # bf16 autocast: close to fp32, in 0..255 levels


def test_cod_lite_official_layout_is_width_first(lite_codec) -> None:
    img = torch.zeros(3, 64, 32, dtype=torch.uint8)
    data = lite_codec.encode_cod(img)  # official CoD-Lite writer: W first
    assert lite_codec.official_layout == "cod_lite" and data[:4] == struct.pack("<HH", 32, 64)
    assert lite_codec.decode_cod(data).shape == (3, 64, 32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_stream_decodes_on_cuda(one_step_codec, pixel_codec, small_image, tmp_path) -> None:
    from cod_fast.loading import save_model

    for i, codec in enumerate((one_step_codec, pixel_codec)):
        path = tmp_path / f"m{i}.safetensors"
        save_model(codec, path)
        gpu = cod_fast.load_model(checkpoint=path, device="cuda")
        assert gpu.fingerprint == codec.fingerprint
        data = codec.encode(small_image, **({"steps": 2} if i else {}))
        ref, out = codec.decode(data).float(), gpu.decode(data).float()
        assert out.shape == ref.shape and (out - ref).abs().mean() < 2.0
