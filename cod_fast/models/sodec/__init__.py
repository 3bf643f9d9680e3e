"""SODEC's one-step diffusion decoder parts (arXiv 2508.04979; no official code or weights).

- ``unet``: SD 1.x/2.x ``UNet2DConditionModel`` mirror with diffusers' state-dict keys, and a
  diffusers-folder loader that needs no diffusers.
- ``lora``: PEFT-style LoRA adapters (inject, load, merge into the base weights).
- ``vit``: the fidelity-guidance ViT (timm layout) and the trainable projection to UNet tokens.
- ``one_step``: the SD DDPM schedule (float64) and the OSEDiff-style one-step denoise at t=999.
- ``configs``: configurations and presets (SD 2.1-base, ViT-B/16, tiny test sizes).
- ``model``: ``SODEC`` (the whole model: hyperprior, transformation module, fidelity decoder,
  fidelity guidance, UNet, SD-VAE decoder), ``SodecConfig`` and its presets ``TINY_SODEC``,
  ``FULL_SODEC``.
- ``hyperprior``: the entropy-coded latent (analysis, hyper analysis, factorized z prior, mean-scale
  y prior) whose entropy parameters run in fixed point (``cod_fast.int_params``, identical on every
  backend).
"""
from __future__ import annotations

from .configs import SD21_BASE_UNET, TINY_UNET, TINY_VIT, VIT_B16, ProjectionConfig, UNetConfig, ViTConfig
from .hyperprior import TINY_HYPERPRIOR, FactorizedPrior, HyperpriorConfig, SodecHyperprior
from .lora import fold_lora, inject_lora, load_lora, merge_lora, split_lora_state_dict
from .model import FULL_SODEC, SODEC, TINY_SODEC, FidelityDecoder, SodecConfig, TransformModule, VAEConfig
from .one_step import SD21_BASE_SCHEDULE, DDPMSchedule, one_step_denoise, x0_from_prediction
from .unet import UNet2DConditionModel, load_unet
from .vit import FidelityGuidance, FidelityProjection, FidelityViT

__all__ = [
    "SD21_BASE_UNET",
    "TINY_UNET",
    "TINY_VIT",
    "VIT_B16",
    "ProjectionConfig",
    "UNetConfig",
    "ViTConfig",
    "UNet2DConditionModel",
    "load_unet",
    "fold_lora",
    "inject_lora",
    "load_lora",
    "merge_lora",
    "split_lora_state_dict",
    "SD21_BASE_SCHEDULE",
    "DDPMSchedule",
    "one_step_denoise",
    "x0_from_prediction",
    "FidelityGuidance",
    "FidelityProjection",
    "FidelityViT",
    "TINY_HYPERPRIOR",
    "FactorizedPrior",
    "HyperpriorConfig",
    "SodecHyperprior",
    "FULL_SODEC",
    "SODEC",
    "TINY_SODEC",
    "FidelityDecoder",
    "SodecConfig",
    "TransformModule",
    "VAEConfig",
]
