"""Configurations of the published CoD-Lite models, as Python presets.

The one-step codecs (``zhaoyangjia/CoD_Lite``, ``CoD_Lite_bpp_*.pt``) all share the network of
``finetuned_one_step_codec/configs/stage{1,2}.yaml`` (``model.net.init_args``) and differ only in
the condition codec's ``ds`` and ``codebook_bits`` (``entry_finetune_cod_lite.py`` ``BPP_PARAMS``,
the README's table). bpp = codebook_bits / ds**2 (the packed indices' size divided by H*W).
``noise_level`` is not in the YAML: ``FinetunedOneStepCoD``'s default 0.0 applies (deterministic).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .one_step import FinetunedOneStepCoD, OneStepCoD
from .pixel_cnn import DConv

# Network shared by every one-step CoD-Lite model and by the pre-trained multi-step DConv
# (cod/configs/pixel/bpp_0_0039_pix512_xl.yaml): about 28M encoder + 52M decoder parameters.
BASE_INIT_ARGS: dict[str, Any] = {
    "pred": "x",
    "in_channels": 3,
    "patch_size": 16,
    "hidden_size_x": 32,
    "hidden_size": 384,
    "num_blocks": 24,
    "num_cond_blocks": 21,
    "light": True,
    "up2x": True,
}

# name -> (ds, codebook_bits); the name is the bpp with '_' for the decimal point, as in the
# official checkpoint names CoD_Lite_bpp_<name>.pt.
BPP_LADDER: dict[str, tuple[int, int]] = {
    "0_0039": (32, 4),
    "0_0078": (32, 8),
    "0_0156": (16, 4),
    "0_0312": (16, 8),
    "0_1250": (8, 8),
    "0_5000": (4, 8),
}


def one_step_init_args(bpp: str) -> dict[str, Any]:
    """``init_args`` of ``FinetunedOneStepCoD`` for a ladder entry, e.g. ``"0_0312"`` (ds 16, 8 bits)."""
    if bpp not in BPP_LADDER:
        raise ValueError(f"unknown CoD-Lite bitrate {bpp!r}; known: {sorted(BPP_LADDER)}")
    ds, bits = BPP_LADDER[bpp]
    return {**BASE_INIT_ARGS, "ds": ds, "codebook_bits": bits}


# Every preset as {"class_path", "init_args"}, the shape of an official YAML ``model.net`` entry.
PRESETS: dict[str, dict[str, Any]] = {
    f"cod_lite/bpp_{name}": {
        "class_path": "finetuned_one_step_codec.main_stage1.FinetunedOneStepCoD",
        "init_args": one_step_init_args(name),
    }
    for name in BPP_LADDER
}
# The pre-trained multi-step model (CoD_Lite_pretrain.pt): ds 32, 4 bits.
PRESETS["cod_lite/pretrain"] = {
    "class_path": "cod.models.pixel_cnn.DConv",
    "init_args": {**BASE_INIT_ARGS, "ds": 32, "codebook_bits": 4},
}

# Official class_path strings -> our classes.
CLASS_PATHS: dict[str, type[nn.Module]] = {
    "cod.models.pixel_cnn.DConv": DConv,
    "finetuned_one_step_codec.models.models.OneStepCoD": OneStepCoD,
    "finetuned_one_step_codec.main_stage1.FinetunedOneStepCoD": FinetunedOneStepCoD,
}


def bpp_of(ds: int, codebook_bits: int) -> float:
    """Bits per pixel of the fixed-length indices: codebook_bits / ds**2 (e.g. 8/256 = 0.03125)."""
    return codebook_bits / ds**2


def build(preset: str) -> nn.Module:
    """Instantiate a preset (random weights, fp32, CPU, training mode as constructed)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown CoD-Lite preset {preset!r}; known: {sorted(PRESETS)}")
    cfg = PRESETS[preset]
    return CLASS_PATHS[cfg["class_path"]](**cfg["init_args"])
