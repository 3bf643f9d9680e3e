"""CoD's ``LatentAE`` scaling around the SD-VAE (official ``CoD/cod/models/autoencoder.py``).

Verified in the official code: ``LatentAE.encode`` returns ``posterior.sample() * scaling_factor**2``
and ``decode(z)`` calls the VAE on ``z / scaling_factor**2`` (squared, not the usual single
factor; for sd-vae-ft-ema 0.18215**2 = 0.03318). With ``precompute=True`` the official encode
instead scales ready-made latents by ``scaling_factor`` once; that training-only path is not
mirrored. The official methods run under CUDA bf16 autocast and return bf16; these helpers keep
the caller's dtype (use ``autocast_dtype`` for the bf16 behaviour).
"""
from __future__ import annotations

import torch

from .autoencoder_kl import AutoencoderKL


def latent_encode(
    vae: AutoencoderKL,
    image: torch.Tensor,
    sample: bool = True,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Image (B, 3, H, W) in [-1, 1] -> diffusion latent (B, 4, H/8, W/8) = z * scaling_factor**2.

    ``sample=True`` draws z from the posterior (as the official encode does) with ``generator``;
    ``sample=False`` uses the posterior mean.
    """
    with torch.autocast(image.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        posterior = vae.encode(image)
        z = posterior.sample(generator) if sample else posterior.mean
        return z * vae.scaling_factor**2


def latent_decode(vae: AutoencoderKL, latent: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Diffusion latent (B, 4, h, w) -> image (B, 3, 8h, 8w), nominally [-1, 1] (not clamped)."""
    with torch.autocast(latent.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        return vae.decode(latent / vae.scaling_factor**2)
