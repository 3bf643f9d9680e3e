"""The integer spec of :mod:`.reference` on the C++ extension ("cpp") and on Triton ("triton").

Every function returns the same integers as its reference in :mod:`.reference`; results come
back as int32 CPU tensors. Triton is an optional dependency: its kernel module is imported when a
"triton" function is first called.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch

from .._ext import cpu_ext, require_cpu_ext
from ..errors import ExtensionUnavailableError
from .reference import IntegerConv, IntegerEntropyParams, validate_z

__all__ = [
    "conv_cpp",
    "entropy_head_cpp",
    "conv_triton",
    "entropy_parameters_cpp",
    "entropy_parameters_triton",
    "scale_index_cpp",
    "scale_index_triton",
    "triton_device",
    "cpu_impls",
]

#: The C++ kernels of the integer convolutions, slowest first (``impl=`` of the ``*_cpp`` calls).
CPU_IMPLS = ("portable", "avx2", "avx512", "amx")


def _sodec_ext():
    ext = require_cpu_ext()
    if not hasattr(ext, "sodec"):
        raise ExtensionUnavailableError("cod_fast._C was built without the sodec component; rebuild it")
    return ext.sodec


def cpu_impls(candidates: tuple[str, ...] = CPU_IMPLS) -> list[str]:
    """The kernels among ``candidates`` that this CPU runs (AMX also needs the OS to grant its tile
    state), in the given order; empty when cod_fast._C lacks the sodec kernels."""
    ext = cpu_ext()
    if ext is None or not hasattr(ext, "sodec"):
        return []
    return [i for i in candidates if ext.sodec.impl_supported(i)]


#: Prepared C++ weights per IntegerConv object: id -> (weakref to the layer, weight key, prepared).
#: Preparing (the effective weights of every upsampling phase) costs about as much as running the
#: layer on a 512x512 image's grid, and a codec runs the same layers on every image. Kept outside
#: the frozen dataclass so that layers stay deep-copyable and picklable.
_CPP_PREPARED: dict[int, tuple[Any, tuple, Any]] = {}


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


#: Prepared whole-network plans per IntegerEntropyParams object, cached as above while none of its
#: tensors changes (key: every layer tensor's and the thresholds' storage, version and shape).
_CPP_PLANS: dict[int, tuple[Any, tuple, Any]] = {}

#: z dtypes the native entry point reads directly (it clamps while padding: no widening copy).
_Z_NATIVE = (torch.int16, torch.int32, torch.int64)


def _plan_key(params: IntegerEntropyParams) -> tuple | None:
    """Identity of every tensor a plan is built from; None for inference tensors (not cached)."""
    try:
        key: list = [params.n_channels, params.thresholds.data_ptr(), params.thresholds._version,
                     tuple(params.thresholds.shape)]
        for layer in params.layers:
            key.append((layer.up, layer.lo, layer.hi))
            for t in (layer.weight, layer.bias, layer.mult, layer.shift):
                key.append((t.data_ptr(), t._version, tuple(t.shape)))
    except RuntimeError:
        return None
    return tuple(key)


def _cpp_plan(native: Any, params: IntegerEntropyParams) -> Any:
    """``native.prepare_entropy_plan`` of ``params`` (every layer's weights prepared once and the
    scale thresholds' lookup table), cached while none of its tensors changes."""
    key = _plan_key(params)
    hit = _CPP_PLANS.get(id(params))
    if key is not None and hit is not None and hit[0]() is params and hit[1] == key:
        return hit[2]
    layers = [(layer.weight.contiguous().numpy(), layer.bias.contiguous().numpy(), layer.mult.contiguous().numpy(),
               layer.shift.contiguous().numpy(), layer.up, layer.lo, layer.hi) for layer in params.layers]
    plan = native.prepare_entropy_plan(layers, params.thresholds.contiguous().numpy(), params.n_channels)
    if key is not None:
        if len(_CPP_PLANS) >= 64:
            _CPP_PLANS.clear()
        _CPP_PLANS[id(params)] = (weakref.ref(params), key, plan)
    return plan


def _z_numpy(z_hat: torch.Tensor, params: IntegerEntropyParams) -> Any:
    """z as a C-contiguous int16/int32/int64 numpy array for the native entry point: no copy for
    a contiguous CPU tensor of those dtypes (the C++ clamps to [-32767, 32767] while reading)."""
    validate_z(z_hat, params)
    z = z_hat if z_hat.device.type == "cpu" else z_hat.cpu()
    if z.dtype not in _Z_NATIVE:
        z = z.to(torch.int32)  # int8 / uint8 / ...: exact in int32
    return z.contiguous().numpy()


def entropy_parameters_cpp(
    params: IntegerEntropyParams, z_hat: torch.Tensor, *, impl: str = "auto", threads: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec on ``cod_fast._C.sodec`` (C++, csrc/sodec): same outputs as the reference.

    One native call runs every layer and the scale index (``entropy_plan.cpp``): prepared weights
    (cached per ``params``), hidden activations stored as int16 straight into the next layer's
    padded input, the table index fused into the last layer's store.
    impl: the GEMM kernel ("auto", "portable", "avx2", "avx512"; all give the same integers);
    threads: 0 = one per CPU.
    """
    native = _sodec_ext()
    indexes, means = native.entropy_parameters(_cpp_plan(native, params), _z_numpy(z_hat, params),
                                               threads=threads, impl=impl)
    return torch.from_numpy(indexes), torch.from_numpy(means)


def entropy_head_cpp(params: IntegerEntropyParams, z_hat: torch.Tensor, *, impl: str = "auto",
                     threads: int = 0) -> torch.Tensor:
    """The last layer's raw integer output, int32 CPU [N, 2M, H, W] (``api.entropy_head``), in one
    native call as ``entropy_parameters_cpp``."""
    native = _sodec_ext()
    return torch.from_numpy(native.entropy_parameters(_cpp_plan(native, params), _z_numpy(z_hat, params),
                                                      threads=threads, impl=impl, head=True))


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
