"""Public entry points of reverse-channel coding: one DiffC step, encode and decode.

``encode(mu, kl_bits, seed, step)`` sends a sample of N(mu, I) against the prior N(0, I) with the
chunked ordered-random-coding scheme of DiffC; ``decode`` regenerates the same sample from the
chunk indices. Backends: ``"reference"`` (plain torch, slow), ``"cpp"`` (cod_fast._C, threads),
``"cuda"`` (cod_fast._C_cuda); ``"auto"`` picks by where the data is: cuda for CUDA tensors (when
the CUDA extension is there), else cpp, else reference -- never the GPU for CPU tensors just because
a GPU exists. All backends produce the same indices and bit-identical samples (see
csrc/rcc/rcc_math.h).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _ext
from ..errors import BitstreamError, ExtensionUnavailableError
from . import cuda_backend, reference
from .chunking import ChunkPlan, plan_chunks, quantize_kl

BACKENDS = ("auto", "reference", "cpp", "cuda")
_U64 = 2**64
_U32 = 2**32


def _check_int(name: str, value: object, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < upper:
        raise ValueError(f"{name} must be in [0, {upper}), got {value}")
    return value


def _cuda_rcc():
    mod = _ext.cuda_ext()
    return getattr(mod, "rcc", None) if mod is not None else None


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """The backend that runs: ``backend`` itself, checked, or for ``"auto"`` the one for data on
    ``device`` (cuda for a CUDA device when cod_fast._C_cuda is there, else cpp, else reference).

    Raises ValueError for an unknown name and ExtensionUnavailableError when the named backend
    cannot run here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if torch.device(device).type == "cuda" and _cuda_rcc() is not None:
            return "cuda"
        return "cpp" if _cpp() is not None else "reference"
    if backend == "cpp" and _cpp() is None:
        reason = _ext.availability().get("_C", "")
        raise ExtensionUnavailableError(
            "backend 'cpp' needs cod_fast._C with the rcc submodule: "
            + ("the rcc submodule is missing (rebuild)" if reason == "ok" else reason)
        )
    if backend == "cuda" and _cuda_rcc() is None:
        raise ExtensionUnavailableError(
            "backend 'cuda' needs a CUDA device and cod_fast._C_cuda: "
            + _ext.availability().get("_C_cuda", "")
        )
    return backend


def _cpp():
    mod = _ext.cpu_ext()
    return getattr(mod, "rcc", None) if mod is not None else None


def make_plan(dim: int, kl_bits: float) -> ChunkPlan:
    """The chunk plan of a step of ``dim`` dimensions and budget ``kl_bits`` (see chunking)."""
    return plan_chunks(dim, quantize_kl(kl_bits))


def encode(
    mu: torch.Tensor,
    kl_bits: float,
    seed: int,
    step: int = 0,
    backend: str = "auto",
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode one step.

    Args:
        mu: float32 [d], finite: ``(q_mu - p_mu) / std`` flattened.
        kl_bits: the step's KL budget in bits (>= 0); quantized up to 1/16 bit, and that integer
            (``quantize_kl(kl_bits)``) is what a stream must carry for the decoder.
        seed: shared seed, 0 <= seed < 2^64. step: step number, 0 <= step < 2^32.
        backend: "auto" (by mu's device), "reference", "cpp" or "cuda". threads: CPU threads (None:
            all cores).
    Returns:
        (indices int64 [chunks] with indices[c] < 2^plan.bits[c], sample float32 [d] on mu's
        device), the sample being the selected candidate.
    """
    if not isinstance(mu, torch.Tensor):
        raise TypeError(f"mu must be a torch.Tensor, got {type(mu).__name__}")
    if mu.dtype != torch.float32:
        raise TypeError(f"mu must be float32, got {mu.dtype}")
    if mu.dim() != 1 or mu.numel() == 0:
        raise ValueError(f"mu must be a non-empty 1-D tensor, got shape {tuple(mu.shape)}")
    if not bool(torch.isfinite(mu).all()):
        raise ValueError("mu must be finite")
    seed = _check_int("seed", seed, _U64)
    step = _check_int("step", step, _U32)
    plan = make_plan(mu.numel(), kl_bits)
    backend = resolve_backend(backend, mu.device)
    if backend == "reference":
        idx, sample = reference.encode(mu.detach().cpu().contiguous(), plan, seed, step)
        return torch.tensor(idx, dtype=torch.int64), sample.to(mu.device)
    if backend == "cpp":
        rcc = _cpp()
        idx, sample = rcc.encode(
            mu.detach().cpu().contiguous().numpy(), _bits(plan), _dims(plan), seed, step,
            _threads(threads), "auto",
        )
        return torch.from_numpy(idx), torch.from_numpy(sample).to(mu.device)
    idx, sample = cuda_backend.encode(mu, plan, seed, step)
    return idx.to(mu.device), sample.to(mu.device)


def decode(
    indices: torch.Tensor,
    dim: int,
    kl_bits: float,
    seed: int,
    step: int = 0,
    backend: str = "auto",
    threads: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Decode one step: indices (int tensor [chunks]) -> sample float32 [dim].

    Raises BitstreamError when the indices do not fit the plan (count or range), ValueError /
    TypeError for bad arguments. ``device``: where the sample goes (default: the indices' device).
    """
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
    seed = _check_int("seed", seed, _U64)
    step = _check_int("step", step, _U32)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    plan = make_plan(dim, kl_bits)
    idx = indices.detach().to("cpu", torch.int64).reshape(-1)
    if indices.dim() != 1 or idx.numel() != plan.n_chunks:
        raise BitstreamError(
            f"the plan has {plan.n_chunks} chunks, got indices of shape {tuple(indices.shape)}"
        )
    limits = torch.tensor([1 << b for b in plan.bits], dtype=torch.int64)
    bad = (idx < 0) | (idx >= limits)
    if bool(bad.any()):
        c = int(torch.nonzero(bad)[0])
        raise BitstreamError(f"index {int(idx[c])} of chunk {c} is outside [0, 2^{plan.bits[c]})")
    out_device = torch.device(device) if device is not None else indices.device
    backend = resolve_backend(backend, out_device)
    if backend == "reference":
        return reference.decode(idx.tolist(), plan, seed, step).to(out_device)
    if backend == "cpp":
        sample = _cpp().decode(idx.numpy(), dim, _bits(plan), _dims(plan), seed, step, _threads(threads))
        return torch.from_numpy(sample).to(out_device)
    return cuda_backend.decode(idx, plan, seed, step).to(out_device)


def _bits(plan: ChunkPlan):
    return np.asarray(plan.bits, dtype=np.int32)


def _dims(plan: ChunkPlan):
    return np.asarray(plan.dims, dtype=np.int64)


def _threads(threads: int | None) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return threads
