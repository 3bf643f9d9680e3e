"""The integer spec of :mod:`.reference` on the C++ extension ("cpp") and on Triton ("triton").

Every function returns the same integers as its reference in :mod:`.reference`; results come
back as int32 CPU tensors. Triton is an optional dependency: its kernel module is imported when a
"triton" function is first called.
"""
from __future__ import annotations

import weakref
from typing import Any

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


#: Prepared C++ weights per IntegerConv object: id -> (weakref to the layer, weight key, prepared).
#: Preparing (the effective weights of every upsampling phase) costs about as much as running the
#: layer on a 512x512 image's grid, and a codec runs the same layers on every image. Kept outside
#: the frozen dataclass so that layers stay deep-copyable and picklable.
_CPP_PREPARED: dict[int, tuple[Any, tuple, Any]] = {}


#: Prepared scale indexers (thresholds -> lookup table) per thresholds tensor, cached as above.
_CPP_INDEXERS: dict[int, tuple[Any, tuple, Any]] = {}


def _cached(cache: dict[int, tuple[Any, tuple, Any]], owner: Any, t: torch.Tensor, extra: Any, make: Any) -> Any:
    """``make()`` cached per ``owner`` while tensor ``t`` is unchanged (same storage, same version
    counter); inference tensors (no version counter) are not cached."""
    try:
        key: tuple | None = (t.data_ptr(), t._version, tuple(t.shape), extra)
    except RuntimeError:
        key = None
    hit = cache.get(id(owner))
    if key is not None and hit is not None and hit[0]() is owner and hit[1] == key:
        return hit[2]
    value = make()
    if key is not None:
        if len(cache) >= 256:
            cache.clear()
        cache[id(owner)] = (weakref.ref(owner), key, value)
    return value


def _cpp_prepared(native: Any, layer: IntegerConv) -> Any:
    """``native.prepare_conv`` of ``layer``'s weights, cached while its weight tensor is unchanged."""
    return _cached(_CPP_PREPARED, layer, layer.weight, layer.up,
                   lambda: native.prepare_conv(layer.weight.contiguous().numpy(), layer.up))


def _cpp_conv_numpy(native: Any, a: Any, layer: IntegerConv, **options: Any) -> Any:
    """One layer on ``cod_fast._C.sodec``: int32 numpy [N, CI, h, w] -> int32 numpy [N, CO, H, W]
    (options: ``impl=``, and ``index=, index_channels=`` to fuse the scale index of the first
    channels into the store)."""
    return native.conv_requant_prepared(a, _cpp_prepared(native, layer), layer.bias.contiguous().numpy(),
                                        layer.mult.contiguous().numpy(), layer.shift.contiguous().numpy(),
                                        layer.lo, layer.hi, **options)


def entropy_parameters_cpp(
    params: IntegerEntropyParams, z_hat: torch.Tensor, *, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec on ``cod_fast._C.sodec`` (C++, int64, csrc/sodec): same outputs as the reference.

    The last layer stores the table indexes of its first M channels directly (scale index fused).
    impl: the GEMM kernel ("auto", "portable", "avx2", "avx512"; all give the same integers).
    """
    native = _sodec_ext()
    a = check_z(z_hat, params).cpu().to(torch.int32).contiguous().numpy()
    for layer in params.layers[:-1]:
        a = _cpp_conv_numpy(native, a, layer, impl=impl)
    m = params.n_channels
    indexer = _cached(_CPP_INDEXERS, params, params.thresholds, None,
                      lambda: native.prepare_scale_index(params.thresholds.contiguous().numpy()))
    out = torch.from_numpy(_cpp_conv_numpy(native, a, params.layers[-1], impl=impl, index=indexer,
                                           index_channels=m))
    return out[:, :m].contiguous(), out[:, m:].contiguous()


def conv_cpp(a: torch.Tensor, layer: IntegerConv) -> torch.Tensor:
    """One ``IntegerConv`` on ``cod_fast._C.sodec``: int [N, CI, h, w] -> int32 CPU [N, CO, h*up, w*up]."""
    native = _sodec_ext()
    return torch.from_numpy(_cpp_conv_numpy(native, a.cpu().to(torch.int32).contiguous().numpy(), layer))


def scale_index_cpp(s_q: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``#{k : s_q > T[k]}`` on ``cod_fast._C.sodec``: int32 scale codes -> int32 CPU indexes."""
    native = _sodec_ext()
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
