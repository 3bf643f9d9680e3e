"""GPU backend of reverse-channel coding: thin wrapper over ``cod_fast._C_cuda.rcc``.

The CUDA extension takes device pointers (no libtorch); this module allocates the outputs with
torch, computes the step's permutation on the CPU (cod_fast._C, or the torch reference when the
CPU extension is missing) and runs the kernels on torch's current stream.
"""
from __future__ import annotations

import torch

from .. import _ext
from ..errors import ExtensionUnavailableError
from . import reference
from .chunking import ChunkPlan


def _module():
    mod = _ext.cuda_ext()
    if mod is None or not hasattr(mod, "rcc"):
        raise ExtensionUnavailableError("cod_fast._C_cuda.rcc is not available")
    return mod.rcc


def _perm(plan: ChunkPlan, seed: int, step: int, device: torch.device) -> torch.Tensor:
    cpu = _ext.cpu_ext()
    if cpu is not None and hasattr(cpu, "rcc"):
        perm = torch.from_numpy(cpu.rcc.permutation(seed, step, plan.dim))
    else:
        perm = reference.permutation(seed, step, plan.dim)
    return perm.to(device)


def _device(t: torch.Tensor | None) -> torch.device:
    if t is not None and t.is_cuda:
        return t.device
    return torch.device("cuda", torch.cuda.current_device())


def encode(mu: torch.Tensor, plan: ChunkPlan, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mu float32 [dim] (any device) -> (indices int64 [chunks], sample float32 [dim]) on the GPU."""
    rcc = _module()
    dev = _device(mu)
    mu_d = mu.detach().to(dev).contiguous()
    perm = _perm(plan, seed, step, dev)
    indices = torch.empty(plan.n_chunks, dtype=torch.int64, device=dev)
    sample = torch.empty(plan.dim, dtype=torch.float32, device=dev)
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev)
        rcc.encode(mu_d.data_ptr(), plan.dim, list(plan.bits), list(plan.dims), perm.data_ptr(),
                   seed, step, indices.data_ptr(), sample.data_ptr(), stream.cuda_stream)
    return indices, sample


def decode(indices: torch.Tensor, plan: ChunkPlan, seed: int, step: int) -> torch.Tensor:
    """Validated indices int64 [chunks] -> sample float32 [dim] on the GPU."""
    rcc = _module()
    dev = _device(indices)
    idx = indices.to(dev, torch.int64).contiguous()
    perm = _perm(plan, seed, step, dev)
    sample = torch.empty(plan.dim, dtype=torch.float32, device=dev)
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev)
        rcc.decode(idx.data_ptr(), plan.dim, list(plan.bits), list(plan.dims), perm.data_ptr(),
                   seed, step, sample.data_ptr(), stream.cuda_stream)
    return sample
