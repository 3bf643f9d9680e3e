"""Helpers shared by the Triton kernel wrappers: argument checks, block-size heuristics.

Nothing here launches a kernel. Kernel modules import Triton themselves; this module imports
only torch so that it can be used for checks before Triton is touched.
"""

from __future__ import annotations

import os

import torch

#: dtypes every kernel loads and stores; arithmetic is always fp32 inside the kernels.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)


def interpreter_active() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_tensor(name: str, t: object, ndim: int | None = None) -> torch.Tensor:
    """Raise TypeError/ValueError unless ``t`` is a tensor the kernels can read.

    The tensor must have a supported float dtype, ``ndim`` dimensions when given, and live on a
    CUDA device -- or on the CPU while the Triton interpreter is active.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: float16, bfloat16, float32")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.device.type != "cuda" and not interpreter_active():
        raise ValueError(
            f"{name} is on {t.device}; Triton kernels need a CUDA tensor "
            "(or TRITON_INTERPRET=1 for CPU tensors)"
        )
    return t


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ValueError unless every given (non-None) tensor is on the same device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors on different devices: {devices}")


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: full IEEE for fp32 inputs (no TF32 surprise), native otherwise."""
    return "ieee" if dtype == torch.float32 else "tf32"


def num_warps_for(block_elems: int) -> int:
    """Warps per program for a tile of ``block_elems`` elements (4..16, power of two)."""
    if block_elems >= 16384:
        return 16
    if block_elems >= 4096:
        return 8
    return 4
