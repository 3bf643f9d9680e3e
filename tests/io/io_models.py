"""Tiny CoD-family model configs and seeded official-style checkpoints for the I/O tests."""
from __future__ import annotations

import copy
import functools
import json
from typing import Any

import pytest
import torch

# Tiny versions of the official configs: the condition encoder keeps its fixed width (128 base),
# everything else is shrunk. Sizes must be multiples of 32 (ds=32, up2x) after padding.
TINY_PIXEL: dict[str, Any] = {
    "class_path": "cod.models.pixel_dit.PixNerDiT",
    "init_args": dict(in_channels=3, patch_size=16, num_groups=2, hidden_size=64, hidden_size_x=8,
                      num_blocks=2, num_cond_blocks=1, nerf_mlpratio=1, ds=32, codebook_bits=4,
                      up2x=True),
}
TINY_ONE_STEP: dict[str, Any] = {
    "class_path": "downstream.finetuned_one_step_cod.OneStepCoD",
    "init_args": {**TINY_PIXEL["init_args"], "noise_level": 0.0},
}
TINY_LITE: dict[str, Any] = {
    "class_path": "finetuned_one_step_codec.main_stage1.FinetunedOneStepCoD",
    "init_args": dict(pred="x", in_channels=3, patch_size=16, hidden_size_x=8, hidden_size=64,
                      num_blocks=2, num_cond_blocks=1, light=True, up2x=True, ds=32,
                      codebook_bits=4),
}


@functools.cache
def _shapes(config_json: str) -> tuple[tuple[str, tuple[int, ...], torch.dtype], ...]:
    from cod_fast.loading import build_net, parse_config

    net, _ = build_net(parse_config(json.loads(config_json)))
    return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(net.state_dict().items()))


def seeded_state_dict(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic non-trivial weights for ``config``: N(0, 0.05) everywhere (norm weights
    1 + N(0, 0.05), codebook N(0, 1)), drawn in key order from one CPU generator. The official
    inits zero some output layers, which would make every decoded image flat."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, dtype in _shapes(json.dumps(config, sort_keys=True)):
        if not dtype.is_floating_point:
            out[name] = torch.zeros(shape, dtype=dtype)
            continue
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        if "embedding" in name:
            v = r
        elif "norm" in name and name.endswith("weight"):
            v = 1 + 0.05 * r
        else:
            v = 0.05 * r
        out[name] = v.to(dtype)
    return out


def official_checkpoint(config: dict[str, Any], seed: int, prefix: str = "ema_denoiser.",
                        nest: str | None = "state_dict") -> dict[str, Any]:
    """An official-style checkpoint dict: weights under ``prefix`` (plus decoy non-EMA copies of
    three weights under ``denoiser.`` and a non-tensor entry), optionally nested under ``nest``."""
    sd = seeded_state_dict(config, seed)
    flat: dict[str, Any] = {prefix + k: v for k, v in sd.items()}
    flat.update({"denoiser." + k: torch.zeros_like(v) for k, v in list(sd.items())[:3]})
    return {nest: flat, "global_step": 7} if nest else flat


def load_seeded(config: dict[str, Any], seed: int, tmp_path_factory: pytest.TempPathFactory, **kw: Any):
    from cod_fast.loading import load_model

    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(official_checkpoint(config, seed), path)
    return load_model(copy.deepcopy(config), path, **kw)
