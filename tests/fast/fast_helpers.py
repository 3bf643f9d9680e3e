"""Helpers of the tests in tests/fast: seeded non-trivial weights, the fp32 tolerance of the
optimize() routes, where each backend's test runs, and a CPU stand-in for CUDA graph capture.

Imported by plain name (pytest puts this folder on ``sys.path``): ``from fast_helpers import ...``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch import nn

from cod_fast.fast.graphs import host_sync_guard


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter in place, in sorted-name order from one seeded generator, and
    return ``model.eval()``: matrices and conv kernels (dim >= 2) ~ N(0, 1/fan_in); 1-d ``*weight``
    gains 1 + 0.1 N(0, 1); other 1-d parameters (biases) 0.1 N(0, 1). The official inits zero some
    output layers; these weights make every block change the output measurably."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            else:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def backend_device(backend: str) -> torch.device:
    """Where a test of ``backend`` runs: the Triton backend on the GPU when there is one (the
    kernels as users run them), else on the CPU (the interpreter); every other backend on the CPU."""
    if backend == "triton" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def exact_fp32() -> Any:
    """TF32 off for cuBLAS and cuDNN inside the block (cuDNN convolutions default to TF32), so that
    fp32 routes compared on CUDA are compared at fp32 precision. A no-op for the CPU."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def close_fp32(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Assert that an fp32 route's output ``got`` matches the fp32 reference ``ref`` (same shape).

    Both sides compute the same operations in fp32; only the summation order differs (oneDNN
    NHWC vs NCHW kernels, fused norms' statistics), over reductions of at most a few hundred terms
    per output: rtol 1e-4, atol 1e-4 of the reference's largest magnitude."""
    got, ref = got.cpu(), ref.cpu()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


class FakeCapture:
    """A CPU stand-in for CUDA graph capture, GraphRunner's ``capture`` hook: ``warmup`` calls of
    ``fn`` as the real capture makes, then the 'recorded' call, whose output (a tensor or a tuple of
    tensors) is the static output; 'replay' re-runs ``fn`` and copies into those buffers. With
    ``guard``, the recorded call and every replay run under ``host_sync_guard`` (a host sync or a
    device move inside raises HostSyncError). Counts ``warmups`` and ``captures``."""

    def __init__(self, guard: bool = False) -> None:
        self.guard = guard
        self.warmups = 0
        self.captures = 0

    def _scope(self) -> ContextManager[Any]:
        return host_sync_guard() if self.guard else contextlib.nullcontext()

    def __call__(self, fn: Callable[..., Any], static_inputs: Sequence[torch.Tensor], warmup: int,
                 pool: Any) -> tuple[Any, Callable[[], None]]:
        for _ in range(warmup):
            fn(*static_inputs)
            self.warmups += 1
        self.captures += 1
        with self._scope():
            out = fn(*static_inputs)
        outs = out if isinstance(out, tuple) else (out,)

        def replay() -> None:
            with self._scope():
                new = fn(*static_inputs)
                new = new if isinstance(new, tuple) else (new,)
                for buf, val in zip(outs, new):
                    buf.copy_(val)

        return out, replay
