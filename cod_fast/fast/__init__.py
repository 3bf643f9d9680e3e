"""The optimized path: ``optimize(model_or_codec, backend)`` swaps reference blocks for fast ones.

Backends:
  "reference"  the plain-PyTorch modules, unchanged (a structural copy is still returned).
  "triton"     fused Triton kernels (kernels/); needs Triton and a CUDA device, or
               ``TRITON_INTERPRET=1`` on CPU (the interpreter: slow, for tests).
  "cpu"        the fastest exact-enough CPU route (see ``cod_fast.fast.cpu_blocks``).
  "auto"       "triton" when the model's parameters are on a CUDA device and Triton imports,
               else "cpu" on CPU; the one-line reason is in ``explain_backend``.

Routing (``route=``): "static" runs every swapped block's fast forward; "measure" times the fast
and the reference forward of each block at the shapes it meets and keeps the faster
(``cod_fast.fast.routing``: CUDA-graph timing on CUDA). The default is "measure" for the Triton
backend on CUDA and "static" elsewhere (the CPU route's blocks were chosen by measurement offline,
BENCHMARKS.md). ``timer=`` replaces the timer (tests).

``quantize="int8"`` additionally runs the big Linears (and CoD-Lite's 1x1 convs) as int8 fbgemm
matmuls (``cod_fast.fast.quant``): about 1.4-2.7x on CPU for 3-5 % relative error, so it is opt-in
and never chosen by "auto" (see BENCHMARKS.md, "Optimized path (CPU)").

The returned model shares its parameter tensors with the input (no weight memory is duplicated) and
has identical ``state_dict()`` keys; the input model is left as it was. ``replaced(model)`` lists
what was swapped and why.
"""
from __future__ import annotations

import copy
import os
from typing import Any

from torch import nn

from ..errors import ExtensionUnavailableError
from .quant import quantize_int8
from .routing import ROUTES, route_by_measurement
from .swap import Replacement, replaced, shallow_model_copy, swap_modules

__all__ = ["optimize", "replaced", "Replacement", "choose_backend", "BACKENDS"]

BACKENDS = ("auto", "triton", "cpu", "reference")


def _device_of(model: nn.Module) -> str:
    for p in model.parameters():
        return p.device.type
    return "cpu"


def _triton_problem(device: str) -> str | None:
    """None when the Triton backend can run on `device`, else the one-line reason it cannot."""
    try:
        import triton  # noqa: F401  # local: optional dependency (Triton)
    except ImportError as exc:
        return f"triton is not importable: {exc}"
    if device == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"the model is on {device}; Triton kernels need CUDA (or TRITON_INTERPRET=1 to interpret them on CPU)"


def choose_backend(model: nn.Module, backend: str = "auto") -> tuple[str, str]:
    """Resolve ``backend`` for ``model``: returns (backend, one-line reason)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = _device_of(model)
    if backend != "auto":
        return backend, "asked for"
    if device == "cuda":
        problem = _triton_problem(device)
        if problem is None:
            return "triton", "CUDA device and Triton available"
        return "reference", problem
    return "cpu", f"model on {device}"


def _swap_table(backend: str) -> dict:
    if backend == "triton":
        from .triton_blocks import TABLE  # local: optional dependency (Triton)
    elif backend == "cpu":
        from .cpu_blocks import TABLE  # local: import time (cpu_blocks imports every model package)
    else:
        TABLE = {}
    return TABLE


def optimize(model_or_codec: Any, backend: str = "auto", *, quantize: str | None = None,
             route: str | None = None, timer: Any = None) -> Any:
    """An equivalent model (or codec) whose blocks run on ``backend``; see the module docstring.

    ``quantize``: None (exact to fp32 rounding) or "int8" (CPU only, approximate; see above).
    ``route``: None (the default for the backend and device), "static" or "measure"; ``timer``:
    with "measure", a callable ``fn -> milliseconds`` replacing the default timer.

    A codec (an object with a ``.net`` module) is shallow-copied with its ``.net`` optimized.
    Raises ``ExtensionUnavailableError`` when "triton" is asked for and cannot run.
    """
    if isinstance(model_or_codec, nn.Module):
        model = model_or_codec
        codec = None
    elif isinstance(getattr(model_or_codec, "net", None), nn.Module):
        codec, model = model_or_codec, model_or_codec.net
    else:
        raise TypeError(f"optimize() takes an nn.Module or a codec with .net, got {type(model_or_codec).__name__}")
    chosen, _ = choose_backend(model, backend)
    if chosen == "triton":
        problem = _triton_problem(_device_of(model))
        if problem is not None:
            raise ExtensionUnavailableError(f"backend 'triton' unavailable: {problem}")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize == "int8" and _device_of(model) != "cpu":
        raise ValueError("quantize='int8' runs on the CPU (fbgemm); the model is on " + _device_of(model))
    if route is None:
        route = "measure" if chosen == "triton" and _device_of(model) == "cuda" else "static"
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES} or None, got {route!r}")
    fast = shallow_model_copy(model)
    swap_modules(fast, _swap_table(chosen))
    if route == "measure":
        route_by_measurement(fast, timer)
    if quantize == "int8":
        quantize_int8(fast)
    if codec is None:
        return fast
    out = copy.copy(codec)
    out.net = fast
    return out
