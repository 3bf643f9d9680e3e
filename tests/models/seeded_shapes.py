"""Seeded weights from a {key: shape} listing, shared by the CoD-Lite and VAE golden tests.

The goldens under tests/models/data were produced by the official modules / diffusers from
exactly these weights, so the distribution and draw order here are part of those files.
"""
from __future__ import annotations

import math

import torch


def seeded_state_dict(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic weights: keys in sorted order; matrices ~ N(0, 1/fan_in), gains 1 + 0.1 N, biases 0.05 N."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        shape = tuple(shapes[k])
        if k.endswith("weight") and len(shape) >= 2:
            out[k] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif k.endswith("weight"):
            out[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[k] = 0.05 * torch.randn(shape, generator=g)
    return out
