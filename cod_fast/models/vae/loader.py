"""Load a diffusers-format VAE folder (config.json + weights) without diffusers installed.

Weights: ``diffusion_pytorch_model.safetensors`` (preferred) or ``diffusion_pytorch_model.bin``
(read with ``torch.load(weights_only=True)``). Checkpoints saved before diffusers renamed its
attention parameters use ``query``/``key``/``value``/``proj_attn``; they are renamed to
``to_q``/``to_k``/``to_v``/``to_out.0`` at load, as diffusers does (1x1-conv shaped weights
(C, C, 1, 1) are reshaped to (C, C)).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from ...errors import ModelMismatchError
from .autoencoder_kl import AutoencoderKL

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# Old attention parameter name -> current name (inside ``*.mid_block.attentions.N.``).
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def convert_legacy_attention_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``...attentions.N.{query,key,value,proj_attn}.{weight,bias}`` to the current names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if len(parts) >= 3 and "attentions" in parts and parts[-2] in _OLD_ATTENTION_NAMES:
            parts[-2] = _OLD_ATTENTION_NAMES[parts[-2]]
            key = ".".join(parts)
            if parts[-1] == "weight" and value.dim() == 4 and value.shape[2:] == (1, 1):
                value = value[:, :, 0, 0]
        out[key] = value
    return out


def _read_weights(folder: str) -> dict[str, torch.Tensor]:
    for name in WEIGHT_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            if name.endswith(".safetensors"):
                return load_file(path, device="cpu")
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError(f"{path} does not hold a state dict")
            return state
    raise FileNotFoundError(f"no VAE weights in {folder!r} (looked for {', '.join(WEIGHT_NAMES)})")


def load_diffusers_vae(
    folder: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> AutoencoderKL:
    """Build :class:`AutoencoderKL` from ``folder/config.json`` and load its weights strictly.

    Raises ``FileNotFoundError`` for a missing config/weights file, ``ValueError`` for an
    unreadable config, :class:`~cod_fast.errors.ModelMismatchError` when the weights' keys or
    shapes do not match the config. Returns the model in eval mode.
    """
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {folder!r}")
    with open(config_path, encoding="utf-8") as f:
        try:
            config: dict[str, Any] = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object")
    class_name = config.get("_class_name", "AutoencoderKL")
    if class_name != "AutoencoderKL":
        raise ValueError(f"{folder!r} holds a {class_name}, not an AutoencoderKL")
    with torch.device("meta"):
        model = AutoencoderKL(**config)
    state = convert_legacy_attention_keys(_read_weights(folder))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or bad_shape:
        raise ModelMismatchError(
            expected=f"AutoencoderKL{tuple(config.get('block_out_channels', ()))}",
            found=os.path.basename(os.path.normpath(folder)),
            message=(
                f"VAE weights in {folder!r} do not match config.json: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, wrong shape {bad_shape[:5]}"
            ),
        )
    state = {k: v.to(dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()
