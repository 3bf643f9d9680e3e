"""Official CoD model configurations as Python presets, and the official class paths.

Each preset is ``{"class_path": <official class path>, "init_args": <official init_args>}``,
copied by value from ``model.denoiser`` of the YAML files in GenCodec ``CoD/cod/configs/``
(named after them). The ``*_unified_post`` YAMLs (stage-3 post-training) use the same
``init_args`` as their ``*_pix512_xl`` stage-2 counterparts.

Sampling defaults (``CoD/cod/inference.py`` and ``CoD/README.md``): 25 steps, ``adam2``, seed 0,
guidance 3.0 for pixel and latent 64-bit (0.00024 bpp) models, 1.25 for latent 0.0039 bpp.
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .condition_codec import Codec
from .latent_dit import DDT
from .one_step import OneStepCoD
from .pixel_dit import PixNerDiT

PIXEL_CLASS_PATH = "cod.models.pixel_dit.PixNerDiT"
LATENT_CLASS_PATH = "cod.models.latent_dit.DDT"
ONE_STEP_CLASS_PATH = "downstream.finetuned_one_step_cod.OneStepCoD"
CODEC_CLASS_PATH = "cod.models.condition_codec.Codec"

# Official class_path strings -> our classes.
CLASS_PATHS: dict[str, type[nn.Module]] = {
    PIXEL_CLASS_PATH: PixNerDiT,
    LATENT_CLASS_PATH: DDT,
    ONE_STEP_CLASS_PATH: OneStepCoD,
    CODEC_CLASS_PATH: Codec,
}

# Shared by every pixel YAML (cod/configs/pixel/*.yaml).
_PIXEL_BASE: dict[str, Any] = dict(
    in_channels=3, patch_size=16, num_groups=16, hidden_size_x=64, hidden_size=1152,
    num_blocks=30, num_cond_blocks=26, nerf_mlpratio=2, codebook_bits=4,
)
# Shared by every latent YAML (cod/configs/latent/*.yaml).
_LATENT_BASE: dict[str, Any] = dict(
    in_channels=4, patch_size=2, num_groups=16, hidden_size=1152,
    num_blocks=28, num_cond_blocks=22, codebook_bits=4,
)


def _pixel(ds: int, up2x: bool) -> dict[str, Any]:
    return {"class_path": PIXEL_CLASS_PATH, "init_args": {**_PIXEL_BASE, "ds": ds, "up2x": up2x}}


def _latent(ds: int, up2x: bool) -> dict[str, Any]:
    return {"class_path": LATENT_CLASS_PATH, "init_args": {**_LATENT_BASE, "ds": ds, "up2x": up2x}}


PRESETS: dict[str, dict[str, Any]] = {
    "pixel/bpp_0_0039_pix256_xl": _pixel(ds=32, up2x=False),
    "pixel/bpp_0_0039_pix512_xl": _pixel(ds=32, up2x=True),
    "pixel/bpp_0_0039_pix512_xl_unified_post": _pixel(ds=32, up2x=True),
    "pixel/bpp_0_00024_pix256_xl": _pixel(ds=128, up2x=False),
    "pixel/bpp_0_00024_pix512_xl": _pixel(ds=128, up2x=True),
    "latent/bpp_0_0039_pix256_xl": _latent(ds=32, up2x=False),
    "latent/bpp_0_0039_pix512_xl": _latent(ds=32, up2x=True),
    "latent/bpp_0_0039_pix512_xl_unified_post": _latent(ds=32, up2x=True),
    "latent/bpp_0_00024_pix256_xl": _latent(ds=128, up2x=False),
    "latent/bpp_0_00024_pix512_xl": _latent(ds=128, up2x=True),
}


def _one_step(codebook_bits: int, ds: int, noise_level: float) -> dict[str, Any]:
    args = {**_PIXEL_BASE, "codebook_bits": codebook_bits, "ds": ds, "up2x": True}
    return {"class_path": ONE_STEP_CLASS_PATH, "init_args": {**args, "noise_level": noise_level, "pred": "x"}}


# One-step models. Their YAMLs ship with the weights (zhaoyangjia/CoD, finetuned_one_step_cod/*),
# not with the code, and were not available here: these presets are DERIVED, not copied. Source
# of each value: the PixNerDiT architecture of the 512 pixel configs (the one-step model
# subclasses PixNerDiT and is distilled from pixel CoD); (codebook_bits, ds) from the rate table
# at the end of condition_codec.py (4/32 -> 0.0039, 8/16 -> 0.0313, 8/8 -> 0.1250 bpp);
# noise_level from the README model names ("bpp_0_0039_noise_1" non-deterministic, the others
# deterministic); pred = the OneStepCoD default 'x'. A published YAML always takes precedence.
ONE_STEP_PRESETS: dict[str, dict[str, Any]] = {
    "one_step/bpp_0_0039": _one_step(codebook_bits=4, ds=32, noise_level=0.0),
    "one_step/bpp_0_0039_noise_1": _one_step(codebook_bits=4, ds=32, noise_level=1.0),
    "one_step/bpp_0_0312": _one_step(codebook_bits=8, ds=16, noise_level=0.0),
    "one_step/bpp_0_1250": _one_step(codebook_bits=8, ds=8, noise_level=0.0),
}

# Default guidance per preset family (README note; inference.py --cfg default 3.0).
DEFAULT_CFG: dict[str, float] = {
    "pixel/bpp_0_0039": 3.0,
    "pixel/bpp_0_00024": 3.0,
    "latent/bpp_0_0039": 1.25,
    "latent/bpp_0_00024": 3.0,
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name`` (a key of :data:`PRESETS` or :data:`ONE_STEP_PRESETS`)."""
    table = {**PRESETS, **ONE_STEP_PRESETS}
    if name not in table:
        raise ValueError(f"unknown CoD preset {name!r}; known: {sorted(table)}")
    return copy.deepcopy(table[name])


def default_cfg(name: str) -> float:
    """Official guidance scale for a pixel/latent preset name (e.g. ``latent/bpp_0_0039_pix512_xl``)."""
    for prefix, scale in DEFAULT_CFG.items():
        if name.startswith(prefix + "_"):
            return scale
    raise ValueError(f"no official guidance scale for {name!r}")


def resolve_class(class_path: str) -> type[nn.Module]:
    """Our class for an official ``class_path`` string; ``ValueError`` for an unknown one."""
    if class_path not in CLASS_PATHS:
        raise ValueError(f"unknown CoD class_path {class_path!r}; known: {sorted(CLASS_PATHS)}")
    return CLASS_PATHS[class_path]


def build_model(class_path: str, init_args: dict[str, Any]) -> nn.Module:
    """Instantiate ``class_path`` with the official ``init_args`` (unchanged keys)."""
    return resolve_class(class_path)(**init_args)
