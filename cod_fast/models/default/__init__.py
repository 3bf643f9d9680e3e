"""The default cod_fast model: a small variable-rate hyperprior codec trained on openly
licensed wallpapers (see ``cod_fast/weights/MODEL_CARD.md``), shipped with the package so that
cod_fast works without downloading anything.

``load_default_model(device="cpu")`` returns the ``DefaultCodecModel`` with the shipped
weights (``cod_fast/weights/default.safetensors`` + ``default.json``), in eval mode.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from cod_fast.errors import ModelMismatchError

from .model import STRIDE, DefaultCodecModel, DefaultConfig, pad_to_stride

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
WEIGHTS_FILE = "default.safetensors"
CONFIG_FILE = "default.json"
#: Release 2's fixed-point entropy model (``integer_params``), derived from the float weights by
#: ``tools/export_default_int.py`` and committed: these integers are the model.
INT_WEIGHTS_FILE = "default_int.safetensors"
#: The bundled release of the default model (1: float32 entropy parameters; 2: fixed point; 3: fixed
#: point with the checkerboard context, for models trained with it: not bundled yet).
RELEASE = 2

__all__ = [
    "STRIDE",
    "DefaultCodecModel",
    "DefaultConfig",
    "pad_to_stride",
    "load_default_model",
    "default_model_info",
    "WEIGHTS_DIR",
    "RELEASE",
    "load_integer_state",
]


def default_model_info(weights_dir: Path | str | None = None) -> dict[str, Any]:
    """The JSON metadata shipped with the weights (config, lambdas, training run, sha256)."""
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = d / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"default model metadata not found at {path}")
    return json.loads(path.read_text())


def load_default_model(device: str | torch.device = "cpu", weights_dir: Path | str | None = None) -> DefaultCodecModel:
    """Build the default model and load the shipped weights (stored float16, loaded as float32).

    Returns the model on ``device`` in eval mode. Raises ``FileNotFoundError`` if the weights are
    missing and ``cod_fast.errors.ModelMismatchError`` if they do not fit the recorded config.
    """
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    info = default_model_info(d)
    cfg = DefaultConfig.from_dict(info["config"])
    model = DefaultCodecModel(cfg)
    path = d / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"default model weights not found at {path}")
    state = {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelMismatchError(
            "config", "weights",
            f"default weights do not fit their config: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}",
        )
    return model.to(device).eval()


def load_integer_state(weights_dir: Path | str | None = None) -> dict[str, torch.Tensor]:
    """Release 2's stored integer entropy state (``default_int.safetensors``) as a dict of int
    tensors (``integer_params.DefaultIntegerParams.from_state_dict`` builds the model from it).
    FileNotFoundError when missing."""
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = d / INT_WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"default model integer entropy parameters not found at {path}")
    return load_file(str(path))
