"""Channel LayerNorm on NCHW (no affine) + adaLN modulate, optionally after the gated residual add.

CoD-Lite's ``DiCoBlock`` (``CoD_Lite/cod/models/pixel_cnn.py``) normalises each pixel over its C
channels with ``LayerNorm2d`` -- a permute to NHWC, ``F.layer_norm`` (affine=False, eps 1e-6) and a
permute back, two full copies -- then ``modulate`` with per-(batch, channel) shift/scale::

    x = inp + gate_msa * branch1(modulate(norm1(inp), shift_msa, scale_msa))
    x = x + gate_mlp * branch2(modulate(norm2(x), shift_mlp, scale_mlp))

This kernel reads NCHW directly: a program owns BLOCK_P pixels of one image and walks the channels
in chunks, first accumulating the per-pixel sums (shifted by channel 0's value, for accuracy), then
normalising. Pixels are the contiguous axis, so every load is coalesced. The gated variant also
writes the new residual stream ``inp + gate * y`` (recomputed in the second pass from cache rather
than re-read from the buffer it is writing).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same_device, check_tensor, next_pow2

__all__ = [
    "layer_norm2d_modulate",
    "layer_norm2d_modulate_reference",
    "gated_residual_layer_norm2d_modulate",
    "gated_residual_layer_norm2d_modulate_reference",
]


@triton.jit
def _ln2d_load(x_ptr, res_ptr, gate_ptr, xout_ptr, base, b, offs_c, offs_p, ok, HW, C,
               HAS_RES: tl.constexpr):
    """fp32 tile [BLOCK_C, BLOCK_P] of the normalised input: x, or residual + gate[b, c] * x.

    Each operand is loaded in its own dtype (autocast mixes bf16/fp16 branches with fp32
    residuals and gates) and the sum is rounded to the residual stream's dtype (xout's)."""
    addr = base + offs_c[:, None] * HW + offs_p[None, :]
    x = tl.load(x_ptr + addr, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(res_ptr + addr, mask=ok, other=0.0).to(tl.float32)
        g = tl.load(gate_ptr + b * C + offs_c, mask=offs_c < C, other=0.0).to(tl.float32)
        x = r + g[:, None] * x
        # The residual stream is stored in its own dtype; normalise that rounded value.
        x = x.to(xout_ptr.dtype.element_ty).to(tl.float32)
    return x


@triton.jit
def _ln2d_modulate_kernel(
    x_ptr, res_ptr, gate_ptr, shift_ptr, scale_ptr, out_ptr, xout_ptr,
    C, HW, eps,
    HAS_MOD: tl.constexpr, HAS_RES: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # x, residual, out, xout: contiguous [B, C, H*W]; shift/scale/gate: contiguous [B, C].
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < HW
    base = b * C * HW
    c0 = tl.arange(0, BLOCK_C)

    # Shift K per pixel: channel 0's value.
    K = _ln2d_load(x_ptr, res_ptr, gate_ptr, xout_ptr, base, b, c0 * 0, offs_p,
                   (c0 == 0)[:, None] & p_ok[None, :], HW, C, HAS_RES)
    K = tl.sum(K, axis=0)
    acc_s = tl.zeros((BLOCK_P,), tl.float32)
    acc_q = tl.zeros((BLOCK_P,), tl.float32)
    for cs in range(0, C, BLOCK_C):
        offs_c = cs + c0
        ok = (offs_c < C)[:, None] & p_ok[None, :]
        x = _ln2d_load(x_ptr, res_ptr, gate_ptr, xout_ptr, base, b, offs_c, offs_p, ok, HW, C, HAS_RES)
        d = tl.where(ok, x - K[None, :], 0.0)
        acc_s += tl.sum(d, axis=0)
        acc_q += tl.sum(d * d, axis=0)
    mean_d = acc_s / C
    var = tl.maximum(acc_q / C - mean_d * mean_d, 0.0)
    mean = K + mean_d
    rstd = tl.rsqrt(var + eps)

    for cs in range(0, C, BLOCK_C):
        offs_c = cs + c0
        c_ok = offs_c < C
        ok = c_ok[:, None] & p_ok[None, :]
        x = _ln2d_load(x_ptr, res_ptr, gate_ptr, xout_ptr, base, b, offs_c, offs_p, ok, HW, C, HAS_RES)
        addr = base + offs_c[:, None] * HW + offs_p[None, :]
        if HAS_RES:
            tl.store(xout_ptr + addr, x.to(xout_ptr.dtype.element_ty), mask=ok)
        y = (x - mean[None, :]) * rstd[None, :]
        if HAS_MOD:
            sc = tl.load(scale_ptr + b * C + offs_c, mask=c_ok, other=0.0).to(tl.float32)
            sh = tl.load(shift_ptr + b * C + offs_c, mask=c_ok, other=0.0).to(tl.float32)
            y = y * (1.0 + sc[:, None]) + sh[:, None]
        tl.store(out_ptr + addr, y.to(out_ptr.dtype.element_ty), mask=ok)


def _check_bc(name: str, t: torch.Tensor | None, B: int, C: int) -> torch.Tensor | None:
    if t is None:
        return None
    check_tensor(name, t)
    if t.numel() != B * C or t.shape[0] != B:
        raise ValueError(f"{name} must hold [B, C] = [{B}, {C}] values, got {tuple(t.shape)}")
    return t.reshape(B, C).contiguous()


def _out_dtypes(x: torch.Tensor, residual: torch.Tensor | None, gate: torch.Tensor | None,
                shift: torch.Tensor | None, scale: torch.Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """(dtype of the residual stream ``residual + gate * x``, dtype of the normalised output), as
    the reference computes them: type promotion of the operands, and under autocast LayerNorm runs
    and returns fp32 (it is on autocast's fp32 list) before the modulation promotes further."""
    stream = x.dtype
    if residual is not None:
        stream = torch.promote_types(torch.promote_types(residual.dtype, gate.dtype), x.dtype)
    out = torch.float32 if torch.is_autocast_enabled(x.device.type) else stream
    if shift is not None:
        out = torch.promote_types(out, torch.promote_types(shift.dtype, scale.dtype))
    return stream, out


def _launch(x, residual, gate, shift, scale, eps):
    check_tensor("x", x, 4)
    if (shift is None) != (scale is None):
        raise ValueError("shift and scale must be given together (or both None)")
    check_same_device(x=x, residual=residual, gate=gate, shift=shift, scale=scale)
    if not float(eps) > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    B, C, H, W = x.shape
    shift = _check_bc("shift", shift, B, C)
    scale = _check_bc("scale", scale, B, C)
    x = x.contiguous()
    has_res = residual is not None
    if has_res:
        check_tensor("residual", residual, 4)
        if residual.shape != x.shape:
            raise ValueError(f"residual must match y in shape: {tuple(residual.shape)} vs {tuple(x.shape)}")
        if gate is None:
            raise ValueError("gate is required with a residual (DiCoBlock gates every branch)")
        gate = _check_bc("gate", gate, B, C)
        residual = residual.contiguous()
    stream_dtype, out_dtype = _out_dtypes(x, residual, gate, shift, scale)
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if has_res:
        xout = torch.empty(x.shape, dtype=stream_dtype, device=x.device)
    else:
        residual, xout = x, out
    HW = H * W
    if B * C * HW == 0:
        return out, (xout if has_res else None)
    block_c = min(64, next_pow2(C))
    block_p = min(64, max(16, next_pow2(HW)))
    grid = (triton.cdiv(HW, block_p), B)
    _ln2d_modulate_kernel[grid](
        x, residual, gate if gate is not None else x,
        shift if shift is not None else x, scale if scale is not None else x, out, xout,
        C, HW, float(eps),
        HAS_MOD=shift is not None, HAS_RES=has_res,
        BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )
    return out, (xout if has_res else None)


def layer_norm2d_modulate(
    x: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``modulate(LayerNorm2d(x), shift, scale)`` on NCHW in one kernel (Triton).

    x: [B, C, H, W] fp16/bf16/fp32; shift/scale: [B, C] (or [B, C, 1, 1]), or both None for the
    plain LayerNorm2d (affine=False). Returns contiguous [B, C, H, W] in the reference's dtype: x's
    promoted with shift/scale's, and fp32 under autocast (LayerNorm autocasts to fp32).
    """
    out, _ = _launch(x, None, None, shift, scale, eps)
    return out


def layer_norm2d_modulate_reference(
    x: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Plain torch, the official two-permute LayerNorm2d then modulate (fp64 if given fp64)."""
    B, C = x.shape[:2]
    h = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (C,), None, None, eps).permute(0, 3, 1, 2)
    if shift is not None:
        h = h * (1 + scale.reshape(B, C, 1, 1)) + shift.reshape(B, C, 1, 1)
    return h.contiguous()


def gated_residual_layer_norm2d_modulate(
    residual: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x = residual + gate * y; h = modulate(LayerNorm2d(x), shift, scale)`` (Triton).

    residual/y: [B, C, H, W], any supported dtypes (autocast gives bf16/fp16 ``y`` and fp32
    ``residual``); gate/shift/scale: [B, C]. Returns ``(x, h)``, contiguous [B, C, H, W]: ``x`` in the
    promoted dtype of residual, gate and y; ``h`` as :func:`layer_norm2d_modulate` of that ``x``.
    """
    out, xout = _launch(y, residual, gate, shift, scale, eps)
    return xout, out


def gated_residual_layer_norm2d_modulate_reference(
    residual: torch.Tensor,
    y: torch.Tensor,
    gate: torch.Tensor,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch ``x = residual + gate[:, :, None, None] * y`` then the reference norm."""
    B, C = y.shape[:2]
    x = residual + gate.reshape(B, C, 1, 1) * y
    return x, layer_norm2d_modulate_reference(x, shift, scale, eps)
