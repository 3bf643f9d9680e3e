"""SD-VAE mirror (diffusers ``AutoencoderKL`` keys, no diffusers needed) and CoD's latent scaling."""
from .autoencoder_kl import AutoencoderKL, DiagonalGaussian
from .latent import latent_decode, latent_encode
from .loader import convert_legacy_attention_keys, load_diffusers_vae

__all__ = [
    "AutoencoderKL",
    "DiagonalGaussian",
    "convert_legacy_attention_keys",
    "latent_decode",
    "latent_encode",
    "load_diffusers_vae",
]
