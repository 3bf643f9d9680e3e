"""Helpers of the kernel tests: device, dtypes, and tolerances scaled by dtype resolution and
reduction length (FlagGems style).

The reference is computed in fp64 on the CPU; a kernel result in dtype ``d`` is compared with
``atol = rtol = eps(d) * factor * sqrt(reduction_len)``, where eps is the dtype's resolution
(fp32 2^-23 ... bf16 2^-7): rounding errors of a length-n fp32 reduction grow like sqrt(n).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETED else "cpu"

#: dtypes every kernel is tested in; bf16 only on a GPU (the interpreter's bf16 arithmetic is broken).
DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        INTERPRETED, reason="bf16 arithmetic is broken in Triton's interpreter")),
]

_RESOLUTION = {
    torch.float32: 2.0**-23,
    torch.float16: 2.0**-10,
    torch.bfloat16: 2.0**-7,
}


def tol(dtype: torch.dtype, reduction_len: int = 1, factor: float = 4.0) -> dict[str, float]:
    """``dict(atol=..., rtol=...)`` for torch.testing.assert_close on a result in ``dtype``."""
    eps = _RESOLUTION[dtype]
    # fp32 results still accumulate fp32 rounding over the reduction; half-precision results are
    # dominated by the final rounding of the output (a couple of ulps).
    t = eps * factor * math.sqrt(max(1, reduction_len)) if dtype == torch.float32 else eps * factor
    return {"atol": t, "rtol": t}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype,
                 reduction_len: int = 1, factor: float = 4.0) -> None:
    """Compare ``actual`` (kernel output) with an fp64 ``expected`` on the CPU."""
    assert actual.dtype == dtype, f"kernel returned {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual.detach().cpu().to(torch.float64), expected.to(torch.float64),
                               **tol(dtype, reduction_len, factor))
