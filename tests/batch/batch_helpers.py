"""Helpers of the batch tests (importable by name: tests/batch is on sys.path)."""
from __future__ import annotations

import torch


def make_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth uint8 [3, h, w] test image with some texture (seeded)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    base = torch.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), (xx + yy) / max(h + w - 2, 1)]) * 200
    noise = torch.rand((3, h, w), generator=g) * 40
    return (base + noise).round().clamp(0, 255).to(torch.uint8)
