"""QK-RMSNorm + 2-D RoPE on PixNerDiT's fused qkv output, q and k in one launch.

Official ``RAttention.forward`` (``CoD/cod/models/pixel_dit.py``): ``qkv`` is the Linear output
reshaped to [B, N, 3, H, D]; q and k each get a per-head RMSNorm (weight [D], eps 1e-6), then
``apply_rotary_emb``: consecutive pairs (d = 2j, 2j+1) are one complex number multiplied by
``freqs_cis[n, j]`` (interleaved pairs, not halves). ``precompute_freqs_cis_2d`` alternates x and y
frequencies along j, so the kernel just takes the complex table [N, D/2] the model already holds.
q and k are then transposed to [B, H, N, D] for attention; the kernel writes that layout directly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same_device, check_tensor, next_pow2, num_warps_for

__all__ = ["qk_norm_rope", "qk_norm_rope_reference"]


@triton.jit
def _qk_norm_rope_kernel(
    qkv_ptr, qw_ptr, kw_ptr, freqs_ptr, q_out_ptr, k_out_ptr,
    R, N, H, D,
    s_b, s_n, s_three, s_h,
    so_b, so_h, so_n,
    s_fn,
    eps,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Axis 1 picks q (0) or k (1); axis 0 walks rows r = (b, n, h) of D elements.
    which = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    b = rows // (N * H)
    n = (rows // H) % N
    h = rows % H
    ok = (rows < R)[:, None] & (cols < D)[None, :]

    src = qkv_ptr + b * s_b + n * s_n + which * s_three + h * s_h
    x = tl.load(src[:, None] + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    if which == 0:
        w = tl.load(qw_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    else:
        w = tl.load(kw_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    x = x * rstd[:, None] * w[None, :]

    # Complex multiply of interleaved pairs: (xe + i xo) * (cos + i sin).
    # freqs is the complex table viewed as real: [N, D/2, 2] -> element d holds cos (d even) or
    # sin (d odd) of pair d // 2, i.e. the same interleaving as x itself.
    f_ok = (rows < R)[:, None] & (cols < D)[None, :]
    cs = tl.load(freqs_ptr + n[:, None] * s_fn + cols[None, :], mask=f_ok, other=0.0)
    xe, xo = tl.split(tl.reshape(x, (BLOCK_R, BLOCK_D // 2, 2)))
    cos, sin = tl.split(tl.reshape(cs, (BLOCK_R, BLOCK_D // 2, 2)))
    ye = xe * cos - xo * sin
    yo = xe * sin + xo * cos
    y = tl.interleave(ye, yo)

    dst = b * so_b + h * so_h + n * so_n
    if which == 0:
        tl.store(q_out_ptr + dst[:, None] + cols[None, :], y.to(q_out_ptr.dtype.element_ty), mask=ok)
    else:
        tl.store(k_out_ptr + dst[:, None] + cols[None, :], y.to(k_out_ptr.dtype.element_ty), mask=ok)


def _check(qkv, q_weight, k_weight, freqs_cis):
    check_tensor("qkv", qkv, 5)
    check_tensor("q_weight", q_weight, 1)
    check_tensor("k_weight", k_weight, 1)
    if not isinstance(freqs_cis, torch.Tensor) or freqs_cis.dtype != torch.complex64:
        raise TypeError("freqs_cis must be a complex64 tensor [N, D/2] (precompute_freqs_cis_2d)")
    check_same_device(qkv=qkv, q_weight=q_weight, k_weight=k_weight, freqs_cis=freqs_cis)
    B, N, three, H, D = qkv.shape
    if three != 3:
        raise ValueError(f"qkv must be [B, N, 3, H, D], got {tuple(qkv.shape)}")
    if D % 2:
        raise ValueError(f"head dim must be even for RoPE, got {D}")
    if tuple(q_weight.shape) != (D,) or tuple(k_weight.shape) != (D,):
        raise ValueError(f"q_weight/k_weight must be [{D}]")
    if tuple(freqs_cis.shape) != (N, D // 2):
        raise ValueError(f"freqs_cis must be [{N}, {D // 2}], got {tuple(freqs_cis.shape)}")
    return B, N, H, D


def qk_norm_rope(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    freqs_cis: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm(q)·RoPE and RMSNorm(k)·RoPE from qkv in one launch (Triton).

    qkv: [B, N, 3, H, D] fp16/bf16/fp32 (last dim contiguous, e.g. ``linear(x).view(...)``);
    q_weight/k_weight: [D]; freqs_cis: complex64 [N, D/2]. Returns q, k as [B, H, N, D]
    contiguous tensors in qkv's dtype (the SDPA layout).
    """
    B, N, H, D = _check(qkv, q_weight, k_weight, freqs_cis)
    if not float(eps) > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    q = torch.empty((B, H, N, D), dtype=qkv.dtype, device=qkv.device)
    k = torch.empty_like(q)
    R = B * N * H
    if R == 0:
        return q, k
    freqs = torch.view_as_real(freqs_cis.contiguous()).reshape(N, D)
    block_d = max(2, next_pow2(D))
    block_r = max(1, min(next_pow2(R), 2048 // block_d))
    grid = (triton.cdiv(R, block_r), 2)
    _qk_norm_rope_kernel[grid](
        qkv, q_weight.contiguous(), k_weight.contiguous(), freqs, q, k,
        R, N, H, D,
        qkv.stride(0), qkv.stride(1), qkv.stride(2), qkv.stride(3),
        q.stride(0), q.stride(1), q.stride(2),
        freqs.stride(0),
        float(eps),
        BLOCK_R=block_r, BLOCK_D=block_d, num_warps=num_warps_for(block_r * block_d),
    )
    return q, k


def qk_norm_rope_reference(
    qkv: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    freqs_cis: torch.Tensor,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch, the official maths: RMSNorm per head, interleaved-pair complex RoPE.

    Same shapes as :func:`qk_norm_rope`; fp64 qkv gives an fp64 ground truth (complex128).
    """
    dtype = qkv.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    outs = []
    for i, w in ((0, q_weight), (1, k_weight)):
        x = qkv[:, :, i].to(work)                                   # [B, N, H, D]
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        x = w.to(work) * x.to(dtype).to(work)
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
        f = freqs_cis.to(torch.complex128 if work == torch.float64 else torch.complex64)
        y = torch.view_as_real(xc * f[None, :, None, :]).flatten(3)
        outs.append(y.to(dtype).transpose(1, 2).contiguous())
    return outs[0], outs[1]
