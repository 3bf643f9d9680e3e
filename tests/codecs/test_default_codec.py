"""The bundled default model through the container, load_model(), the API and ``cod-fast demo``."""
from __future__ import annotations

import math
import struct

import pytest
import torch

import cod_fast
from cod_fast import cli
from cod_fast.bitstream import CodecId, Container, SectionType, read_container, replace_container, write_container
from cod_fast.codecs.default import DefaultCodec
from cod_fast.errors import BitstreamError, EntropyParameterMismatchError, ModelMismatchError
from cod_fast.image_io import to_uint8_chw
from cod_fast.metrics import FULL_SCALE_SIDE, ms_ssim, psnr

#: Measured 28.41 dB at quality 3 on this crop (load_model() at the time of writing); the
#: floor leaves room for retrained weights while still catching a broken pipeline (~10 dB).
PSNR_FLOOR_Q3 = 25.0


@pytest.fixture(scope="module")
def codec() -> DefaultCodec:
    return cod_fast.load_model()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    # 70x100: not a multiple of the model's stride 64, so padding and cropping are exercised
    return to_uint8_chw(cli.DEMO_IMAGE)[:, 100:170, 200:300].contiguous()


@pytest.fixture(scope="module")
def stream(codec: DefaultCodec, image: torch.Tensor) -> bytes:
    return codec.encode(image, quality=3.0)


def test_load_model_without_arguments_is_cached_default(codec: DefaultCodec) -> None:
    assert isinstance(codec, DefaultCodec)
    assert cod_fast.load_model() is codec
    assert len(codec.fingerprint) == 16


def test_round_trip(codec: DefaultCodec, image: torch.Tensor, stream: bytes) -> None:
    c = read_container(stream)
    assert c.codec_id == CodecId.DEFAULT_HYPERPRIOR
    assert (c.height, c.width) == (70, 100)
    assert set(c.sections) == {SectionType.HYPERPRIOR_Y, SectionType.HYPERPRIOR_Z, SectionType.HYPERPRIOR_PARAMS,
                               SectionType.HYPERPRIOR_CHECK, SectionType.HYPERPRIOR_Y_NONANCHOR}  # layout 3
    out = codec.decode(stream)
    assert out.dtype == torch.uint8 and out.shape == (3, 70, 100)
    assert torch.equal(codec.decode(stream), out)  # exact symbols: decoding is deterministic
    assert codec.encode(image, quality=3.0) == stream  # and so is encoding
    assert psnr(image, out) > PSNR_FLOOR_Q3
    # the API finds the model by fingerprint
    assert torch.equal(cod_fast.decode(stream), out)


def test_quality_recorded_and_rate_grows(codec: DefaultCodec, image: torch.Tensor, stream: bytes) -> None:
    low = codec.encode(image, quality=0.5)
    q_low, *_ = struct.unpack("<fHH", read_container(low).sections[SectionType.HYPERPRIOR_PARAMS])
    q_hi, zh, zw = struct.unpack("<fHH", read_container(stream).sections[SectionType.HYPERPRIOR_PARAMS])
    assert (q_low, q_hi, zh, zw) == (0.5, 3.0, 2, 2)
    assert len(low) < len(stream)
    with pytest.raises(ValueError, match="quality"):
        codec.encode(image, quality=4.5)


