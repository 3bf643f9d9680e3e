"""SwiGLU gate, ``silu(a) * b``, as one elementwise pass.

Official ``FeedForward`` (``CoD/cod/models/pixel_dit.py``) keeps two separate bias-free Linears,
``w2(silu(w1(x)) * w3(x))``, hidden ``int(2 * 4 * 1152 / 3) = 3072``. The matmuls stay with
cuBLAS; this kernel replaces the three elementwise ops in between (silu, mul, and the temporary
they create). ``swiglu_packed`` takes the output of a single Linear whose weight is
``cat([w1, w3])`` (one GEMM instead of two) and reads both halves in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same_device, check_tensor, next_pow2

__all__ = ["swiglu", "swiglu_reference", "swiglu_packed", "swiglu_packed_reference"]


@triton.jit
def _swiglu_kernel(
    a_ptr, b_ptr, out_ptr,
    M, F,
    stride_a, stride_b, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    ok = (rows < M)[:, None] & (cols < F)[None, :]
    a = tl.load(a_ptr + rows[:, None] * stride_a + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + rows[:, None] * stride_b + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    # silu(a) = a * sigmoid(a); exp of a large negative a overflows to inf and gives 0, as it should.
    y = a / (1.0 + tl.exp(-a)) * b
    tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)


def _as_rows(name: str, t: torch.Tensor) -> torch.Tensor:
    """[..., F] -> [M, F] with unit column stride; a view whenever the leading dims merge."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _launch(a2: torch.Tensor, b2: torch.Tensor, out2: torch.Tensor) -> None:
    M, F = a2.shape
    if M * F == 0:
        return
    block_f = min(1024, next_pow2(F))
    block_m = max(1, min(next_pow2(M), 4096 // block_f))
    grid = (triton.cdiv(M, block_m), triton.cdiv(F, block_f))
    _swiglu_kernel[grid](a2, b2, out2, M, F, a2.stride(0), b2.stride(0), out2.stride(0),
                         BLOCK_M=block_m, BLOCK_F=block_f, num_warps=4)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``silu(a) * b`` (Triton). a, b: same shape [..., F], same dtype; returns a new tensor."""
    check_tensor("a", a)
    check_tensor("b", b)
    check_same_device(a=a, b=b)
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"a {tuple(a.shape)} {a.dtype} and b {tuple(b.shape)} {b.dtype} must match")
    if a.dim() == 0:
        raise ValueError("a and b need at least one dimension")
    out = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    if out.numel() == 0:
        return out
    _launch(_as_rows("a", a), _as_rows("b", b), out.view(-1, a.shape[-1]))
    return out


def swiglu_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain torch ``F.silu(a) * b``."""
    return torch.nn.functional.silu(a) * b


def swiglu_packed(h: torch.Tensor) -> torch.Tensor:
    """``silu(h[..., :F]) * h[..., F:]`` for h = x @ cat([w1, w3]).T, [..., 2F] -> [..., F] (Triton)."""
    check_tensor("h", h)
    if h.dim() == 0 or h.shape[-1] % 2:
        raise ValueError(f"h must be [..., 2F], got {tuple(h.shape)}")
    F = h.shape[-1] // 2
    out = torch.empty((*h.shape[:-1], F), dtype=h.dtype, device=h.device)
    if out.numel() == 0:
        return out
    h2 = _as_rows("h", h)
    _launch(h2[:, :F], h2[:, F:], out.view(-1, F))
    return out


def swiglu_packed_reference(h: torch.Tensor) -> torch.Tensor:
    """Plain torch ``silu(h1) * h3`` with ``h1, h3 = h.chunk(2, -1)``."""
    a, b = h.chunk(2, dim=-1)
    return torch.nn.functional.silu(a) * b
