"""Gaussian conditional tables equal to CompressAI's ``GaussianConditional`` after ``update()``.

CompressAI builds them in float32 torch (``scale_table`` is float32; the pmf of a zero-mean
Gaussian at integer offsets comes from float32 ``erfc``), then quantizes each pmf with
``pmf_to_quantized_cdf``. We compute the float32 pmf with the same torch operations and quantize
it with cod_fast.entropy.tables.pmf_to_quantized_cdf (integer arithmetic after the float32
rounding step). Tables are built once on the CPU.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np
import torch

from .tables import CdfTables, pmf_to_quantized_cdf

SCALES_MIN = 0.11
SCALES_MAX = 256.0
SCALES_LEVELS = 64


def default_scale_table() -> torch.Tensor:
    """CompressAI's ``get_scale_table()``: 64 scales log-spaced in [0.11, 256], float32 [64]."""
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


def _standardized_cumulative(x: torch.Tensor) -> torch.Tensor:
    # Phi(x) = erfc(-x / sqrt(2)) / 2, written like CompressAI (same float32 operations).
    return 0.5 * torch.erfc(float(-(2**-0.5)) * x)


class GaussianConditionalTables(CdfTables):
    """CDF tables of CompressAI's ``GaussianConditional(scale_table, tail_mass=...)``.

    ``quantized_cdf`` (int32 [n_scales, width]), ``cdf_length`` and ``offset`` (int32
    [n_scales]) equal the buffers ``_quantized_cdf``, ``_cdf_length``, ``_offset`` of a
    GaussianConditional after ``update()``; ``build_indexes`` equals its ``build_indexes``.
    """

    def __init__(
        self,
        scale_table: Sequence[float] | torch.Tensor | None = None,
        tail_mass: float = 1e-9,
        scale_bound: float = 0.11,
    ) -> None:
        if scale_table is None:
            table = default_scale_table()
        else:
            if isinstance(scale_table, torch.Tensor):
                scale_table = scale_table.reshape(-1).tolist()
            values = [float(s) for s in scale_table]
            if len(values) < 1:
                raise ValueError("scale_table must not be empty")
            if values != sorted(values) or any(not (s > 0) or math.isinf(s) for s in values):
                raise ValueError("scale_table must be sorted, positive and finite")
            table = torch.tensor(values, dtype=torch.float32)
        if not (0.0 < float(tail_mass) < 1.0):
            raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
        if not (float(scale_bound) > 0):
            raise ValueError(f"scale_bound must be > 0, got {scale_bound}")
        self.scale_table = table
        self.tail_mass = float(tail_mass)
        self.scale_bound = float(scale_bound)

        # Same steps as GaussianConditional.update(), float32 throughout.
        multiplier = -NormalDist().inv_cdf(self.tail_mass / 2)
        pmf_center = torch.ceil(table * multiplier).int()
        pmf_length = 2 * pmf_center + 1
        max_length = int(pmf_length.max())
        samples = torch.abs(torch.arange(max_length).int() - pmf_center[:, None]).float()
        scales = table.unsqueeze(1).float()
        upper = _standardized_cumulative((0.5 - samples) / scales)
        lower = _standardized_cumulative((-0.5 - samples) / scales)
        pmf = (upper - lower).numpy()
        tails = (2 * lower[:, :1]).numpy()
        cdf = np.zeros((table.numel(), max_length + 2), dtype=np.int32)
        for i, n in enumerate(pmf_length.tolist()):
            row = pmf_to_quantized_cdf(np.append(pmf[i, :n], tails[i]))
            cdf[i, : row.size] = row
        super().__init__(cdf, (pmf_length + 2).numpy(), (-pmf_center).numpy())

    def build_indexes(self, scales: Any) -> torch.Tensor:
        """Table index of every scale (torch.int32, same shape): CompressAI's build_indexes.

        Scales are first bounded below by ``scale_bound``; the index is the number of table
        scales (all but the last) strictly below the scale, i.e. the first table scale >= it.
        """
        s = torch.as_tensor(scales)
        if not s.is_floating_point():
            s = s.to(torch.float32)
        s = s.detach().cpu()
        shape = s.shape
        # LowerBound: torch.max(x, float32 [1]) with ordinary type promotion.
        s = torch.max(s, torch.tensor([self.scale_bound], dtype=torch.float32))
        edges = self.scale_table[:-1].to(s.dtype).contiguous()
        idx = torch.searchsorted(edges, s.contiguous(), right=False)
        return idx.to(torch.int32).reshape(shape)

    def __repr__(self) -> str:
        return f"GaussianConditionalTables(n_scales={self.n_tables}, tail_mass={self.tail_mass})"
