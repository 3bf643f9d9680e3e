"""Tiny CoD configurations, seeded weights and inputs shared by the CoD tests.

The golden files under ``tests/models/data/`` were produced by running the OFFICIAL GenCodec
modules (outside this repository) with exactly these configurations, weights and inputs.
Weights are drawn from a seeded CPU generator in sorted key order, scaled so that activations stay
of order one through the tiny networks; nothing here depends on the module's own initialisation.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

DATA_DIR = Path(__file__).parent / "data"

# Tiny configurations: init_args keys exactly as in the official YAMLs.
TINY_PIXEL = dict(
    in_channels=3, patch_size=16, num_groups=2, hidden_size_x=16, hidden_size=64,
    num_blocks=3, num_cond_blocks=2, nerf_mlpratio=2, ds=32, codebook_bits=4, up2x=True,
)
TINY_LATENT = dict(
    in_channels=4, patch_size=2, num_groups=2, hidden_size=64,
    num_blocks=3, num_cond_blocks=2, ds=32, codebook_bits=4, up2x=True,
)
TINY_ONE_STEP = dict(TINY_PIXEL, codebook_bits=8, ds=16, noise_level=0.5, pred="v")
# Codec variants: (ch, codebook_bits, ds, up2x, light); keys/shapes are checked for all of them.
CODEC_VARIANTS = {
    "ds32_up2x": dict(ch=64, codebook_bits=4, ds=32, up2x=True),
    "ds32": dict(ch=64, codebook_bits=4, ds=32, up2x=False),
    "ds32_light": dict(ch=64, codebook_bits=4, ds=32, up2x=True, light=True),
    "ds128_up2x": dict(ch=64, codebook_bits=4, ds=128, up2x=True),
    "ds128": dict(ch=64, codebook_bits=4, ds=128, up2x=False),
    "ds16_up2x": dict(ch=64, codebook_bits=8, ds=16, up2x=True),
    "ds8_up2x": dict(ch=64, codebook_bits=8, ds=8, up2x=True),
    "ds4_up2x": dict(ch=64, codebook_bits=8, ds=4, up2x=True),
}


def seeded_state_dict(reference: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random fp32 weights with the keys and shapes of ``reference`` (a state dict).

    Matrices and conv kernels: ``N(0, 1/fan_in)``; 1D ``*weight`` (norm gains): ``1 + N(0, 0.1^2)``;
    other 1D tensors (biases): ``N(0, 0.1^2)``; codebooks (``embedding.weight``): ``N(0, 1)``.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = {}
    for key in sorted(reference):
        shape = tuple(reference[key].shape)
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if key.endswith("embedding.weight"):
            value = noise
        elif len(shape) >= 2:
            value = noise / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        out[key] = value
    return out


def seeded_inputs(seed: int, **shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Named ``N(0, 1)`` fp32 tensors drawn in argument order from a CPU generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return {name: torch.randn(shape, generator=gen, dtype=torch.float32) for name, shape in shapes.items()}


def seeded_images(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Smooth-ish images in [0, 1]: a seeded uniform field, ``shape = (B, 3, H, W)``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(shape, generator=gen, dtype=torch.float32)


def key_shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """``{key: shape}`` in state-dict order (the order is part of what is compared)."""
    return {k: list(v.shape) for k, v in state_dict.items()}


# (class name, init_args, seed) -> seeded state dict: the same tiny models recur across test files.
_SEEDED_CACHE: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}


def build_seeded(cls: type[torch.nn.Module], args: dict, seed: int) -> torch.nn.Module:
    """``cls(**args)`` built on the meta device (no random init), materialised on the CPU and
    loaded with seeded weights (``strict=True``); returned in eval mode. Each call returns a new
    module that owns its weights."""
    with torch.device("meta"):
        model = cls(**args)
    key = (cls.__name__, repr(sorted(args.items())), seed)
    if key not in _SEEDED_CACHE:
        _SEEDED_CACHE[key] = seeded_state_dict(model.state_dict(), seed)
    model = model.to_empty(device="cpu")
    model.load_state_dict(_SEEDED_CACHE[key], strict=True)
    return model.eval()


def load_golden(name: str) -> dict[str, torch.Tensor]:
    """A golden file ``cod_golden_<name>.pt`` (official-module outputs)."""
    return torch.load(DATA_DIR / f"cod_golden_{name}.pt", weights_only=True)


def assert_close_fp32(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """fp32 comparison with a tolerance scaled to the magnitude of ``expected``."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=rel * scale)
