"""Integer CDF tables for the rANS coders, and the quantizers that build them.

A table set is CompressAI's representation: ``quantized_cdf`` int32 [n_tables, width] (row t uses
its first ``cdf_length[t]`` entries, starting at 0 and ending at 65536 = 2**16), ``offset`` int32
[n_tables] (symbol = value + offset), and the last used entry of every row is the escape symbol
that carries out-of-range values as 4-bit bypass nibbles.
"""
from __future__ import annotations

import heapq
from typing import Any, Sequence

import numpy as np
import torch

from .._ext import require_cpu_ext
from ._convert import as_cdf_rows, as_int32, as_stream, resolve_threads

PRECISION = 16
TOTAL = 1 << PRECISION


def pmf_to_quantized_cdf(pmf: Any, precision: int = PRECISION) -> np.ndarray:
    """CompressAI's ``pmf_to_quantized_cdf``, reproduced exactly (int64 [len(pmf) + 1]).

    ``pmf`` is converted to float32 (CompressAI passes it through ``std::vector<float>``); every
    step after the float32 ``round(p * 2**precision)`` is integer arithmetic. Every entry,
    including zero-probability ones, ends with frequency >= 1 (frequency is stolen from the
    smallest entry above 1, first one in index order).
    """
    p = np.asarray(pmf, dtype=np.float32).reshape(-1)
    if p.size == 0:
        raise ValueError("pmf must not be empty")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("pmf must be finite and non-negative")
    if p.size + 1 > TOTAL:
        raise ValueError(f"pmf longer than {TOTAL - 1} entries cannot be quantized")
    scale = 1 << precision
    # float32 product by a power of two is exact; std::round = half away from zero (p >= 0).
    counts = np.floor(p.astype(np.float64) * scale + 0.5).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("pmf must have at least one non-zero probability")
    freq = (scale * counts) // total
    # Partial sum with the last entry forced to the full scale: the last symbol takes the slack.
    freq[-1] += scale - int(freq.sum())
    # The steal loop of CompressAI, in frequency form: each zero entry (in index order) takes one
    # unit from the smallest frequency > 1 (lowest index among equals). Steals only fix the zero
    # entry and lower a frequency > 1, so processing the zeros found up front is equivalent; a
    # heap ordered by (frequency, index) yields the same choices in O(z log n).
    zeros = np.flatnonzero(freq == 0)
    if zeros.size:
        donors = [(int(f), int(j)) for j, f in enumerate(freq.tolist()) if f > 1]
        heapq.heapify(donors)
        for i in zeros:
            if not donors:
                raise ValueError("pmf has too many entries to give each a non-zero frequency")
            f, j = heapq.heappop(donors)
            freq[j] -= 1
            freq[i] += 1
            if f - 1 > 1:
                heapq.heappush(donors, (f - 1, j))
    cdf = np.zeros(p.size + 1, dtype=np.int64)
    np.cumsum(freq, out=cdf[1:])
    return cdf


