"""Banded (bounded-memory) inference of the default model (issue 17 item 2,
``cod_fast.models.default.lowmem``): the same streams and (within one level, and bitwise where one
band covers the image) the same pixels as the whole-image transforms, with small forced bands."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from cod_fast.models.default import integer_params, lowmem
from cod_fast.models.default import model as model_mod

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden" / "default_model_r4.codf"


def _golden_tool():
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "tools" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def codec():
    from cod_fast.loading import load_model

    return load_model()


@pytest.fixture
def small_bands(monkeypatch):
    """Bands of a few rows everywhere (many bands even on a 128x192 image)."""
    monkeypatch.setattr(lowmem, "BAND_BYTES", 1)
    monkeypatch.setattr(lowmem, "MIN_BAND_PIXELS", 1)
    monkeypatch.setattr(model_mod, "SYMBOL_BAND_POSITIONS", 7)
    monkeypatch.setattr(integer_params, "HEAD_BAND_POSITIONS", 5)


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand((3, h // 8 + 1, w // 8 + 1), generator=g)
    img = torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return (img * 255).round().to(torch.uint8)


def _whole(monkeypatch) -> None:
    monkeypatch.setattr(lowmem, "usable", lambda *a: False)


def test_bands_cover_rows_without_short_tail() -> None:
    for h, rows in [(10, 4), (9, 4), (8, 8), (3, 8), (17, 2)]:
        b = lowmem.bands(h, rows)
        assert b[0][0] == 0 and b[-1][1] == h and all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))
        assert all(r0 % rows == 0 for r0, _ in b)
        if len(b) > 1:
            assert b[-1][1] - b[-1][0] > rows // 2


def test_golden_stream_unchanged_with_small_bands(codec, small_bands, one_torch_thread) -> None:
    """The banded encoder (analysis, entropy head, quantization, RDOQ in bands) writes the
    committed release-3 golden bytes."""
    tool = _golden_tool()
    cfg, _, (h, w), params = tool.CASES["default_model_r4"]
    assert codec.encode(tool.golden_image(h, w), **params) == GOLDEN.read_bytes()


@pytest.mark.parametrize("rdoq", [True, False])
def test_banded_encode_equals_whole_image_encode(codec, rdoq, monkeypatch) -> None:
    img = _image(136, 200, seed=1)
    with monkeypatch.context() as m:
        m.setattr(lowmem, "BAND_BYTES", 1)
        m.setattr(lowmem, "MIN_BAND_PIXELS", 256)
        m.setattr(model_mod, "SYMBOL_BAND_POSITIONS", 7)
        m.setattr(integer_params, "HEAD_BAND_POSITIONS", 5)
        banded = codec.encode(img, quality=2.5, rdoq=rdoq)
    _whole(monkeypatch)
    assert banded == codec.encode(img, quality=2.5, rdoq=rdoq)


def test_banded_entropy_parameters_exact(codec, monkeypatch) -> None:
    """The row-banded head gives the whole-tensor integers (indexes and means)."""
    p = codec.integer.params
    z = torch.randint(-6, 7, (1, p.layers[0].weight.shape[1], 3, 5), generator=torch.Generator().manual_seed(2))
    whole = integer_params.entropy_parameters(p, z, 1.7)
    monkeypatch.setattr(integer_params, "HEAD_BAND_POSITIONS", 3)
    banded = integer_params.entropy_parameters(p, z, 1.7)
    assert all(torch.equal(a, b) and a.dtype == b.dtype == torch.int32 for a, b in zip(whole, banded))


def test_banded_decode_one_band_is_bitwise(codec, monkeypatch) -> None:
    """With the default band size a small image is one band: pixels bitwise equal."""
    data = codec.encode(_image(100, 150, seed=3), quality=3.0)
    banded = codec.decode(data)
    _whole(monkeypatch)
    assert torch.equal(banded, codec.decode(data))


def test_banded_decode_small_bands_within_one_level(codec, monkeypatch) -> None:
    """Many small bands: oneDNN may round a 1x1 convolution over a few hundred pixels otherwise
    than over the whole image, so pixels may move by one level (never more); most are equal."""
    data = codec.encode(_image(128, 192, seed=4), quality=2.0)
    whole_px = None
    with monkeypatch.context() as m:
        _whole(m)
        whole_px = codec.decode(data)
    monkeypatch.setattr(lowmem, "BAND_BYTES", 1)
    monkeypatch.setattr(lowmem, "MIN_BAND_PIXELS", 1)
    banded = codec.decode(data)
    assert banded.shape == whole_px.shape == (3, 128, 192) and banded.dtype == torch.uint8
    d = (banded.int() - whole_px.int()).abs()
    assert int(d.max()) <= 1
    assert float((d > 0).float().mean()) < 0.01


def test_synthesis_uint8_crops_and_matches_float_path(codec, monkeypatch) -> None:
    net = codec.net
    y = torch.randn(1, net.cfg.latent, 4, 6, generator=torch.Generator().manual_seed(5))
    q = torch.tensor([1.5])
    with torch.no_grad():
        ref = (net.g_s(y, q).clamp_(0.0, 1.0)[0] * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        out = lowmem.synthesis_uint8(net.g_s, y, q, (50, 90))
    assert out.shape == (3, 50, 90)
    assert torch.equal(out, ref[:, :50, :90])


def test_fallback_for_non_float32_model(codec) -> None:
    assert not lowmem.usable(codec.net.g_s, torch.zeros(1, 3, 4, 4, dtype=torch.float64))
    assert not lowmem.usable(codec.net.g_s, torch.zeros(2, 3, 4, 4))
    assert lowmem.usable(codec.net.g_s, torch.zeros(1, 3, 4, 4))


def test_banded_decode_bitwise_with_default_min_band(codec, monkeypatch) -> None:
    """Small BAND_BYTES but the default MIN_BAND_PIXELS: several bands per stage (6 at half
    resolution here), pixels bitwise those of the whole-image synthesis."""
    data = codec.encode(_image(256, 384, seed=6), quality=3.0)
    with monkeypatch.context() as m:
        _whole(m)
        whole_px = codec.decode(data)
    monkeypatch.setattr(lowmem, "BAND_BYTES", 1)
    assert len(lowmem.bands(128, lowmem.band_rows(128, 1, width=192))) > 4
    assert torch.equal(codec.decode(data), whole_px)
