"""CUDA graphs around fixed-shape decoders (one-step decoders, few-step sampling loops).

A CUDA graph replays a recorded sequence of kernels with no Python and no launch overhead, but it
is tied to fixed shapes and fixed memory addresses. `GraphRunner` turns a pure tensor function into
a cache of graphs, one per input signature (shape, dtype, device) -- the shape buckets -- each with
static input and output buffers:

    runner = GraphRunner(lambda x, c: model(x, c), max_graphs=4)
    y = runner(x, c)          # first call per signature: warm up on a side stream, capture, replay
    y = runner(x2, c2)        # same signature: copy into the static inputs, replay

Rules the wrapped function must follow (checked where it can be):
- inputs and outputs are tensors (or tuples of tensors) on one CUDA device;
- no host synchronisation inside (`.item()`, `.cpu()`, printing tensors, data-dependent Python
  control flow) and no CPU-side randomness: draw noise outside and pass it in;
- anything that varies between calls is an input; Python scalars are baked in at capture time and
  must therefore be part of `key_extra` when they change (e.g. the step count of a sampler).
  A call may bring its own function (`runner(*inputs, key_extra=k, fn=f)`, for functions whose
  constants depend on `k`); the graph keeps that function, and what it references, alive.

Autocast: the autocast state of the inputs' device type is part of every signature, and capture
runs with the autocast weight cache off (a cached cast made during warm-up would be freed when the
caller's autocast region ends, while the graph still reads it).

`host_sync_guard()` checks on CPU that a function is capturable: inside it, host synchronisation
(`.item()`, `bool(tensor)`, `.tolist()`, `.cpu()`, `.numpy()`), device moves (`.to(device)`,
`.cuda()`, `torch.tensor(...)`) and any copy between devices at the aten level (`copy_` of a host
tensor into a device one, however it was spelled) raise `HostSyncError`.

The cache logic (signatures, LRU eviction, warm-up count, buffer reuse) is independent of CUDA and
is tested on CPU through the `capture` hook; on a machine without CUDA, `GraphRunner` with
``enabled="auto"`` simply calls the function (the eager path).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

Tensors = tuple[torch.Tensor, ...]
Signature = tuple[Hashable, ...]


def signature_of(tensors: Sequence[torch.Tensor], extra: Hashable = None) -> Signature:
    """The cache key of a call: shape, dtype and device of every input, plus `extra`."""
    sig: list[Hashable] = []
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"graph inputs must be tensors, got {type(t).__name__}")
        sig.append((tuple(t.shape), t.dtype, str(t.device)))
    sig.append(extra)
    return tuple(sig)


def autocast_key(device_type: str) -> Hashable:
    """The autocast state of `device_type` as a signature part: None when off, else its dtype."""
    if torch.is_autocast_enabled(device_type):
        return ("autocast", torch.get_autocast_dtype(device_type))
    return None


def _without_autocast_cache(fn: Callable[..., Any], device_type: str) -> Callable[..., Any]:
    """`fn` run under the current autocast dtype of `device_type` with the weight-cast cache off."""
    dtype = torch.get_autocast_dtype(device_type)

    def wrapped(*args: torch.Tensor) -> Any:
        with torch.autocast(device_type, dtype=dtype, cache_enabled=False):
            return fn(*args)

    return wrapped


class HostSyncError(RuntimeError):
    """A function under `host_sync_guard` synchronised with the host or moved data across devices."""


# Calls that read tensor values on the host or copy data between host and device.
_SYNC_FUNCTIONS = frozenset({
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.cuda,
    torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
    torch.tensor, torch.as_tensor, torch.from_numpy,
})


def _moves_device(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a `Tensor.to(...)` call names a device (or takes one from another tensor)."""
    if "device" in kwargs or "other" in kwargs:
        return True
    return any(isinstance(a, (str, torch.device, torch.Tensor)) for a in args[1:])


