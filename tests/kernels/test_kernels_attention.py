"""QK-norm + RoPE and attention kernels against fp64 references."""

import pytest
import torch
from tolerances import DTYPES, assert_close

from cod_fast.kernels.attention import (
    attention,
    attention_reference,
    spatial_attention,
    spatial_attention_reference,
)
from cod_fast.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_reference


def _rand(shape, dtype, device, gen, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)


def _d(t):
    return t.detach().cpu().to(torch.float64)


def _freqs_2d(dim: int, height: int, width: int, theta: float = 1e4, scale: float = 16.0) -> torch.Tensor:
    """PixNerDiT's 2-D RoPE table, complex64 [H*W, dim/2]: pairs alternate x and y frequencies."""
    ys, xs = torch.meshgrid(torch.linspace(0, scale, height), torch.linspace(0, scale, width), indexing="ij")
    f = 1.0 / theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim)
    ang = torch.stack([torch.outer(xs.reshape(-1), f), torch.outer(ys.reshape(-1), f)], dim=-1)
    ang = ang.reshape(height * width, -1)
    return torch.polar(torch.ones_like(ang), ang)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,h,w,H,D", [(2, 2, 3, 3, 72), (1, 1, 1, 1, 64), (1, 3, 1, 2, 8)])
def test_qk_norm_rope(dtype, B, h, w, H, D, device):
    g = torch.Generator().manual_seed(D + H)
    N = h * w
    qkv = _rand((B, N, 3 * H * D), dtype, device, g).view(B, N, 3, H, D)
    qw, kw = _rand((D,), torch.float32, device, g), _rand((D,), torch.float32, device, g)
    freqs = _freqs_2d(D, h, w).to(device) if D % 4 == 0 else None
    if freqs is None:
        ang = torch.rand((N, D // 2), generator=g) * 6.0
        freqs = torch.polar(torch.ones_like(ang), ang).to(device)
    q, k = qk_norm_rope(qkv, qw, kw, freqs, 1e-6)
    q_ref, k_ref = qk_norm_rope_reference(_d(qkv), _d(qw), _d(kw), freqs.cpu(), 1e-6)
    assert q.shape == (B, H, N, D) and q.is_contiguous()
    assert_close(q, q_ref, dtype, D, factor=8)
    assert_close(k, k_ref, dtype, D, factor=8)


def test_qk_norm_rope_rejects_bad_arguments(device):
    qkv = torch.zeros(1, 4, 3, 2, 8, device=device)
    w = torch.ones(8, device=device)
    f = torch.ones(4, 4, dtype=torch.complex64, device=device)
    with pytest.raises(TypeError):
        qk_norm_rope(qkv, w, w, f.real)
    with pytest.raises(ValueError):
        qk_norm_rope(qkv, w, w, f[:3])
    with pytest.raises(ValueError):
        qk_norm_rope(torch.zeros(1, 4, 2, 2, 8, device=device), w, w, f)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,NQ,NK,D", [
    (1, 2, 37, 37, 72),   # PixNerDiT head dim (64 + 16 tiles), ragged token count
    (2, 1, 5, 70, 64),    # several key blocks, cross lengths
    (1, 1, 1, 1, 8),      # one token, tiny head (padded to 16)
    (1, 1, 9, 9, 200),    # head dim > 128: chunked q.k, 4 output slices
    (1, 1, 17, 17, 96),   # 64 + 32 tiles, no padding
])
def test_attention(dtype, B, H, NQ, NK, D, device):
    g = torch.Generator().manual_seed(NQ + D)
    q = _rand((B, H, NQ, D), dtype, device, g)
    k = _rand((B, H, NK, D), dtype, device, g)
    v = _rand((B, H, NK, D), dtype, device, g)
    out = attention(q, k, v)
    assert_close(out, attention_reference(_d(q), _d(k), _d(v)), dtype, max(D, NK))


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_strided_inputs_from_qkv(dtype, device):
    # v read straight from a [B, N, 3, H, D] qkv buffer through a permuted view.
    g = torch.Generator().manual_seed(11)
    B, N, H, D = 1, 20, 2, 72
    qkv = _rand((B, N, 3, H, D), dtype, device, g)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    out = attention(q, k, v, sm_scale=0.3)
    assert_close(out, attention_reference(_d(q), _d(k), _d(v), 0.3), dtype, max(D, N))
    # The output is a [B, N, H, D] buffer seen as [B, H, N, D]: merging heads is free.
    assert out.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,c,h,w", [(1, 130, 3, 5), (2, 32, 4, 4), (1, 1, 1, 1)])
def test_spatial_attention(dtype, b, c, h, w, device):
    g = torch.Generator().manual_seed(c + h)
    q, k, v = (_rand((b, c, h, w), dtype, device, g) for _ in range(3))
    out = spatial_attention(q, k, v)
    assert out.shape == (b, c, h, w)
    assert_close(out, spatial_attention_reference(_d(q), _d(k), _d(v)), dtype, max(c, h * w))


def test_head_split():
    from cod_fast.kernels.attention import head_split

    assert head_split(72) == (64, 16)
    assert head_split(64) == (64, 0)
    assert head_split(96) == (64, 32)
    assert head_split(8) == (16, 0)
    assert head_split(100) == (128, 0)


def test_attention_rejects_bad_arguments(device):
    q = torch.zeros(1, 1, 4, 8, device=device)
    with pytest.raises(ValueError):
        attention(q, torch.zeros(1, 1, 4, 16, device=device), torch.zeros(1, 1, 4, 16, device=device))
    with pytest.raises(TypeError):
        attention(q, q.half(), q)
    with pytest.raises(ValueError):
        attention(q, q[:, :, :0], q[:, :, :0])