def test_corrupted_and_truncated_streams(codec: DefaultCodec, stream: bytes) -> None:
    flipped = bytearray(stream)
    flipped[-3] ^= 0x40
    for bad in (bytes(flipped), stream[:-5], stream[:20], b""):
        with pytest.raises(BitstreamError):
            codec.decode(bad)
    c = read_container(stream)
    y = c.sections[SectionType.HYPERPRIOR_Y]
    hostile = [
        replace_container(stream, sections={SectionType.HYPERPRIOR_PARAMS: struct.pack("<fHH", 9.0, 2, 2)}),
        replace_container(stream, sections={SectionType.HYPERPRIOR_PARAMS: struct.pack("<fHH", math.nan, 2, 2)}),
        replace_container(stream, sections={SectionType.HYPERPRIOR_PARAMS: struct.pack("<fHH", 3.0, 500, 500)}),
        replace_container(stream, sections={SectionType.HYPERPRIOR_PARAMS: b"\x00" * 3}),
        replace_container(stream, height=30000, width=30000,
                          sections={SectionType.HYPERPRIOR_PARAMS: struct.pack("<fHH", 3.0, 469, 469)}),
        replace_container(stream, sections={SectionType.HYPERPRIOR_Y: y[: len(y) // 2]}),  # valid CRC, cut rANS
        replace_container(stream, sections={SectionType.INDICES: b"\x01"}),  # a section this codec lacks
    ]
    for bad in hostile:
        with pytest.raises(BitstreamError):
            codec.decode(bad)


def test_rdoq_lowers_the_rate_distortion_cost(codec: DefaultCodec, image: torch.Tensor) -> None:
    """RDOQ (the default) is an encoder decision: the same decoder reads both streams, and for the
    shipped model (release 4) the real-bytes cost lambda * 255^2 * MSE + bpp goes down against
    plain rounding at every level; with its context the non-anchors' indexes follow the anchors
    RDOQ chose. The context-removed view (release 2 layout, same transforms) keeps the decoder-side
    contract only: the y table indexes, and so the CHECK section, are unchanged by RDOQ. Its cost is
    not asserted: RDOQ prices each symbol with the hyperprior alone, which is not the prior these
    transforms were trained with (measured on this image at level 4 with RDOQ distortion scale 1:
    3.194 with RDOQ vs 3.185)."""
    from tiny_models import shipped_plain_codecs

    pixels = image.shape[1] * image.shape[2]
    for c in (codec, shipped_plain_codecs()[1]):
        for level in (0.0, 2.0, 4.0):
            costs = {}
            checks = set()
            for rdoq in (False, True):
                data = c.encode(image, quality=level, rdoq=rdoq)
                checks.add(read_container(data).sections[SectionType.HYPERPRIOR_CHECK])
                out = c.decode(data)
                assert out.shape == image.shape
                mse = float(((out.float() - image.float()) / 255.0).pow(2).mean())
                costs[rdoq] = c.net.rd_lambda(level) * 255.0**2 * mse + 8 * len(data) / pixels
            if c.release == 2:
                assert len(checks) == 1
            else:
                assert costs[True] < costs[False], (c.release, level, costs)


def test_entropy_parameter_check(codec: DefaultCodec, image: torch.Tensor, stream: bytes) -> None:
    """The CHECK section guards parsing: a decoder whose entropy parameters differ (simulated by
    nudging a bias: release 1's float h_s, release 4's integer head) or a stream with another
    checksum stops before y is parsed, with an error naming the release and never blaming a
    platform; a stream without the section (older writers) still decodes."""
    from tiny_models import shipped_plain_codecs

    assert (codec.release, codec.layout) == (4, 3)
    ref = codec.decode(stream)
    crc, crc_anchors = struct.unpack("<II", read_container(stream).sections[SectionType.HYPERPRIOR_CHECK])
    for bad in ((crc ^ 1, crc_anchors), (crc, crc_anchors ^ 1)):  # all the indexes', the anchors'
        with pytest.raises(EntropyParameterMismatchError, match="differ from the encoder"):
            codec.decode(replace_container(stream, sections={SectionType.HYPERPRIOR_CHECK: struct.pack("<II", *bad)}))
    with pytest.raises(BitstreamError, match="8 bytes"):
        codec.decode(replace_container(stream, sections={SectionType.HYPERPRIOR_CHECK: b"\x00"}))
    sections = dict(read_container(stream).sections)
    del sections[SectionType.HYPERPRIOR_CHECK]
    assert torch.equal(codec.decode(write_container(Container(codec_id=CodecId.DEFAULT_HYPERPRIOR, fingerprint=codec.fingerprint, height=70, width=100,
                                                      sections=sections))), ref)
    # release 4 (layout 3): the integer head's bias moved -> refused, naming release 4
    ibias = codec.integer.params.layers[-1].bias
    isaved = ibias.clone()
    try:
        ibias[: codec.net.cfg.latent] += 1 << 12  # every scale code moves: indexes change
        with pytest.raises(EntropyParameterMismatchError, match="release 4") as info:
            codec.decode(stream)  # refused before the anchors are parsed (their CRC)
        assert "platform" not in str(info.value) and "anchors' y table indexes" in str(info.value)
    finally:
        ibias.copy_(isaved)
    assert torch.equal(codec.decode(stream), ref)
    # release 1 (float h_s; the shipped transforms without the context): a decoder whose float maths
    # rounds otherwise is refused, naming release 1
    old = shipped_plain_codecs()[0]
    old_stream = old.encode(image, quality=3.0)
    old_ref = old.decode(old_stream)
    bias = old.net.h_s.conv3.bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias[: codec.net.cfg.latent] += 0.5  # every scale moves: indexes change
        with pytest.raises(EntropyParameterMismatchError, match="release 1") as info:
            old.decode(old_stream)
        assert "re-encode" in str(info.value).lower() and "release 2" in str(info.value)
        assert "platform" not in str(info.value)
        assert torch.equal(codec.decode(stream), ref)  # release 4 does not use that float h_s
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    assert torch.equal(old.decode(old_stream), old_ref)


def test_other_model_stream(codec: DefaultCodec, stream: bytes) -> None:
    other = replace_container(stream, fingerprint=bytes(16))
    with pytest.raises(ModelMismatchError):
        codec.decode(other)
    with pytest.raises(ModelMismatchError):
        cod_fast.decode(other)  # no loaded or named model has that fingerprint
    with pytest.raises(ModelMismatchError):
        codec.decode(replace_container(stream, codec_id=int(CodecId.COD_ONE_STEP)))


def test_cli_demo_and_compress(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--quality", "1"]) == 0
    printed = capsys.readouterr().out
    assert "bpp" in printed and "PSNR" in printed and "MS-SSIM" in printed
    assert f"refine: {cli.DEMO_REFINE_STEPS}" in printed  # the demo shows the refined encoder
    stem = cli.DEMO_IMAGE.stem
    rec = to_uint8_chw(out / f"{stem}_decoded.png")
    side = to_uint8_chw(out / f"{stem}_side_by_side.png")
    assert rec.shape == (3, 384, 512) and side.shape == (3, 384, 1024)
    assert torch.equal(side[:, :, 512:], rec)
    assert torch.equal(cod_fast.decode((out / f"{stem}.codf").read_bytes()), rec)
    # the demo writes release 4 (layout 3: fixed-point entropy parameters, checkerboard context)
    current = cod_fast.load_model()
    assert (current.release, current.layout) == (4, 3)
    assert read_container((out / f"{stem}.codf").read_bytes()).fingerprint == current.fingerprint
    assert f"model: DefaultCodec(release=4, fingerprint={current.fingerprint.hex()}" in printed
    # compress without --model uses the default model; decompress finds it by fingerprint
    small = tmp_path / "small.png"
    from PIL import Image

    Image.fromarray(rec[:, :40, :50].permute(1, 2, 0).numpy()).save(small)
    assert cli.main(["compress", str(small), "-o", str(tmp_path / "s"), "--quality", "2"]) == 0
    assert cli.main(["decompress", str(tmp_path / "s"), "-o", str(tmp_path / "d")]) == 0
    assert to_uint8_chw(tmp_path / "d" / "small.png").shape == (3, 40, 50)
    assert cli.main(["compress", str(small), "-o", str(tmp_path / "s"), "--steps", "3"]) == 2


def test_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, FULL_SCALE_SIDE, FULL_SCALE_SIDE + 5), dtype=torch.uint8, generator=g)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, a) == math.inf
    b = (a.float() + 20 * torch.randn(a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    assert 0.0 < ms_ssim(a, b) < 0.99
    assert 15.0 < psnr(a, b) < 30.0
    # float images default to data range 1 and give the same values as uint8 ones
    assert ms_ssim(a.float() / 255, b.float() / 255) == pytest.approx(ms_ssim(a, b), abs=1e-9)
    # fallback for small images: fewer scales, still 1 for identical and < 1 otherwise
    small_a, small_b = a[:, :40, :50], b[:, :40, :50]
    assert ms_ssim(small_a, small_a) == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < ms_ssim(small_b, small_a) < 1.0
    assert 0.0 < ms_ssim(a[:, :6, :7], b[:, :6, :7]) <= 1.0
    with pytest.raises(ValueError):
        ms_ssim(a, b[:, :10])


def test_stream_of_earlier_shipped_weights_is_rejected_clearly(codec: DefaultCodec) -> None:
    """tests/golden/default_model_step450.codf was written (without the CHECK section, as that
    release did) by the weights shipped before the current ones; the current model refuses it
    with ModelMismatchError naming both fingerprints instead of decoding garbage."""
    from pathlib import Path

    old = (Path(__file__).resolve().parents[1] / "golden" / "default_model_step450.codf").read_bytes()
    assert SectionType.HYPERPRIOR_CHECK not in read_container(old).sections
    with pytest.raises(ModelMismatchError) as info:
        codec.decode(old)
    assert "d14ced709defdfb3da4b726fd4c19b4f" in str(info.value) and codec.fingerprint_hex in str(info.value)


def test_lower_precision_synthesis_only(codec: DefaultCodec, stream: bytes) -> None:
    """A bf16 synthesis decodes the same stream within 1 uint8 step-ish of fp32 (bench/
    bf16_fidelity.py measures Kodak); a cast entropy model is refused up front."""
    import copy

    net = copy.deepcopy(codec.net)
    net.g_s.to(torch.bfloat16)
    out = DefaultCodec(net, codec.fingerprint, integer=codec.integer).decode(stream)
    assert psnr(out, codec.decode(stream)) > 40.0
    with pytest.raises(ValueError, match="float32"):
        DefaultCodec(copy.deepcopy(codec.net).to(torch.bfloat16), codec.fingerprint)
