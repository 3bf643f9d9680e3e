"""SwiGLU and masked-convolution kernels against fp64 references."""

import pytest
import torch
from tolerances import DTYPES, assert_close

from cod_fast.kernels.masked_conv import conv_mask, masked_conv2d, masked_conv2d_reference
from cod_fast.kernels.swiglu import swiglu, swiglu_packed, swiglu_packed_reference, swiglu_reference


def _rand(shape, dtype, device, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)


def _d(t):
    return None if t is None else t.detach().cpu().to(torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), (2, 1030)])
def test_swiglu(dtype, shape, device):
    g = torch.Generator().manual_seed(len(shape))
    a, b = _rand(shape, dtype, device, g, 4.0), _rand(shape, dtype, device, g)
    assert_close(swiglu(a, b), swiglu_reference(_d(a), _d(b)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_packed(dtype, device):
    g = torch.Generator().manual_seed(5)
    h = _rand((2, 3, 2 * 19), dtype, device, g, 4.0)
    assert_close(swiglu_packed(h), swiglu_packed_reference(_d(h)), dtype)


def test_swiglu_rejects_bad_arguments(device):
    with pytest.raises(ValueError):
        swiglu(torch.zeros(3, device=device), torch.zeros(4, device=device))
    with pytest.raises(ValueError):
        swiglu_packed(torch.zeros(2, 5, device=device))


def test_conv_masks_match_compressai_construction():
    a = conv_mask("A", 5, 5)
    assert a.sum() == 12 and a[2, 2] == 0 and a[2, 1] == 1 and a[3].sum() == 0
    b = conv_mask("B", 5, 5)
    assert b.sum() == 13 and b[2, 2] == 1
    cb = conv_mask("checkerboard", 5, 5)
    assert cb.sum() == 12 and cb[0, 1] == 1 and cb[0, 0] == 0 and cb[2, 2] == 0
    assert conv_mask("checkerboard_B", 5, 5)[2, 2] == 1
    assert torch.equal(conv_mask("none", 3, 3), torch.ones(3, 3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_type", ["A", "B", "checkerboard_A", "checkerboard_B"])
def test_masked_conv2d(dtype, mask_type, device):
    g = torch.Generator().manual_seed(len(mask_type))
    x = _rand((2, 5, 6, 7), dtype, device, g)
    w = _rand((9, 5, 5, 5), dtype, device, g, 0.2)
    b = _rand((9,), dtype, device, g)
    out = masked_conv2d(x, w, b, mask_type)
    assert_close(out, masked_conv2d_reference(_d(x), _d(w), _d(b), mask_type), dtype, 5 * 25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_masked_conv2d_awkward_shapes(dtype, device):
    g = torch.Generator().manual_seed(1)
    # 3x3 kernel, 1x1 image (every tap but the centre reads padding), no bias; and 40 input
    # channels (two channel chunks) with 17 outputs.
    for (n, ci, co, h, w, k) in [(1, 3, 2, 1, 1, 3), (1, 40, 17, 3, 2, 5)]:
        x = _rand((n, ci, h, w), dtype, device, g)
        wt = _rand((co, ci, k, k), dtype, device, g, 0.2)
        out = masked_conv2d(x, wt, None, "B")
        assert_close(out, masked_conv2d_reference(_d(x), _d(wt), None, "B"), dtype, ci * k * k)


def test_masked_conv2d_ignores_masked_weights(device):
    # Garbage in masked taps must not reach the output: the kernel never reads them.
    g = torch.Generator().manual_seed(2)
    x = _rand((1, 4, 5, 5), torch.float32, device, g)
    w = _rand((4, 4, 5, 5), torch.float32, device, g)
    poisoned = w.clone()
    poisoned[:, :, conv_mask("A", 5, 5).to(device) == 0] = float("nan")
    torch.testing.assert_close(masked_conv2d(x, poisoned, None, "A"), masked_conv2d(x, w, None, "A"))


def test_masked_conv2d_rejects_bad_arguments(device):
    x = torch.zeros(1, 4, 5, 5, device=device)
    with pytest.raises(ValueError):
        masked_conv2d(x, torch.zeros(4, 4, 4, 4, device=device), None, "A")
    with pytest.raises(ValueError):
        masked_conv2d(x, torch.zeros(4, 3, 5, 5, device=device), None, "A")
    with pytest.raises(ValueError):
        masked_conv2d(x, torch.zeros(4, 4, 5, 5, device=device), None, "C")
