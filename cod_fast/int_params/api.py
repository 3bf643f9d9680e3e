"""SODEC's integer entropy parameters on a backend chosen by name.

"reference": the torch int64 spec of :mod:`.reference`; "cpp": ``cod_fast._C.sodec``
(csrc/sodec); "triton": ``cod_fast.kernels.int_entropy_params`` (needs Triton and a CUDA device,
or TRITON_INTERPRET=1); "auto": "triton" for CUDA tensors when Triton imports, else "cpp" when
the extension has it, else "reference" (the same rule as rcc's "auto"). All give the same
integers (see ``docs/sodec_integer_params.md``), so "auto" changes speed, never a stream.
"""
from __future__ import annotations

import torch

from . import backends
from .reference import (
    INT32_MAX,
    INT32_MIN,
    IntegerConv,
    IntegerEntropyParams,
    check_z,
    entropy_parameters_reference,
    integer_conv_reference,
    scale_index_reference,
)

__all__ = [
    "BACKENDS",
    "resolve_backend",
    "backend_conv",
    "backend_scale_index",
    "context_parameters",
    "entropy_head",
    "entropy_parameters",
    "head_parameters",
]

#: Backends of ``entropy_parameters``; each gives identical integers.
BACKENDS = ("auto", "reference", "triton", "cpp")

_available: dict[str, bool] = {}


def _can_run(name: str) -> bool:
    """Whether the "cpp" (compiled SODEC component) or "triton" (Triton importable) backend runs."""
    if name not in _available:
        try:
            if name == "cpp":
                backends._sodec_ext()
            else:
                import triton  # noqa: F401  # local: optional dependency (Triton)
            _available[name] = True
        except ImportError:  # ExtensionUnavailableError is an ImportError
            _available[name] = False
    return _available[name]


def resolve_backend(backend: str, data: torch.Tensor | None = None) -> str:
    """The backend that runs for ``backend`` on ``data``: "auto" -> "triton" for CUDA data when
    Triton imports, else "cpp" when ``cod_fast._C`` has the SODEC component, else "reference";
    any other accepted name is returned unchanged. ValueError for an unknown name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if data is not None and data.is_cuda and _can_run("triton"):
        return "triton"
    return "cpp" if _can_run("cpp") else "reference"


def entropy_parameters(
    params: IntegerEntropyParams, z_hat: torch.Tensor, backend: str = "reference"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes, means) int32 [N, M, H, W] on the CPU from integer z symbols, on ``backend``.

    "reference": the torch int64 path of :mod:`.reference`; "cpp": ``cod_fast._C.sodec``
    (csrc/sodec); "triton": ``cod_fast.kernels.int_entropy_params`` (needs Triton and a CUDA
    device, or TRITON_INTERPRET=1); "auto": see ``resolve_backend``. All return the same integers.
    """
    backend = resolve_backend(backend, z_hat)
    if backend == "reference":
        return entropy_parameters_reference(params, z_hat)
    if backend == "cpp":
        return backends.entropy_parameters_cpp(params, z_hat)
    if backend == "triton":
        return backends.entropy_parameters_triton(params, z_hat)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def backend_conv(a: torch.Tensor, layer: IntegerConv, backend: str) -> torch.Tensor:
    """One ``IntegerConv`` on ``backend``: int activations [N, CI, h, w] with |a| <= 32767 ->
    int32 CPU [N, CO, h*up, w*up]. Every backend gives the same integers."""
    backend = resolve_backend(backend, a)
    if backend == "reference":
        return integer_conv_reference(a.cpu().to(torch.int64), layer).to(torch.int32)
    if backend == "cpp":
        return backends.conv_cpp(a, layer)
    if backend == "triton":
        return backends.conv_triton(a, layer)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def backend_scale_index(s_q: torch.Tensor, thresholds: torch.Tensor, backend: str) -> torch.Tensor:
    """``#{k : s_q > T[k]}`` on ``backend``: int32 scale codes -> int32 CPU indexes."""
    backend = resolve_backend(backend, s_q)
    if backend == "reference":
        return scale_index_reference(s_q.cpu(), thresholds)
    if backend == "cpp":
        return backends.scale_index_cpp(s_q, thresholds)
    if backend == "triton":
        return backends.scale_index_triton(s_q, thresholds)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def entropy_head(params: IntegerEntropyParams, z_hat: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """The last hyper-synthesis layer's integer output, int32 CPU [N, 2M, H, W]: scale codes
    (channels [0, M)) then mean codes ([M, 2M)), before the table lookup."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if resolve_backend(backend, z_hat) == "cpp":
        return backends.entropy_head_cpp(params, z_hat)  # every layer in one native call
    a = check_z(z_hat, params)
    for layer in params.layers:
        a = backend_conv(a, layer, backend)
    return a.to(torch.int32)


def head_parameters(params: IntegerEntropyParams, head: torch.Tensor,
                    backend: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes, means) int32 [N, M, H, W] of an integer head [N, 2M, H, W]."""
    m = params.n_channels
    if head.dim() != 4 or head.shape[1] != 2 * m:
        raise ValueError(f"head must be [N, {2 * m}, H, W], got {tuple(head.shape)}")
    return backend_scale_index(head[:, :m].contiguous(), params.thresholds, backend), head[:, m:].contiguous()



def context_parameters(params: IntegerEntropyParams, head: torch.Tensor, y_ctx: torch.Tensor,
                       backend: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes, means) int32 [N, M, H, W] of the second pass (use them at non-anchor positions).

    ``head2 = clamp(head + context(y_ctx), -2**31, 2**31 - 1)`` (int64 sum), then the same table
    lookup as the first pass. ``y_ctx`` from ``context_input``; ``head`` from ``entropy_head``.
    """
    if params.context is None:
        raise ValueError("these integer entropy parameters have no context layer (checkerboard is off)")
    if y_ctx.shape[0] != head.shape[0] or y_ctx.shape[2:] != head.shape[2:]:
        raise ValueError(f"context input {tuple(y_ctx.shape)} does not match the head {tuple(head.shape)}")
    ctx = backend_conv(y_ctx, params.context, backend).to(torch.int64)
    head2 = (head.to(torch.int64) + ctx).clamp(INT32_MIN, INT32_MAX).to(torch.int32)
    return head_parameters(params, head2, backend)