class _SyncFunctionGuard(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _SYNC_FUNCTIONS or (func is torch.Tensor.to and _moves_device(args, kwargs)):
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            raise HostSyncError(f"{name} inside a captured function (host sync or device move)")
        return func(*args, **kwargs)


def _cross_device_copy(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """'src -> dst' when an aten call copies a tensor between devices (whatever Python call made
    it: ``.to``, ``copy_``, an index put of a host tensor...), else None."""
    if func in (torch.ops.aten.copy_.default, torch.ops.aten._copy_from.default):
        dst, src = (args[0], args[1]) if func is torch.ops.aten.copy_.default else (args[1], args[0])
        if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor) and src.device != dst.device:
            return f"{src.device} -> {dst.device}"
    elif func is torch.ops.aten._to_copy.default:
        target = kwargs.get("device")
        if target is not None and args and torch.device(target) != args[0].device:
            return f"{args[0].device} -> {torch.device(target)}"
    return None


class _SyncDispatchGuard(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            raise HostSyncError("a tensor value was read on the host inside a captured function")
        moved = _cross_device_copy(func, args, kwargs)
        if moved is not None:
            # CUDA graph capture refuses copies from pageable host memory, and would bake the
            # values of a pinned one into the graph: inputs must be device tensors already.
            raise HostSyncError(f"a tensor was copied between devices ({moved}) inside a captured function")
        return func(*args, **kwargs)


@contextlib.contextmanager
def host_sync_guard() -> Iterator[None]:
    """Raise `HostSyncError` on host synchronisation or device moves inside the block (a CPU check
    that a function can be captured in a CUDA graph; on CUDA, capture itself fails on them)."""
    with _SyncFunctionGuard(), _SyncDispatchGuard():
        yield


def _as_tuple(out: Any) -> tuple[Tensors, bool]:
    """Normalise a function output to a tuple of tensors; the flag says whether it was one tensor."""
    if isinstance(out, torch.Tensor):
        return (out,), True
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(out), False
    raise TypeError("a captured function must return a tensor or a tuple of tensors")


@dataclass
class CapturedGraph:
    """One captured signature: static buffers and the replay callable."""

    static_inputs: Tensors
    static_outputs: Tensors
    single: bool
    replay: Callable[[], None]
    fn: Callable[..., Any]  # the captured function: kept alive with the graph (its constants)
    replays: int = field(default=0)


def cuda_capture(
    fn: Callable[..., Any], static_inputs: Tensors, warmup: int, pool: Any
) -> tuple[Any, Callable[[], None]]:
    """Warm up `fn` on a side stream (JIT compilation, cuBLAS handles, allocator), then record it.

    Returns (raw outputs of the captured call, replay function).
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn(*static_inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn(*static_inputs)
    return out, graph.replay


class GraphRunner:
    """Cache of CUDA graphs of `fn`, one per input signature, least recently used evicted first.

    Args:
        fn: pure tensor function (see the module docstring for the rules).
        max_graphs: number of signatures kept captured (each holds its static buffers and pool).
        warmup: eager calls on a side stream before capture (>= 1; Triton/cuBLAS initialise there).
        enabled: True to require CUDA graphs, False to always run eagerly, "auto" to use graphs when
            the inputs are on a CUDA device.
        copy_outputs: return clones of the static outputs (safe: a later replay overwrites the
            static buffers). With False the caller gets the static buffers themselves, valid until
            the next call with the same signature.
        capture: the capture function, `(fn, static_inputs, warmup, pool) -> (out, replay)`; the
            default records a CUDA graph. Tests on CPU inject a recording fake here.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        max_graphs: int = 4,
        warmup: int = 2,
        enabled: bool | str = "auto",
        copy_outputs: bool = True,
        capture: Callable[..., tuple[Any, Callable[[], None]]] | None = None,
    ) -> None:
        if max_graphs < 1:
            raise ValueError("max_graphs must be >= 1")
        if warmup < 1:
            raise ValueError("warmup must be >= 1 (kernels must compile before capture)")
        if enabled not in (True, False, "auto"):
            raise ValueError("enabled must be True, False or 'auto'")
        self.fn = fn
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.enabled = enabled
        self.copy_outputs = copy_outputs
        self._capture = capture or cuda_capture
        self._graphs: OrderedDict[Signature, CapturedGraph] = OrderedDict()
        self._pool: Any = None
        self.captures = 0  # number of captures done (a test and tuning aid)

    # -- policy -------------------------------------------------------------------------------
    def uses_graphs(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Whether a call with these inputs goes through a graph (else it runs eagerly)."""
        if self.enabled is False:
            return False
        on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
        if self.enabled is True and not on_cuda and self._capture is cuda_capture:
            raise RuntimeError("GraphRunner(enabled=True) needs CUDA tensors")
        return on_cuda or self._capture is not cuda_capture

    @property
    def signatures(self) -> list[Signature]:
        """Captured signatures, least recently used first."""
        return list(self._graphs)

    def clear(self) -> None:
        """Drop every captured graph and its buffers."""
        self._graphs.clear()
        self._pool = None

    # -- calls --------------------------------------------------------------------------------
    def __call__(self, *inputs: torch.Tensor, key_extra: Hashable = None,
                 fn: Callable[..., Any] | None = None) -> Any:
        """Run `fn` (default: the runner's function) on `inputs`, through the graph of their signature.

        `key_extra` must tell apart every function or baked-in constant that differs between calls:
        a signature seen before replays what was captured for it, whatever `fn` is passed.
        """
        fn = self.fn if fn is None else fn
        if not self.uses_graphs(inputs):
            return fn(*inputs)
        if not inputs:
            raise TypeError("a graph needs at least one tensor input (graphs are keyed by their shapes)")
        sig = signature_of(inputs, (key_extra, autocast_key(inputs[0].device.type)))
        entry = self._graphs.get(sig)
        if entry is None:
            entry = self._new_graph(sig, inputs, fn)
        else:
            self._graphs.move_to_end(sig)
            for static, new in zip(entry.static_inputs, inputs):
                static.copy_(new)
        entry.replay()
        entry.replays += 1
        outs = tuple(o.clone() for o in entry.static_outputs) if self.copy_outputs else entry.static_outputs
        return outs[0] if entry.single else outs

    def _new_graph(self, sig: Signature, inputs: Sequence[torch.Tensor], fn: Callable[..., Any]) -> CapturedGraph:
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        static_inputs = tuple(t.detach().clone() for t in inputs)
        if self._pool is None and self._capture is cuda_capture:
            self._pool = torch.cuda.graph_pool_handle()
        device_type = inputs[0].device.type
        captured = _without_autocast_cache(fn, device_type) if torch.is_autocast_enabled(device_type) else fn
        out, replay = self._capture(captured, static_inputs, self.warmup, self._pool)
        static_outputs, single = _as_tuple(out)
        entry = CapturedGraph(static_inputs, static_outputs, single, replay, captured)
        self._graphs[sig] = entry
        self.captures += 1
        return entry
