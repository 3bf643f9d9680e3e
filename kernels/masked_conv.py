"""Masked 2-D convolution for entropy context models, as an implicit GEMM without the masked taps.

CompressAI semantics (``compressai/layers/layers.py``): stride 1, padding k // 2, the weight
multiplied by a 0/1 mask before ``conv2d``.

* raster ``"A"``/``"B"`` (``MaskedConv2d``): taps above the centre row, and left of the centre in
  the centre row; ``"B"`` also keeps the centre.
* ``"checkerboard_A"``/``"checkerboard_B"`` (``CheckerboardMaskedConv2d``, He et al. 2021): taps
  with ``ky + kx`` odd; ``"_B"`` also keeps the centre. ``"checkerboard"`` means ``"checkerboard_A"``.
* ``"none"``: every tap (a plain conv, for comparison).

The mask becomes a compile-time bit set ``TAPS`` (bit ky*KW + kx): the tap loop is unrolled with
``tl.static_range`` and masked taps generate no code (a 5x5 type-A mask keeps 12 of 25 taps).
Each program computes a [BLOCK_CO, BLOCK_P] output tile of one image as
sum over (kept tap, input-channel chunk) of W_tap[BLOCK_CO, BLOCK_CI] @ X_shifted[BLOCK_CI, BLOCK_P].
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same_device, check_tensor, dot_precision, next_pow2
from .masked_conv_reference import MASK_TYPES, conv_mask, masked_conv2d_reference

__all__ = ["masked_conv2d", "masked_conv2d_reference", "conv_mask", "MASK_TYPES"]

#: Largest kernel side accepted (the tap loop is unrolled at compile time).
MAX_KERNEL = 11


def _tap_bits(mask: torch.Tensor) -> int:
    """Bit set of kept taps, bit ky*KW + kx."""
    kh, kw = mask.shape
    return sum(1 << (ky * kw + kx) for ky in range(kh) for kx in range(kw) if mask[ky, kx] != 0)


@triton.jit
def _masked_conv2d_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    CI, CO, H, W,
    sx_n, sx_c, sx_h, sx_w,
    sw_o, sw_i, sw_h, sw_w,
    HAS_BIAS: tl.constexpr, TAPS: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_P: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_co = tl.program_id(1)
    n = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    p_ok = offs_p < H * W
    co_ok = offs_co < CO
    oy = offs_p // W
    ox = offs_p % W
    x_base = x_ptr + n * sx_n
    acc = tl.zeros((BLOCK_CO, BLOCK_P), tl.float32)
    # Kept taps are unrolled; each runs its own (dynamic) loop over input-channel chunks, so only
    # one tap's operand tiles are live at a time (an unrolled tap loop inside the channel loop
    # keeps every tap's tiles in shared memory at once: 384 KiB for fp32 5x5, over the limit).
    for ky in tl.static_range(KH):
        for kx in tl.static_range(KW):
            # Compile-time test: a masked tap emits no loads and no dot.
            if (TAPS >> (ky * KW + kx)) & 1:
                iy = oy + (ky - KH // 2)
                ix = ox + (kx - KW // 2)
                # Zero padding: out-of-image taps are masked loads returning 0.
                inside = p_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
                for ci0 in range(0, CI, BLOCK_CI):
                    offs_ci = ci0 + tl.arange(0, BLOCK_CI)
                    ci_ok = offs_ci < CI
                    xt = tl.load(x_base + offs_ci[:, None] * sx_c + iy[None, :] * sx_h + ix[None, :] * sx_w,
                                 mask=ci_ok[:, None] & inside[None, :], other=0.0)
                    wt = tl.load(w_ptr + offs_co[:, None] * sw_o + offs_ci[None, :] * sw_i + ky * sw_h + kx * sw_w,
                                 mask=co_ok[:, None] & ci_ok[None, :], other=0.0)
                    acc = tl.dot(wt.to(xt.dtype), xt, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)[:, None]
    o = out_ptr + n * CO * H * W + offs_co[:, None] * (H * W) + offs_p[None, :]
    tl.store(o, acc.to(out_ptr.dtype.element_ty), mask=co_ok[:, None] & p_ok[None, :])


def masked_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask_type: str,
) -> torch.Tensor:
    """Masked "same" convolution (stride 1, padding k//2) of x with ``weight * mask`` (Triton).

    x: [N, CI, H, W] (any strides); weight: [CO, CI, KH, KW] with odd KH, KW <= 11 -- the raw
    weight, the mask is applied by skipping taps; bias: [CO] or None. Returns contiguous
    [N, CO, H, W] in x's dtype. Equals ``F.conv2d(x, weight * conv_mask(...), bias, padding=k//2)``.
    """
    check_tensor("x", x, 4)
    check_tensor("weight", weight, 4)
    if bias is not None:
        check_tensor("bias", bias, 1)
    check_same_device(x=x, weight=weight, bias=bias)
    N, CI, H, W = x.shape
    CO, CI_w, KH, KW = weight.shape
    if CI_w != CI:
        raise ValueError(f"weight expects {CI_w} input channels, x has {CI}")
    if KH % 2 == 0 or KW % 2 == 0 or KH > MAX_KERNEL or KW > MAX_KERNEL:
        raise ValueError(f"kernel must be odd-sized and at most {MAX_KERNEL}, got {KH}x{KW}")
    if bias is not None and bias.shape[0] != CO:
        raise ValueError(f"bias must be [{CO}]")
    taps = _tap_bits(conv_mask(mask_type, KH, KW))
    out = torch.empty((N, CO, H, W), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if CI == 0 or taps == 0:
        out.copy_(bias.view(1, CO, 1, 1).expand_as(out) if bias is not None else torch.zeros_like(out))
        return out
    # tl.dot needs every tile side >= 16.
    block_co = min(64, max(16, next_pow2(CO)))
    block_ci = min(32, max(16, next_pow2(CI)))
    block_p = min(64, max(16, next_pow2(H * W)))
    grid = (triton.cdiv(H * W, block_p), triton.cdiv(CO, block_co), N)
    _masked_conv2d_kernel[grid](
        x, weight, bias if bias is not None else weight, out,
        CI, CO, H, W,
        *x.stride(), *weight.stride(),
        HAS_BIAS=bias is not None, TAPS=taps, KH=KH, KW=KW,
        BLOCK_CO=block_co, BLOCK_CI=block_ci, BLOCK_P=block_p,
        DOT_PRECISION=dot_precision(x.dtype), num_warps=4,
    )
    return out
