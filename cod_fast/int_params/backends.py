"""The integer spec of :mod:`.reference` on the C++ extension ("cpp") and on Triton ("triton").

Every function returns the same integers as its reference in :mod:`.reference`; results come
back as int32 CPU tensors. Triton is an optional dependency: its kernel module is imported when a
"triton" function is first called.
"""
from __future__ import annotations

import torch

from .._ext import require_cpu_ext
from ..errors import ExtensionUnavailableError
from .reference import IntegerConv, IntegerEntropyParams, check_z

__all__ = [
    "conv_cpp",
    "conv_triton",
    "entropy_parameters_cpp",
    "entropy_parameters_triton",
    "scale_index_cpp",
    "scale_index_triton",
    "triton_device",
]


def _sodec_ext():
    ext = require_cpu_ext()
    if not hasattr(ext, "sodec"):
        raise ExtensionUnavailableError("cod_fast._C was built without the sodec component; rebuild it")
    return ext.sodec


def entropy_parameters_cpp(
    params: IntegerEntropyParams, z_hat: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec on ``cod_fast._C.sodec`` (C++, int64, csrc/sodec): same outputs as the reference."""
    native = _sodec_ext()
    a = check_z(z_hat, params).cpu().to(torch.int32).contiguous().numpy()
    for layer in params.layers:
        a = native.conv_requant(a, layer.weight.contiguous().numpy(), layer.bias.contiguous().numpy(),
                                layer.mult.contiguous().numpy(), layer.shift.contiguous().numpy(),
                                layer.up, layer.lo, layer.hi)
    out = torch.from_numpy(a)
    m = params.n_channels
    indexes = torch.from_numpy(native.scale_index(out[:, :m].contiguous().numpy(),
                                                  params.thresholds.contiguous().numpy()))
    return indexes, out[:, m:].contiguous()


def conv_cpp(a: torch.Tensor, layer: IntegerConv) -> torch.Tensor:
    """One ``IntegerConv`` on ``cod_fast._C.sodec``: int [N, CI, h, w] -> int32 CPU [N, CO, h*up, w*up]."""
    native = require_cpu_ext().sodec
    out = native.conv_requant(a.cpu().to(torch.int32).contiguous().numpy(), layer.weight.contiguous().numpy(),
                              layer.bias.contiguous().numpy(), layer.mult.contiguous().numpy(),
                              layer.shift.contiguous().numpy(), layer.up, layer.lo, layer.hi)
    return torch.from_numpy(out)


def scale_index_cpp(s_q: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``#{k : s_q > T[k]}`` on ``cod_fast._C.sodec``: int32 scale codes -> int32 CPU indexes."""
    native = require_cpu_ext().sodec
    return torch.from_numpy(native.scale_index(s_q.cpu().to(torch.int32).contiguous().numpy(),
                                               thresholds.contiguous().numpy()))


def triton_device() -> torch.device:
    """Where the Triton kernels run: the CPU under ``TRITON_INTERPRET=1``, else the CUDA device."""
    from ..kernels._common import interpreter_active  # local: optional dependency (Triton backend only)

    if interpreter_active():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ExtensionUnavailableError("the Triton backend needs a CUDA device (or TRITON_INTERPRET=1)")
    return torch.device("cuda")


def entropy_parameters_triton(
    params: IntegerEntropyParams, z_hat: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec with every layer in Triton (``cod_fast.kernels.int_entropy_params``)."""
    try:
        from ..kernels.int_entropy_params import (  # local: optional dependency (Triton)
            entropy_parameters as triton_entropy_parameters,
        )
    except ImportError as exc:
        raise ExtensionUnavailableError(f"the Triton backend is unavailable: {exc}") from exc
    return triton_entropy_parameters(params, z_hat)


def conv_triton(a: torch.Tensor, layer: IntegerConv) -> torch.Tensor:
    """One ``IntegerConv`` in Triton: int [N, CI, h, w] -> int32 CPU [N, CO, h*up, w*up]."""
    try:
        from ..kernels.int_entropy_params import int_conv_requant  # local: optional dependency (Triton)
    except ImportError as exc:
        raise ExtensionUnavailableError(f"the Triton backend is unavailable: {exc}") from exc
    return int_conv_requant(a.to(device=triton_device(), dtype=torch.int32), layer).cpu()


def scale_index_triton(s_q: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``#{k : s_q > T[k]}`` in Triton: int32 scale codes -> int32 CPU indexes."""
    try:
        from ..kernels.int_entropy_params import scale_index  # local: optional dependency (Triton)
    except ImportError as exc:
        raise ExtensionUnavailableError(f"the Triton backend is unavailable: {exc}") from exc
    return scale_index(s_q.to(device=triton_device(), dtype=torch.int32).contiguous(), thresholds).cpu()
