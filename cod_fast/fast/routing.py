"""Routing by measurement: each swapped block runs whichever of its fast and reference forwards
is faster at the shapes it actually sees.

A fused kernel that wins at one shape can lose at another (the first H200 run: the Triton masked
convolution took 466 us where cuDNN took 42 us, SwiGLU 36 us against 15 us), so a static table
cannot promise that no swap is slower than what it replaces. With ``optimize(..., route="measure")``
(the default for the Triton backend on CUDA) every swapped module decides on its first call for
each input signature -- argument shapes, dtypes and devices, its own parameters' shapes and dtypes,
the autocast state -- by timing both forwards with a :data:`Timer`, and keeps the winner:

- on CUDA the timer replays each forward from a CUDA graph (``triton.testing.do_bench_cudagraph``),
  the way a decoder's graph runs it, so Python launch overhead does not decide;
- identical blocks share decisions (one table per ``optimize`` call, keyed by block class and
  signature): the 26 DiT blocks of PixNerDiT are measured once per shape, not 26 times;
- a first call made while a CUDA graph is being captured takes the fast forward without measuring
  (timing inside a capture is impossible); the graph runners' eager warm-up calls come first, so
  decoders decide there;
- both forwards are run once before timing, so nested routed blocks decide outside the timing.

``cod_fast.fast.replaced(model)`` lists each module's decisions with both times.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .swap import FastModule, reference_class

#: A timer takes a no-argument callable and returns its typical run time in milliseconds.
Timer = Callable[[Callable[[], Any]], float]

ROUTES = ("static", "measure")


def cuda_graph_timer(fn: Callable[[], Any]) -> float:
    """Median ms of ``fn`` replayed from a CUDA graph (``triton.testing.do_bench_cudagraph``)."""
    from triton.testing import do_bench_cudagraph  # local: optional dependency (Triton)

    try:
        return float(do_bench_cudagraph(fn, rep=20, return_mode="median"))
    except TypeError:  # Triton versions without return_mode
        return float(do_bench_cudagraph(fn, rep=20))


def wall_timer(fn: Callable[[], Any], reps: int = 5) -> float:
    """Median ms of ``reps`` calls of ``fn`` on the host clock (CPU modules)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def default_timer(device: torch.device) -> Timer:
    """The timer for modules on ``device``: CUDA-graph replays on CUDA, the host clock elsewhere."""
    return cuda_graph_timer if device.type == "cuda" else wall_timer


@dataclass(frozen=True)
class Route:
    """One decision: which forward runs for a signature, and the two measured times (ms)."""

    choice: str  # "fast" or "reference"
    fast_ms: float
    reference_ms: float
    shapes: str  # the argument shapes and dtypes, for reports

    def __str__(self) -> str:
        return (f"{self.shapes}: fast {self.fast_ms:.4g} ms, reference {self.reference_ms:.4g} ms "
                f"-> {self.choice}")


class RoutingTable:
    """Decisions shared by the modules of one optimized model; safe to use from several threads.

    Deep copies (``copy.deepcopy`` of an optimized model or codec) share the table: decisions
    depend only on block classes and signatures, which a copy keeps.
    """

    def __init__(self, timer: Timer | None = None) -> None:
        self.timer = timer
        self.routes: dict[Hashable, Route] = {}
        self.measurements = 0  # how many (block, signature) pairs were timed
        self._lock = threading.RLock()  # re-entrant: nested routed blocks decide inside decide()

    def __deepcopy__(self, memo: dict[int, Any]) -> RoutingTable:
        return self

    def decide(self, key: Hashable, shapes: str, device: torch.device,
               fast: Callable[[], Any], reference: Callable[[], Any]) -> Route:
        """The route for ``key``, timing ``fast`` and ``reference`` the first time it is asked."""
        with self._lock:
            found = self.routes.get(key)
            if found is not None:
                return found
            fast()  # nested routed blocks decide here, outside the timed region
            reference()
            timer = self.timer or default_timer(device)
            fast_ms, ref_ms = timer(fast), timer(reference)
            route = Route("fast" if fast_ms <= ref_ms else "reference", fast_ms, ref_ms, shapes)
            self.routes[key] = route
            self.measurements += 1
            return route


def _describe(value: Any) -> Hashable:
    """A hashable, printable signature part of one forward argument."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), str(value.dtype).replace("torch.", ""), value.device.type)
    if isinstance(value, (tuple, list)):
        return tuple(_describe(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return type(value).__name__


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class RoutedModule(FastModule):
    """Mixin put in front of a fast class by :func:`routed_class`: dispatches each call to the fast
    or the reference forward by the module's routing table (see the module docstring)."""

    _fast_routes: RoutingTable
    _fast_cls: type
    _ref_forward: Callable[..., Any]  # the reference class's forward, resolved once per class

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        fast_forward, ref_forward = self._fast_cls.forward, self._ref_forward
        params = tuple((tuple(p.shape), p.dtype) for p in self.parameters(recurse=False))
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        autocast = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type)
        shapes = (tuple(_describe(a) for a in args), tuple(sorted((k, _describe(v)) for k, v in kwargs.items())))
        key = (self._fast_cls.__name__, shapes, params, autocast)
        route = self._fast_routes.routes.get(key)
        if route is None:
            if _capturing():  # no timing inside a capture: the fast forward, undecided
                return fast_forward(self, *args, **kwargs)
            route = self._fast_routes.decide(
                key, str(shapes[0]), device,
                lambda: fast_forward(self, *args, **kwargs), lambda: ref_forward(self, *args, **kwargs))
        self.__dict__.setdefault("_fast_route_keys", {}).setdefault(key, None)  # insertion-ordered set
        return (fast_forward if route.choice == "fast" else ref_forward)(self, *args, **kwargs)

    def fast_routes(self) -> list[Route]:
        """The decisions this module has taken, in the order it first met each signature."""
        return [self._fast_routes.routes[k] for k in self.__dict__.get("_fast_route_keys", ())]


_ROUTED: dict[type, type] = {}


def routed_class(fast_cls: type) -> type:
    """``fast_cls`` with :class:`RoutedModule` in front (one class per fast class, cached)."""
    if fast_cls not in _ROUTED:
        _ROUTED[fast_cls] = type(f"Routed{fast_cls.__name__}", (RoutedModule, fast_cls),
                                 {"_fast_cls": fast_cls, "_ref_forward": staticmethod(reference_class(fast_cls).forward),
                                  "__module__": __name__})
    return _ROUTED[fast_cls]


def route_by_measurement(model: nn.Module, timer: Timer | None = None) -> RoutingTable:
    """Make every swapped module of ``model`` route by measurement, sharing one table; returns it."""
    table = RoutingTable(timer)
    for module in model.modules():
        cls = type(module)
        if isinstance(module, FastModule) and not isinstance(module, RoutedModule):
            module.__class__ = routed_class(cls)
            module._fast_routes = table
    return table