def counts_to_quantized_cdf(counts: Any) -> np.ndarray:
    """Integer-only quantization of symbol counts to a precision-16 CDF with an escape entry.

    ``counts``: non-negative integers [k]. Returns int64 [k + 2]: every symbol with count > 0 gets
    frequency >= 1, symbols with count 0 get frequency 0 (they cannot be encoded), and the trailing
    escape symbol gets frequency 1. The remaining 65535 - (#non-zero) units are shared in proportion
    to the counts by the largest-remainder method (ties to the lower index), so the result depends
    only on the integers.
    """
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
        raise ValueError("counts must be a non-empty 1-D array")
    if c.dtype.kind not in "iu":
        raise TypeError(f"counts must hold integers, got dtype {c.dtype}")
    c = c.astype(np.int64)
    if np.any(c < 0):
        raise ValueError("counts must be non-negative")
    total = int(c.sum())
    if total == 0:
        raise ValueError("counts must not all be zero")
    if total >= 1 << 46:
        raise ValueError("counts sum too large (>= 2**46)")
    nz = c > 0
    budget = TOTAL - 1 - int(nz.sum())  # units left after the escape and the floors of 1
    if budget < 0:
        raise ValueError(f"more than {TOTAL - 1} symbols with non-zero count")
    share = budget * c  # < 2**62
    freq = share // total + nz
    rem = share % total
    left = budget - int((share // total).sum())
    if left:
        order = np.lexsort((np.arange(c.size), -rem))  # largest remainder first, then index
        freq[order[:left]] += 1
    cdf = np.zeros(c.size + 2, dtype=np.int64)
    np.cumsum(np.append(freq, 1), out=cdf[1:])
    assert cdf[-1] == TOTAL
    return cdf


def _stack_rows(rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    cdf = torch.zeros((len(rows), width), dtype=torch.int32)
    for i, r in enumerate(rows):
        cdf[i, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int32))
    length = torch.tensor([len(r) for r in rows], dtype=torch.int32)
    return cdf, length


class CdfTables:
    """A set of integer CDF tables and the rANS coders that use them.

    Attributes (all CPU tensors, built once; nothing depends on a device):
      quantized_cdf: torch.int32 [n_tables, width]
      cdf_length:    torch.int32 [n_tables]
      offset:        torch.int32 [n_tables]

    ``encode``/``decode`` use cod_fast's segmented multi-lane format; ``compat_encode`` /
    ``compat_decode`` produce / read CompressAI's ``RansEncoder`` streams.
    """

    def __init__(self, quantized_cdf: Any, cdf_length: Any, offset: Any) -> None:
        cdf = as_cdf_rows(quantized_cdf)
        length = as_int32(cdf_length, "cdf_length").reshape(-1)
        off = as_int32(offset, "offset").reshape(-1)
        if not (cdf.shape[0] == length.size == off.size):
            raise ValueError(
                f"quantized_cdf ({cdf.shape[0]} rows), cdf_length ({length.size}) and offset "
                f"({off.size}) must describe the same number of tables"
            )
        self.quantized_cdf = torch.from_numpy(np.array(cdf, dtype=np.int32))
        self.cdf_length = torch.from_numpy(np.array(length, dtype=np.int32))
        self.offset = torch.from_numpy(np.array(off, dtype=np.int32))
        # Validates the tables (raises ValueError) and builds the coder's lookup structures.
        self._native = require_cpu_ext().rans.Tables(
            self.quantized_cdf.numpy(), self.cdf_length.numpy(), self.offset.numpy()
        )

    def __deepcopy__(self, memo: dict) -> "CdfTables":
        # Immutable after construction (nothing mutates the tensors or the native tables), so a
        # deep copy of a model that holds tables (e.g. optimize()'s module-tree copy) shares them.
        return self

    @property
    def n_tables(self) -> int:
        return int(self.quantized_cdf.shape[0])

    @classmethod
    def from_counts(cls, counts: Sequence[Any], offsets: Any) -> "CdfTables":
        """Tables from integer symbol counts (one array per table), see counts_to_quantized_cdf.

        ``offsets[t]`` is the symbol coded by counts[t][0]. Row t has length len(counts[t]) + 2.
        """
        if len(counts) == 0:
            raise ValueError("counts must hold at least one table")
        rows = [counts_to_quantized_cdf(c) for c in counts]
        cdf, length = _stack_rows(rows)
        return cls(cdf, length, as_int32(offsets, "offsets").reshape(-1))

    @classmethod
    def from_pmfs(
        cls, pmfs: Sequence[Any], offsets: Any, tail_mass: float | Sequence[float] | None = None
    ) -> "CdfTables":
        """Tables from float pmfs, quantized like CompressAI's ``EntropyModel._pmf_to_cdf``.

        Each row is ``pmf_to_quantized_cdf(cat(pmf, [tail]))`` with ``tail`` from ``tail_mass``
        (one float or one per table; None: max(0, 1 - sum(pmf)) in float32). Row t has length
        len(pmfs[t]) + 2, like CompressAI's ``cdf_length = pmf_length + 2``.
        """
        if len(pmfs) == 0:
            raise ValueError("pmfs must hold at least one table")
        if tail_mass is None or np.ndim(tail_mass) == 0:
            tails = [tail_mass] * len(pmfs)
        else:
            tails = list(tail_mass)
            if len(tails) != len(pmfs):
                raise ValueError("tail_mass must be a float or have one entry per pmf")
        rows = []
        for p, tail in zip(pmfs, tails):
            if isinstance(p, torch.Tensor):
                p = p.detach().cpu().to(torch.float32).numpy()
            p = np.asarray(p, dtype=np.float32).reshape(-1)
            if tail is None:
                tail = max(np.float32(0), np.float32(1) - p.sum(dtype=np.float32))
            rows.append(pmf_to_quantized_cdf(np.append(p, np.float32(tail))))
        cdf, length = _stack_rows(rows)
        return cls(cdf, length, as_int32(offsets, "offsets").reshape(-1))

    # ---- cod_fast format ----
    def encode(
        self,
        symbols: Any,
        indexes: Any,
        threads: int | None = None,
        segment_symbols: int | None = None,
    ) -> bytes:
        """Encode integer ``symbols`` (any shape) with ``tables[indexes]`` (same shape).

        Uses cod_fast's format (independent segments of ``segment_symbols`` symbols, default
        65536, each with 4 interleaved rANS states); ``threads`` (None: one per CPU) only changes
        the speed, never the bytes.
        """
        sym = as_int32(symbols, "symbols")
        idx = as_int32(indexes, "indexes")
        if sym.shape != idx.shape:
            raise ValueError(f"symbols {tuple(sym.shape)} and indexes {tuple(idx.shape)} differ in shape")
        rans = require_cpu_ext().rans
        seg = rans.DEFAULT_SEGMENT_SYMBOLS if segment_symbols is None else int(segment_symbols)
        return rans.fast_encode(
            self._native, sym.reshape(-1), idx.reshape(-1), seg, resolve_threads(threads)
        )

    def decode(self, data: Any, indexes: Any, threads: int | None = None) -> torch.Tensor:
        """Decode a stream of ``encode`` into a torch.int32 tensor shaped like ``indexes``.

        Raises cod_fast.errors.BitstreamError for a truncated, corrupted or foreign stream.
        """
        idx = as_int32(indexes, "indexes")
        out = torch.empty(idx.shape, dtype=torch.int32)
        require_cpu_ext().rans.fast_decode(
            self._native, as_stream(data), idx.reshape(-1), out.numpy().reshape(-1),
            resolve_threads(threads),
        )
        return out

    # ---- CompressAI format ----
    def compat_encode(self, symbols: Any, indexes: Any) -> bytes:
        """CompressAI ``RansEncoder().encode_with_indexes`` bytes for these tables."""
        sym = as_int32(symbols, "symbols")
        idx = as_int32(indexes, "indexes")
        if sym.shape != idx.shape:
            raise ValueError(f"symbols {tuple(sym.shape)} and indexes {tuple(idx.shape)} differ in shape")
        return require_cpu_ext().rans.compat_encode(self._native, sym.reshape(-1), idx.reshape(-1))

    def compat_decode(self, data: Any, indexes: Any) -> np.ndarray:
        """Decode a CompressAI stream: numpy.int32 array shaped like ``indexes``."""
        idx = as_int32(indexes, "indexes")
        out = np.empty(idx.shape, dtype=np.int32)
        require_cpu_ext().rans.compat_decode(
            self._native, as_stream(data), idx.reshape(-1), out.reshape(-1)
        )
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_tables={self.n_tables}, width={self.quantized_cdf.shape[1]})"
        )
