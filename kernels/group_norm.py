"""GroupNorm (+ optional SiLU) on NCHW or channels-last 4-D tensors, in two launches.

The condition codec's ``Normalize`` is ``GroupNorm(32, C, eps=1e-6, affine=True)``, always followed
by Swish in ``ResnetBlock`` (SD-VAE's ResnetBlock is the same). One group of a 512x512 input's first
stage holds 4 x 256 x 256 values, too many for one program, so:

1. ``_gn_stats_kernel``: grid (N*G, SPLIT); each program sums a slice of one group, shifted by the
   group's first value (sums of x - K and (x - K)^2 keep the variance accurate when |mean| >> std),
   and writes the two partial sums.
2. ``_gn_apply_kernel``: the same grid; each program adds up the SPLIT partials of its group,
   then normalises its slice, applies the per-channel affine and optional SiLU, and stores.

A group is channels [g*Cg, (g+1)*Cg) x all H*W pixels. Element i of a group is (channel i // HW,
pixel i % HW) in NCHW order and (pixel i // Cg, channel i % Cg) in channels-last order, so both
layouts walk memory contiguously.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same_device, check_tensor, next_pow2

__all__ = ["group_norm", "group_norm_reference"]

#: Elements per program-slice the SPLIT heuristic aims at.
_SLICE_TARGET = 4096
#: Most slices per group (partials are reduced in one register tile).
_MAX_SPLIT = 64
_BLOCK = 1024


@triton.jit
def _group_elem_offsets(idx, n, g, Cg, HW, s_n, s_c, s_p, CHANNELS_LAST: tl.constexpr):
    """Memory offsets and channel indices of group elements ``idx`` of group (n, g)."""
    if CHANNELS_LAST:
        p = idx // Cg
        c = g * Cg + idx % Cg
    else:
        c = g * Cg + idx // HW
        p = idx % HW
    return n * s_n + c * s_c + p * s_p, c


@triton.jit
def _gn_stats_kernel(
    x_ptr, part_ptr,
    G, Cg, HW, E, slice_len,
    s_n, s_c, s_p,
    SPLIT: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    pid_ng = tl.program_id(0)
    pid_s = tl.program_id(1)
    n = pid_ng // G
    g = pid_ng % G
    # Shift K: the group's first element (channel g*Cg, pixel 0), read by every slice alike.
    K = tl.load(x_ptr + n * s_n + g * Cg * s_c).to(tl.float32)
    acc_s = tl.zeros((BLOCK,), tl.float32)
    acc_q = tl.zeros((BLOCK,), tl.float32)
    start = pid_s * slice_len
    end = tl.minimum(start + slice_len, E)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        ok = idx < end
        addr, c = _group_elem_offsets(idx, n, g, Cg, HW, s_n, s_c, s_p, CHANNELS_LAST)
        x = tl.load(x_ptr + addr, mask=ok, other=0.0).to(tl.float32)
        d = tl.where(ok, x - K, 0.0)
        acc_s += d
        acc_q += d * d
    base = part_ptr + (pid_ng * SPLIT + pid_s) * 2
    tl.store(base, tl.sum(acc_s, axis=0))
    tl.store(base + 1, tl.sum(acc_q, axis=0))


@triton.jit
def _gn_apply_kernel(
    x_ptr, part_ptr, w_ptr, b_ptr, out_ptr,
    G, Cg, HW, E, slice_len,
    s_n, s_c, s_p,
    eps,
    SPLIT: tl.constexpr, CHANNELS_LAST: tl.constexpr, HAS_AFFINE: tl.constexpr,
    APPLY_SILU: tl.constexpr, BLOCK: tl.constexpr,
):
    pid_ng = tl.program_id(0)
    pid_s = tl.program_id(1)
    n = pid_ng // G
    g = pid_ng % G
    K = tl.load(x_ptr + n * s_n + g * Cg * s_c).to(tl.float32)
    sp = tl.arange(0, SPLIT)
    S = tl.sum(tl.load(part_ptr + (pid_ng * SPLIT + sp) * 2), axis=0)
    Q = tl.sum(tl.load(part_ptr + (pid_ng * SPLIT + sp) * 2 + 1), axis=0)
    mean_d = S / E
    # Biased variance, as torch's GroupNorm; clamp the rounding residue of Q/E - mean_d^2.
    var = tl.maximum(Q / E - mean_d * mean_d, 0.0)
    mean = K + mean_d
    rstd = tl.rsqrt(var + eps)
    start = pid_s * slice_len
    end = tl.minimum(start + slice_len, E)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        ok = idx < end
        addr, c = _group_elem_offsets(idx, n, g, Cg, HW, s_n, s_c, s_p, CHANNELS_LAST)
        x = tl.load(x_ptr + addr, mask=ok, other=0.0).to(tl.float32)
        y = (x - mean) * rstd
        if HAS_AFFINE:
            w = tl.load(w_ptr + c, mask=ok, other=0.0).to(tl.float32)
            bb = tl.load(b_ptr + c, mask=ok, other=0.0).to(tl.float32)
            y = y * w + bb
        if APPLY_SILU:
            y = y / (1.0 + tl.exp(-y))
        tl.store(out_ptr + addr, y.to(out_ptr.dtype.element_ty), mask=ok)


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-6,
    silu: bool = False,
) -> torch.Tensor:
    """GroupNorm over x [N, C, H, W] (contiguous NCHW or channels-last), then SiLU if asked (Triton).

    weight/bias: [C] or both None. Returns a tensor in x's dtype and memory format.
    Other layouts are made contiguous first.
    """
    check_tensor("x", x, 4)
    if (weight is None) != (bias is None):
        raise ValueError("weight and bias must be given together (or both None)")
    check_same_device(x=x, weight=weight, bias=bias)
    N, C, H, W = x.shape
    if not isinstance(num_groups, int) or num_groups < 1 or C % num_groups:
        raise ValueError(f"num_groups must be a positive divisor of C={C}, got {num_groups}")
    if weight is not None:
        check_tensor("weight", weight, 1)
        check_tensor("bias", bias, 1)
        if weight.shape[0] != C or bias.shape[0] != C:
            raise ValueError(f"weight/bias must be [{C}]")
    if not float(eps) > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if not channels_last and not x.is_contiguous():
        x = x.contiguous()
    out = torch.empty_like(x, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    G = num_groups
    Cg = C // G
    HW = H * W
    E = Cg * HW
    if N * C * HW == 0:
        return out
    split = min(_MAX_SPLIT, next_pow2(triton.cdiv(E, _SLICE_TARGET)))
    slice_len = triton.cdiv(triton.cdiv(E, split), _BLOCK) * _BLOCK
    block = min(_BLOCK, next_pow2(E))
    partials = torch.empty((N * G, split, 2), dtype=torch.float32, device=x.device)
    s_n, s_c = x.stride(0), x.stride(1)
    s_p = x.stride(3)  # W stride; H stride is W * s_p in both layouts, so pixel p = h*W + w.
    grid = (N * G, split)
    _gn_stats_kernel[grid](x, partials, G, Cg, HW, E, slice_len, s_n, s_c, s_p,
                           SPLIT=split, CHANNELS_LAST=channels_last, BLOCK=block, num_warps=4)
    w = weight.contiguous() if weight is not None else partials
    b = bias.contiguous() if bias is not None else partials
    _gn_apply_kernel[grid](x, partials, w, b, out, G, Cg, HW, E, slice_len, s_n, s_c, s_p, float(eps),
                           SPLIT=split, CHANNELS_LAST=channels_last, HAS_AFFINE=weight is not None,
                           APPLY_SILU=bool(silu), BLOCK=block, num_warps=4)
    return out


def group_norm_reference(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-6,
    silu: bool = False,
) -> torch.Tensor:
    """Plain torch ``F.group_norm`` (+ ``F.silu``), fp32 maths (fp64 if given fp64), x's dtype out."""
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = torch.nn.functional.group_norm(
        x.to(work), num_groups,
        weight.to(work) if weight is not None else None,
        bias.to(work) if bias is not None else None, eps)
    if silu:
        y = torch.nn.functional.silu(y)
    return y.to(x.dtype)
