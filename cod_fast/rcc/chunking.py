"""Chunk plan of one DiffC step, computed from integers only.

The KL budget of a step is carried as an integer ``kl_q`` in units of 1/16 bit
(:data:`KL_UNITS_PER_BIT`): ``kl_q = quantize_kl(kl_bits) = ceil(16 * kl_bits)``. A stream stores
``kl_q``; passing ``kl_q / 16`` back through :func:`quantize_kl` returns ``kl_q`` exactly (the
product by 16 and the division are exact in binary floating point), so encoder and decoder derive
the same plan.

Plan (DiffC's ``get_chunk_sizes`` / ``partition_mu`` with its defaults max 16, padding 2):
``n = ceil(kl_q / 16)`` bits; ``chunks = ceil(n / 14)``; the ``n + 2 * chunks`` bits are spread
evenly (the first ``total % chunks`` chunks get one more), so every chunk has at most 16 bits, i.e.
at most 2^16 candidates. Chunk ``i < last`` gets ``dim * bits_i // total`` dimensions and the last
one the rest. A zero budget gives one chunk of 0 bits (one candidate: a prior sample, no index bits).
Which dimensions go to which chunk is decided by the Philox shuffle of the step
(:func:`cod_fast.rcc.reference.permutation`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KL_UNITS_PER_BIT = 16
MAX_CHUNK_BITS = 16
CHUNK_PADDING_BITS = 2
MAX_DIM = 2**31 - 1
#: Largest accepted budget, in bits (2^20 bits per step; DiffC steps carry hundreds to thousands).
MAX_KL_BITS = 2**20


def quantize_kl(kl_bits: float) -> int:
    """Budget in bits (float or int, >= 0) -> integer budget in 1/16 bit, rounded up."""
    if isinstance(kl_bits, bool) or not isinstance(kl_bits, (int, float)):
        raise TypeError(f"kl_bits must be a real number, got {type(kl_bits).__name__}")
    if not math.isfinite(kl_bits) or kl_bits < 0:
        raise ValueError(f"kl_bits must be finite and >= 0, got {kl_bits}")
    if kl_bits > MAX_KL_BITS:
        raise ValueError(f"kl_bits must be <= {MAX_KL_BITS}, got {kl_bits}")
    if isinstance(kl_bits, int):
        return kl_bits * KL_UNITS_PER_BIT
    return math.ceil(kl_bits * KL_UNITS_PER_BIT)


@dataclass(frozen=True)
class ChunkPlan:
    """Integer layout of one step: ``bits[i]`` index bits and ``dims[i]`` dimensions of chunk i."""

    dim: int
    kl_q: int
    bits: tuple[int, ...]
    dims: tuple[int, ...]

    @property
    def n_chunks(self) -> int:
        return len(self.bits)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each chunk in the step's permutation."""
        out, acc = [], 0
        for d in self.dims:
            out.append(acc)
            acc += d
        return tuple(out)

    def chunk_kl_q(self) -> tuple[tuple[int, int], ...]:
        """Each chunk's share of the budget as an exact fraction (numerator, denominator) in 1/16
        bits: ``kl_q * bits_i / sum(bits)`` (DiffC's ``dkl * chunk_size / chunk_size_sum``)."""
        total = sum(self.bits)
        if total == 0:
            return tuple((0, 1) for _ in self.bits)
        return tuple((self.kl_q * b, total) for b in self.bits)


def plan_chunks(dim: int, kl_q: int) -> ChunkPlan:
    """Chunk plan for ``dim`` dimensions and an integer budget ``kl_q`` (1/16 bits)."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if isinstance(kl_q, bool) or not isinstance(kl_q, int):
        raise TypeError(f"kl_q must be an int, got {type(kl_q).__name__}")
    if not 1 <= dim <= MAX_DIM:
        raise ValueError(f"dim must be in [1, {MAX_DIM}], got {dim}")
    if not 0 <= kl_q <= MAX_KL_BITS * KL_UNITS_PER_BIT:
        raise ValueError(f"kl_q must be in [0, {MAX_KL_BITS * KL_UNITS_PER_BIT}], got {kl_q}")
    n = -(-kl_q // KL_UNITS_PER_BIT)
    if n == 0:
        return ChunkPlan(dim, kl_q, (0,), (dim,))
    per_chunk = MAX_CHUNK_BITS - CHUNK_PADDING_BITS
    chunks = -(-n // per_chunk)
    total = n + CHUNK_PADDING_BITS * chunks
    base, extra = divmod(total, chunks)
    bits = tuple(base + 1 if i < extra else base for i in range(chunks))
    dims = [dim * b // total for b in bits[:-1]]
    dims.append(dim - sum(dims))
    if min(dims) < 1:
        raise ValueError(
            f"a budget of {kl_q / KL_UNITS_PER_BIT} bits needs {chunks} chunks, more than "
            f"{dim} dimensions can fill (every chunk needs at least one dimension)"
        )
    return ChunkPlan(dim, kl_q, bits, tuple(dims))
