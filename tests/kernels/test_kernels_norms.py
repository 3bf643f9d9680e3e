"""RMSNorm/LayerNorm2d/GroupNorm kernels against fp64 references, at tiny and awkward shapes."""

import pytest
import torch
from tolerances import DTYPES, assert_close

from cod_fast.kernels.group_norm import group_norm, group_norm_reference
from cod_fast.kernels.layer_norm2d_modulate import (
    gated_residual_layer_norm2d_modulate,
    gated_residual_layer_norm2d_modulate_reference,
    layer_norm2d_modulate,
    layer_norm2d_modulate_reference,
)
from cod_fast.kernels.rms_norm_modulate import (
    gated_residual_rms_norm_modulate,
    gated_residual_rms_norm_modulate_reference,
    rms_norm_modulate,
    rms_norm_modulate_reference,
)


def _rand(shape, dtype, device, gen, scale=1.0, offset=0.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset).to(dtype).to(device)


def _d(t):
    return None if t is None else t.detach().cpu().to(torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,C,mod", [
    (2, 5, 72, "batch"),      # non-power-of-two hidden, [B, 1, C] modulation
    (1, 1, 1, "flat"),        # one element, [B, C] modulation
    (2, 3, 48, "token"),      # per-token modulation (DDT decoder)
    (3, 7, 64, None),         # plain RMSNorm (NerfBlock)
])
def test_rms_norm_modulate(dtype, B, T, C, mod, device):
    g = torch.Generator().manual_seed(B * 100 + T * 10 + C)
    x = _rand((B, T, C), dtype, device, g, 2.0, 0.5)
    w = _rand((C,), torch.float32, device, g)
    shape = {"batch": (B, 1, C), "flat": (B, C), "token": (B, T, C)}.get(mod)
    shift = _rand(shape, dtype, device, g) if mod else None
    scale = _rand(shape, dtype, device, g, 0.5) if mod else None
    out = rms_norm_modulate(x, w, shift, scale, 1e-6)
    ref = rms_norm_modulate_reference(_d(x), _d(w), _d(shift), _d(scale), 1e-6)
    assert_close(out, ref, dtype, C, factor=8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gated", [True, False])
def test_gated_residual_rms_norm_modulate(dtype, gated, device):
    g = torch.Generator().manual_seed(7)
    B, T, C = 2, 3, 40
    res, y = _rand((B, T, C), dtype, device, g), _rand((B, T, C), dtype, device, g)
    gate = _rand((B, 1, C), dtype, device, g) if gated else None
    w = _rand((C,), torch.float32, device, g)
    shift, scale = _rand((B, 1, C), dtype, device, g), _rand((B, 1, C), dtype, device, g, 0.5)
    x_new, h = gated_residual_rms_norm_modulate(res, y, gate, w, shift, scale, 1e-6)
    x_ref, h_ref = gated_residual_rms_norm_modulate_reference(_d(res), _d(y), _d(gate), _d(w),
                                                              _d(shift), _d(scale), 1e-6)
    assert_close(x_new, x_ref, dtype, 1)
    # h normalises the rounded x, so allow the rounding of x on top of h's own.
    assert_close(h, h_ref, dtype, C, factor=12)


def test_rms_norm_modulate_rejects_bad_arguments(device):
    x = torch.zeros(2, 3, 8, device=device)
    w = torch.ones(8, device=device)
    with pytest.raises(ValueError):
        rms_norm_modulate(x, torch.ones(7, device=device))
    with pytest.raises(ValueError):
        rms_norm_modulate(x, w, torch.zeros(2, 8, device=device), None)
    with pytest.raises(ValueError):
        rms_norm_modulate(x, w, torch.zeros(3, 8, device=device), torch.zeros(3, 8, device=device))
    with pytest.raises(TypeError):
        rms_norm_modulate(x.to(torch.int32), w)
    with pytest.raises(ValueError):
        rms_norm_modulate(x[0], w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,H,W", [(2, 70, 3, 5), (1, 1, 1, 1), (1, 130, 2, 9)])
def test_layer_norm2d_modulate(dtype, B, C, H, W, device):
    g = torch.Generator().manual_seed(C + H)
    x = _rand((B, C, H, W), dtype, device, g, 3.0, 4.0)   # |mean| >> std: shifted sums matter
    shift, scale = _rand((B, C), dtype, device, g), _rand((B, C), dtype, device, g, 0.5)
    out = layer_norm2d_modulate(x, shift, scale, 1e-6)
    ref = layer_norm2d_modulate_reference(_d(x), _d(shift), _d(scale), 1e-6)
    assert_close(out, ref, dtype, C, factor=8)
    plain = layer_norm2d_modulate(x, None, None, 1e-6)
    assert_close(plain, layer_norm2d_modulate_reference(_d(x), None, None, 1e-6), dtype, C, factor=8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_residual_layer_norm2d_modulate(dtype, device):
    g = torch.Generator().manual_seed(3)
    B, C, H, W = 2, 33, 3, 4
    res, y = _rand((B, C, H, W), dtype, device, g), _rand((B, C, H, W), dtype, device, g)
    gate, shift, scale = (_rand((B, C), dtype, device, g) for _ in range(3))
    x_new, h = gated_residual_layer_norm2d_modulate(res, y, gate, shift, scale, 1e-6)
    x_ref, h_ref = gated_residual_layer_norm2d_modulate_reference(
        _d(res), _d(y), _d(gate), _d(shift), _d(scale), 1e-6)
    assert_close(x_new, x_ref, dtype, 1)
    assert_close(h, h_ref, dtype, C, factor=12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,C,H,W,G,channels_last,affine,silu", [
    (2, 6, 3, 5, 3, False, True, True),     # odd group count, odd spatial size
    (1, 5, 1, 2, 5, True, False, False),    # two elements per group, channels-last
    (1, 8, 48, 48, 4, True, True, True),    # group of 4608 elements: split over 2 programs
    (1, 4, 48, 48, 2, False, True, False),  # NCHW split
    (1, 64, 2, 3, 32, False, True, True),   # condition codec's 32 groups
])
def test_group_norm(dtype, N, C, H, W, G, channels_last, affine, silu, device):
    g = torch.Generator().manual_seed(N + C + H + G)
    x = _rand((N, C, H, W), dtype, device, g, 2.0, 5.0)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = _rand((C,), torch.float32, device, g) if affine else None
    b = _rand((C,), torch.float32, device, g) if affine else None
    out = group_norm(x, G, w, b, 1e-6, silu)
    if channels_last and C > 1 and H * W > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    ref = group_norm_reference(_d(x), G, _d(w), _d(b), 1e-6, silu)
    assert_close(out, ref, dtype, C // G * H * W, factor=8)


def test_group_norm_rejects_bad_arguments(device):
    x = torch.zeros(1, 6, 2, 2, device=device)
    with pytest.raises(ValueError):
        group_norm(x, 4)
    with pytest.raises(ValueError):
        group_norm(x, 3, torch.ones(6, device=device), None)
    with pytest.raises(ValueError):
        group_norm(x, 3, eps=0.0)
