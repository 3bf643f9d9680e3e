"""Fixed-point SODEC entropy parameters in Triton: integer conv + requantize, and the scale index.

The spec is the module docstring of ``cod_fast.int_params.reference`` (and
``docs/sodec_integer_params.md``); the torch reference beside each kernel here calls that spec's
reference, so the two backends can be compared bit for bit.

* ``int_conv_requant``: one ``IntegerConv`` layer -- nearest upsampling by UP folded into the
  input addressing, "same" conv, int64 accumulation (the spec proves |acc * m| < 2**63),
  ``(acc * m + 2**(s-1)) >> s`` (arithmetic shift), clamp. Each program computes a
  [BLOCK_CO, BLOCK_P] tile as a sum of rank-1 updates over (ci, ky, kx); no ``tl.dot`` (there is
  no int16/int64 tensor-core path, and the hyper synthesis is small).
* ``scale_index``: ``#{k : s_q > T[k]}`` by a loop over the thresholds.

All tensors are integer; no float operation and no libdevice call appears in the kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cod_fast.int_params.reference import check_z, integer_conv_reference
from cod_fast.int_params.reference import entropy_parameters_reference as _entropy_parameters_reference
from cod_fast.int_params.reference import scale_index_reference as _scale_index_reference

from ._common import interpreter_active, next_pow2

__all__ = [
    "entropy_parameters",
    "entropy_parameters_reference",
    "int_conv_requant",
    "int_conv_requant_reference",
    "scale_index",
    "scale_index_reference",
]


@triton.jit
def _int_conv_requant_kernel(
    x_ptr, w_ptr, b_ptr, m_ptr, s_ptr, out_ptr,
    CI, CO, H, W, HI, WI, LO, HI_CLAMP,
    K: tl.constexpr, UP: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # x: int32 [N, CI, HI, WI] contiguous; output grid H = HI * UP, W = WI * UP.
    pid_p = tl.program_id(0)
    pid_co = tl.program_id(1)
    n = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    p_ok = offs_p < H * W
    co_ok = offs_co < CO
    oy = offs_p // W
    ox = offs_p % W
    acc = tl.zeros((BLOCK_CO, BLOCK_P), tl.int64)
    # int64 plane size: offsets like CI * HI * WI may exceed 2**31 at SD sizes.
    plane = HI.to(tl.int64) * WI
    x_base = x_ptr + n.to(tl.int64) * CI * plane
    for ci in range(0, CI):
        for ky in tl.static_range(K):
            for kx in tl.static_range(K):
                iy = oy + (ky - K // 2)
                ix = ox + (kx - K // 2)
                inside = p_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
                # Clamp addresses of padding taps to 0 (their loads are masked to 0 anyway).
                sy = tl.where(inside, iy, 0) // UP
                sx = tl.where(inside, ix, 0) // UP
                xv = tl.load(x_base + ci * plane + sy * WI + sx, mask=inside, other=0).to(tl.int64)
                wv = tl.load(w_ptr + offs_co * (CI * K * K) + ci * (K * K) + ky * K + kx,
                             mask=co_ok, other=0).to(tl.int64)
                acc += wv[:, None] * xv[None, :]
    acc += tl.load(b_ptr + offs_co, mask=co_ok, other=0)[:, None]
    mult = tl.load(m_ptr + offs_co, mask=co_ok, other=1)
    shift = tl.load(s_ptr + offs_co, mask=co_ok, other=1)
    one = tl.full((BLOCK_CO,), 1, tl.int64)
    # Round half up: (v + 2**(s-1)) >> s; >> on signed int64 is the arithmetic shift.
    q = (acc * mult[:, None] + (one << (shift - 1))[:, None]) >> shift[:, None]
    q = tl.minimum(tl.maximum(q, LO), HI_CLAMP)
    o = out_ptr + n.to(tl.int64) * CO * H * W + offs_co.to(tl.int64)[:, None] * (H * W) + offs_p[None, :]
    tl.store(o, q.to(tl.int32), mask=co_ok[:, None] & p_ok[None, :])


@triton.jit
def _scale_index_kernel(s_ptr, t_ptr, out_ptr, NUMEL, NT, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    ok = offs < NUMEL
    s = tl.load(s_ptr + offs, mask=ok, other=0).to(tl.int64)
    idx = tl.zeros((BLOCK,), tl.int32)
    for k in range(0, NT):
        t = tl.load(t_ptr + k)
        idx += (s > t).to(tl.int32)
    tl.store(out_ptr + offs, idx, mask=ok)


def _check_device(t: torch.Tensor, name: str) -> None:
    if t.device.type != "cuda" and not interpreter_active():
        raise ValueError(f"{name} is on {t.device}; the Triton backend needs CUDA (or TRITON_INTERPRET=1)")


def int_conv_requant(a: torch.Tensor, layer) -> torch.Tensor:
    """One ``IntegerConv`` (Triton): int32 activations [N, CI, h, w] -> int32 [N, CO, h*up, w*up].

    Input values must lie in int16 range (the spec's overflow proof); ``layer`` is validated.
    """
    if not isinstance(a, torch.Tensor) or a.dtype != torch.int32 or a.dim() != 4:
        raise TypeError("a must be an int32 tensor [N, CI, h, w]")
    _check_device(a, "a")
    layer.validate()
    n, ci, hi, wi = a.shape
    co, ci_w, k, _ = layer.weight.shape
    if ci_w != ci:
        raise ValueError(f"layer expects {ci_w} input channels, got {ci}")
    if a.numel() and int(a.abs().max()) > 32767:
        raise ValueError("activations must lie in int16 range [-32767, 32767] (the spec's overflow bound)")
    h, w = hi * layer.up, wi * layer.up
    out = torch.empty((n, co, h, w), dtype=torch.int32, device=a.device)
    if out.numel() == 0:
        return out
    dev = a.device
    weight = layer.weight.to(dev).contiguous()
    bias, mult, shift = (t.to(dev).contiguous() for t in (layer.bias, layer.mult, layer.shift))
    block_co = min(32, next_pow2(co))
    block_p = min(128, next_pow2(h * w))
    grid = (triton.cdiv(h * w, block_p), triton.cdiv(co, block_co), n)
    _int_conv_requant_kernel[grid](
        a.contiguous(), weight, bias, mult, shift, out,
        ci, co, h, w, hi, wi, layer.lo, layer.hi,
        K=k, UP=layer.up, BLOCK_CO=block_co, BLOCK_P=block_p, num_warps=4,
    )
    return out


def scale_index(s_q: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``#{k : s_q > T[k]}`` (Triton): int32 scale codes (any shape) -> int32 indexes."""
    if not isinstance(s_q, torch.Tensor) or s_q.dtype != torch.int32:
        raise TypeError("s_q must be an int32 tensor")
    _check_device(s_q, "s_q")
    t = thresholds.to(device=s_q.device, dtype=torch.int64).contiguous()
    s = s_q.contiguous()
    out = torch.empty_like(s)
    if s.numel() == 0:
        return out
    block = 1024
    _scale_index_kernel[(triton.cdiv(s.numel(), block),)](s, t, out, s.numel(), t.numel(), BLOCK=block)
    return out


def entropy_parameters(params, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes, means) int32 [N, M, H, W] of the integer spec, every layer in Triton.

    z_hat: integer z symbols [N, Cz, h, w] on a CUDA device (CPU under TRITON_INTERPRET=1; a CPU
    tensor is moved to CUDA when a GPU runs the kernels). Results come back on the CPU.
    """
    device = z_hat.device if isinstance(z_hat, torch.Tensor) else torch.device("cpu")
    if device.type != "cuda" and not interpreter_active():
        if not torch.cuda.is_available():
            raise ValueError("the Triton backend needs a CUDA device (or TRITON_INTERPRET=1)")
        device = torch.device("cuda")
    a = check_z(z_hat, params).to(device=device, dtype=torch.int32)
    for layer in params.layers:
        a = int_conv_requant(a, layer)
    m = params.n_channels
    indexes = scale_index(a[:, :m].contiguous(), params.thresholds)
    return indexes.cpu(), a[:, m:].cpu()


def int_conv_requant_reference(a: torch.Tensor, layer) -> torch.Tensor:
    """Torch reference of ``int_conv_requant`` (the spec's ``integer_conv_reference``), int32."""
    return integer_conv_reference(a.cpu().to(torch.int64), layer).to(torch.int32)


def scale_index_reference(s_q: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Torch reference of ``scale_index``."""
    return _scale_index_reference(s_q.cpu(), thresholds)


def entropy_parameters_reference(params, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of ``entropy_parameters``."""
    return _entropy_parameters_reference(params, z_hat)
