"""RMSNorm + adaLN modulate, optionally fused with the gated residual add before it.

PixNerDiT's ``FlattenDiTBlock`` (``CoD/cod/models/pixel_dit.py``) computes, per sub-layer::

    x = x + gate * sublayer(modulate(norm(x), shift, scale))

with ``norm`` an RMSNorm (weight, eps 1e-6) and ``modulate(h) = h * (1 + scale) + shift``.
The residual add of one sub-layer and the norm + modulate of the next read the same row, so
``gated_residual_rms_norm_modulate`` does both in one pass and writes the new residual stream and
the normalised input of the next sub-layer. ``NerfBlock``/``NerfFinalLayer`` use the plain
RMSNorm (shift/scale None, gate None).

Shapes: x/y/residual [B, T, C]; weight [C]; shift/scale/gate [B, C], [B, 1, C] (broadcast over
tokens, PixNerDiT) or [B, T, C] (per token, DDT decoder blocks). Loads fp16/bf16/fp32, computes fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same_device, check_tensor, next_pow2, num_warps_for

__all__ = [
    "rms_norm_modulate",
    "rms_norm_modulate_reference",
    "gated_residual_rms_norm_modulate",
    "gated_residual_rms_norm_modulate_reference",
]

#: Largest hidden size handled in one register tile per row.
MAX_HIDDEN = 65536


@triton.jit
def _rms_norm_modulate_kernel(
    x_ptr, res_ptr, gate_ptr, w_ptr, shift_ptr, scale_ptr, out_ptr, xout_ptr,
    M, C, T,
    stride_x, stride_res, stride_out, stride_xout,
    stride_gb, stride_gt, stride_sb, stride_st, stride_cb, stride_ct,
    eps,
    HAS_MOD: tl.constexpr, HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # One program normalises BLOCK_M whole rows; BLOCK_C >= C so a row is one register tile.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    row_ok = rows < M
    col_ok = cols < C
    ok = row_ok[:, None] & col_ok[None, :]
    # Row r is token t of batch b; shift/scale/gate use (b, t) strides (stride_*t == 0: broadcast).
    b = rows // T
    t = rows % T

    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(res_ptr + rows[:, None] * stride_res + cols[None, :], mask=ok, other=0.0)
        r = r.to(tl.float32)
        if HAS_GATE:
            g = tl.load(gate_ptr + b[:, None] * stride_gb + t[:, None] * stride_gt + cols[None, :],
                        mask=ok, other=0.0).to(tl.float32)
            x = r + g * x
        else:
            x = r + x
        x_store = x.to(xout_ptr.dtype.element_ty)
        tl.store(xout_ptr + rows[:, None] * stride_xout + cols[None, :], x_store, mask=ok)
        # Normalise the value as stored, exactly what the unfused sequence would read back.
        x = x_store.to(tl.float32)

    # Padding columns hold 0 and add nothing to the sum of squares.
    var = tl.sum(x * x, axis=1) / C
    rstd = tl.rsqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = x * rstd[:, None] * w[None, :]
    if HAS_MOD:
        sc = tl.load(scale_ptr + b[:, None] * stride_cb + t[:, None] * stride_ct + cols[None, :],
                     mask=ok, other=0.0).to(tl.float32)
        sh = tl.load(shift_ptr + b[:, None] * stride_sb + t[:, None] * stride_st + cols[None, :],
                     mask=ok, other=0.0).to(tl.float32)
        y = y * (1.0 + sc) + sh
    tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :],
             y.to(out_ptr.dtype.element_ty), mask=ok)


def _per_batch_strides(name: str, t: torch.Tensor | None, B: int, T: int, C: int) -> tuple[int, int]:
    """(batch stride, token stride) of a [B, C] / [B, 1, C] / [B, T, C] modulation tensor."""
    if t is None:
        return 0, 0
    check_tensor(name, t)
    if t.dim() == 2 and tuple(t.shape) == (B, C):
        sb, st = t.stride(0), 0
    elif t.dim() == 3 and tuple(t.shape) in ((B, 1, C), (B, T, C)):
        sb, st = t.stride(0), (t.stride(1) if t.shape[1] == T and T > 1 else 0)
    else:
        raise ValueError(f"{name} must have shape [B, C], [B, 1, C] or [B, T, C] with "
                         f"B={B}, T={T}, C={C}; got {tuple(t.shape)}")
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")
    return sb, st


def _rows(name: str, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """t viewed as [B*T, C] rows with unit column stride (copies only if it must)."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    t2 = t.reshape(-1, shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _launch(x, residual, gate, weight, shift, scale, eps):
    check_tensor("x", x, 3)
    check_tensor("weight", weight, 1)
    if (shift is None) != (scale is None):
        raise ValueError("shift and scale must be given together (or both None)")
    check_same_device(x=x, residual=residual, gate=gate, weight=weight, shift=shift, scale=scale)
    B, T, C = x.shape
    if weight.shape[0] != C:
        raise ValueError(f"weight has {weight.shape[0]} entries, x has hidden size {C}")
    if C > MAX_HIDDEN:
        raise ValueError(f"hidden size {C} exceeds {MAX_HIDDEN}")
    if not float(eps) > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    weight = weight.contiguous()
    x2 = _rows("x", x, x.shape)
    out = torch.empty((B * T, C), dtype=x.dtype, device=x.device)
    has_res = residual is not None
    if has_res:
        check_tensor("residual", residual, 3)
        r2 = _rows("residual", residual, x.shape)
        xout = torch.empty((B * T, C), dtype=residual.dtype, device=x.device)
    else:
        r2, xout = x2, out
    gsb, gst = _per_batch_strides("gate", gate, B, T, C)
    ssb, sst = _per_batch_strides("shift", shift, B, T, C)
    csb, cst = _per_batch_strides("scale", scale, B, T, C)
    M = B * T
    if M == 0 or C == 0:
        return out.view(B, T, C), (xout.view(B, T, C) if has_res else None)
    block_c = next_pow2(C)
    block_m = max(1, min(next_pow2(M), 4096 // block_c))
    grid = (triton.cdiv(M, block_m),)
    _rms_norm_modulate_kernel[grid](
        x2, r2, gate if gate is not None else x2, weight,
        shift if shift is not None else x2, scale if scale is not None else x2, out, xout,
        M, C, T,
        x2.stride(0), r2.stride(0), out.stride(0), xout.stride(0),
        gsb, gst, ssb, sst, csb, cst,
        float(eps),
        HAS_MOD=shift is not None, HAS_RES=has_res, HAS_GATE=gate is not None,
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=num_warps_for(block_m * block_c),
    )
    return out.view(B, T, C), (xout.view(B, T, C) if has_res else None)


def rms_norm_modulate(
    x: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``modulate(RMSNorm(x), shift, scale)`` in one pass (Triton).

    x: [B, T, C] fp16/bf16/fp32; weight: [C]; shift/scale: [B, C], [B, 1, C] or [B, T, C], or
    both None for a plain RMSNorm. Returns [B, T, C] in x's dtype.
    """
    out, _ = _launch(x, None, None, weight, shift, scale, eps)
    return out


def rms_norm_modulate_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Plain-torch ``modulate(RMSNorm(x), shift, scale)`` with the official RMSNorm's maths.

    Same shapes as :func:`rms_norm_modulate`; fp64 inputs give an fp64 ground truth.
    """
    dtype = x.dtype
    h = x.to(torch.float32) if dtype != torch.float64 else x
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    h = weight.to(h.dtype) * h.to(dtype).to(h.dtype)
    if shift is not None:
        B, C = x.shape[0], x.shape[-1]
        shift = shift.reshape(B, -1, C).to(h.dtype)
        scale = scale.reshape(B, -1, C).to(h.dtype)
        h = h * (1 + scale) + shift
    return h.to(dtype)


def gated_residual_rms_norm_modulate(
    residual: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor | None,
    weight: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x = residual + gate * y; h = modulate(RMSNorm(x), shift, scale)`` in one pass (Triton).

    residual/y: [B, T, C]; gate: [B, C], [B, 1, C], [B, T, C] or None (plain add, NerfBlock);
    weight [C]; shift/scale as in :func:`rms_norm_modulate`. Returns ``(x, h)``, both [B, T, C]:
    x in residual's dtype, h in y's dtype.
    """
    if residual is None:
        raise ValueError("residual is required")
    if y.dtype != residual.dtype:
        raise TypeError(f"y ({y.dtype}) and residual ({residual.dtype}) must share a dtype")
    out, xout = _launch(y, residual, gate, weight, shift, scale, eps)
    return xout, out


def gated_residual_rms_norm_modulate_reference(
    residual: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor | None,
    weight: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch ``x = residual + gate * y`` then :func:`rms_norm_modulate_reference` of x."""
    if gate is None:
        x = residual + y
    else:
        x = residual + gate.reshape(y.shape[0], -1, y.shape[-1]) * y
    return x, rms_norm_modulate_reference(x, weight, shift, scale, eps)
