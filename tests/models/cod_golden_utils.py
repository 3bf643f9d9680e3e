"""Golden-data helpers of the CoD model tests (``tests/models/data/cod_golden_*.pt``).

Those files were produced by running the OFFICIAL GenCodec modules (outside this repository) with
the tiny configurations, seeded weights and inputs of ``tests/tiny_models.py``
(``PIXEL_NET_ARGS``, ``LATENT_NET_ARGS``, ``ONE_STEP_NET_ARGS``, ``CODEC_VARIANTS``,
``fan_in_state_dict`` / ``build_seeded``, ``seeded_inputs``, ``seeded_images``).
"""
from __future__ import annotations

from pathlib import Path

import torch

DATA_DIR = Path(__file__).parent / "data"


def key_shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """``{key: shape}`` in state-dict order (the order is part of what is compared)."""
    return {k: list(v.shape) for k, v in state_dict.items()}


def load_golden(name: str) -> dict[str, torch.Tensor]:
    """A golden file ``cod_golden_<name>.pt`` (official-module outputs)."""
    return torch.load(DATA_DIR / f"cod_golden_{name}.pt", weights_only=True)


def assert_close_fp32(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """fp32 comparison with a tolerance scaled to the magnitude of ``expected``."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=rel * scale)
