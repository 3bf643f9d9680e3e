"""Torch-only half of ``masked_conv``: the masks and the plain-torch reference convolution.

Kept apart from the Triton kernel so that models (SODEC's checkerboard context) and tests can use
the reference without Triton installed; ``cod_fast.kernels.masked_conv`` re-exports every name.
CompressAI semantics: stride 1, padding k // 2, the weight multiplied by a 0/1 mask.
"""

from __future__ import annotations

import torch

__all__ = ["MASK_TYPES", "conv_mask", "masked_conv2d_reference"]

MASK_TYPES = ("A", "B", "checkerboard", "checkerboard_A", "checkerboard_B", "none")


def conv_mask(mask_type: str, kh: int, kw: int) -> torch.Tensor:
    """0/1 float mask [kh, kw] of ``mask_type`` (CompressAI's construction)."""
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    m = torch.ones(kh, kw)
    if mask_type in ("A", "B"):
        m[kh // 2, kw // 2 + (mask_type == "B"):] = 0
        m[kh // 2 + 1:] = 0
    elif mask_type.startswith("checkerboard"):
        m[0::2, 0::2] = 0
        m[1::2, 1::2] = 0
        m[kh // 2, kw // 2] = 1.0 if mask_type == "checkerboard_B" else 0.0
    return m


def masked_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask_type: str,
) -> torch.Tensor:
    """Plain torch ``F.conv2d(x, weight * mask, bias, padding=k//2)`` (fp32 maths, fp64 if given)."""
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    KH, KW = weight.shape[-2:]
    m = conv_mask(mask_type, KH, KW).to(device=weight.device, dtype=work)
    y = torch.nn.functional.conv2d(x.to(work), weight.to(work) * m,
                                   bias.to(work) if bias is not None else None,
                                   padding=(KH // 2, KW // 2))
    return y.to(x.dtype)
