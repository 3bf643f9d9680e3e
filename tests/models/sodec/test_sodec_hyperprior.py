"""SODEC hyperprior: export to the integer spec, rANS round trip, backend pairs, bad streams."""

import pytest
import torch

from cod_fast._ext import cpu_ext
from cod_fast.codecs.sodec import entropy_parameters
from cod_fast.entropy import GaussianConditionalTables
from cod_fast.errors import BitstreamError
from cod_fast.models.sodec.hyperprior import TINY_HYPERPRIOR, SodecHyperprior
from cod_fast.models.sodec.integer_params import dequantize_y, quantize_y

BACKENDS = ["reference", "triton"] + (["cpp"] if cpu_ext() is not None and hasattr(cpu_ext(), "sodec") else [])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = SodecHyperprior(TINY_HYPERPRIOR).eval()
    with torch.no_grad():  # spread z over a few symbols so the tables and scales get exercised
        m.h_a[-1].weight.mul_(40.0)
        m.h_s[-1].weight.mul_(30.0)
    m.update()
    return m


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))


def test_forward_shapes_and_likelihoods(model, images):
    y_hat, ly, lz = model(images)
    assert y_hat.shape == (2, 8, 8, 12) and ly.shape == y_hat.shape and lz.shape == (2, 4, 2, 3)
    assert bool(((ly > 0) & (ly <= 1)).all()) and bool(((lz > 0) & (lz <= 1)).all())


def test_export_tracks_float_hyper_synthesis(model, images):
    with torch.no_grad():
        z = torch.round(model.h_a(model.g_a(images)))
        scales, means = model.hyper_synthesis(z)
    idx, mq = entropy_parameters(model, z.to(torch.int32), "reference")
    # Means on the 1/16 grid: within half a step plus the int8 weight error.
    assert float((mq.float() / 16 - means).abs().max()) < 0.5 / 16 + 0.02 * float(means.abs().max()) + 1e-3
    float_idx = GaussianConditionalTables().build_indexes(scales)
    assert int((float_idx - idx).abs().max()) <= 1
    assert float((float_idx == idx).float().mean()) > 0.9
    assert idx.unique().numel() > 3


def test_round_trip_and_backend_pairs(model, images):
    y = model.g_a(images).detach()
    strings = {}
    for enc in BACKENDS:
        strings[enc], shape = model.compress(images, backend=enc)
    assert shape == (2, 2, 3)
    for enc in BACKENDS:  # same bytes from every encoder backend
        assert strings[enc] == strings["reference"], enc
    z = torch.round(model.h_a(y)).to(torch.int32)
    idx, means = entropy_parameters(model, z)
    symbols = quantize_y(y, means, 4)
    assert torch.equal(model.y_tables.decode(strings["reference"][1], idx), symbols)
    expected = dequantize_y(symbols, means, 4)
    # y is first put on the 1/16 grid (error <= 1/32), then rounded around the mean (<= 1/2).
    assert float((expected - y).abs().max()) <= 0.5 + 1 / 32 + 1e-6
    for dec in BACKENDS:  # every decoder backend reads the (common) stream exactly
        assert torch.equal(model.decompress(strings["reference"], shape, backend=dec), expected), dec


def test_decoder_rejects_bad_streams_and_shapes(model, images):
    (zb, yb), shape = model.compress(images)
    with pytest.raises(BitstreamError):
        model.decompress([zb[: len(zb) // 2], yb], shape)
    with pytest.raises(BitstreamError):
        model.decompress([zb, yb[:5]], shape)
    with pytest.raises(ValueError):
        model.decompress([zb, yb], (1 << 12, 1 << 12, 1 << 12))
    with pytest.raises(ValueError):
        model.decompress([zb, yb], (2, 0, 3))
    with pytest.raises(ValueError):
        model.decompress([zb], shape)
    with pytest.raises(ValueError):
        model.compress(torch.rand(1, 3, 30, 32))
    with pytest.raises(TypeError):
        entropy_parameters(object(), torch.zeros(1, 4, 1, 1, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="update"):
        SodecHyperprior(TINY_HYPERPRIOR).compress(images)


def test_integer_state_round_trip(model, images):
    """A decoder that loads the shipped integer state (no export of its own) reads the stream."""
    strings, shape = model.compress(images)
    decoder = SodecHyperprior(TINY_HYPERPRIOR)  # other float weights: only the integers matter
    decoder.load_integer_state(model.integer_state_dict())
    assert torch.equal(decoder.decompress(strings, shape), model.decompress(strings, shape))
    sd = model.integer_state_dict()
    del sd["z_tables.offset"]
    with pytest.raises(ValueError, match="z_tables.offset"):
        decoder.load_integer_state(sd)
