"""CoD decoding loops: starting noise, the unconditional branch, multi-step and one-step decode.

Mirrors the ``decompress`` paths of GenCodec ``CoD/cod/inference.py`` and
``CoD/downstream/finetuned_one_step_cod.py``, on any device, fp32 by default or bf16 autocast.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Sequence

import torch
from torch import nn

from .samplers import SAMPLERS, DenoiserFn, create_sampler

DEFAULT_STEPS = 25  # inference.py: --step default 25
DEFAULT_SAMPLER = "adam2"  # inference.py: --sampler default "adam2"
DEFAULT_SEED = 0  # inference.py: --seed default 0
DEFAULT_CFG = 3.0  # inference.py: --cfg default 3.0 (README: 1.25 for latent 0.0039 bpp)
UNCOND_VALUE = -1.0  # autoencoder.py PixelConditioner: uncondition = y * 0. - 1.


def autocast_context(device: torch.device | str, dtype: torch.dtype) -> ContextManager[None]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type for bf16/fp16; a no-op for fp32.

    The official scripts run everything under CUDA bf16 autocast; ``dtype=torch.float32`` is the
    exact reference.
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def initial_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Starting noise exactly as ``inference.py`` draws it: ``torch.randn(shape)`` in fp32 from a
    CPU generator seeded with ``seed`` (pixel: ``(1, 3, H, W)``; latent: ``(1, 4, H/8, W/8)``)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, device="cpu", dtype=torch.float32)


def unconditional_image(
    height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The unconditional input of classifier-free guidance: ``(1, 3, height, width)`` filled with -1.

    The official decompress builds it from ``rand_like(xT)``, which for latent models has the
    latent's shape (4 channels, 1/8 size) and cannot enter the 3-channel encoder; the
    ``evaluate`` path and pixel models use the image's shape, as here.
    """
    return torch.full((1, 3, height, width), UNCOND_VALUE, device=device, dtype=dtype)


def sample(
    net: DenoiserFn,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    shape: Sequence[int],
    steps: int = DEFAULT_STEPS,
    sampler: str = DEFAULT_SAMPLER,
    cfg: float = DEFAULT_CFG,
    seed: int = DEFAULT_SEED,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Multi-step CoD decode of one condition map.

    Args:
        net: a :class:`~cod_fast.models.cod.PixNerDiT` or :class:`~cod_fast.models.cod.DDT`.
        cond: condition map ``(1, hidden, h, w)`` (``net.y_embedder.decompress(...)``).
        uncond: map of the unconditional image ``(1, hidden, h, w)`` (see :func:`unconditional_image`).
        shape: output shape, ``(1, 3, H, W)`` pixel or ``(1, 4, H/8, W/8)`` latent.
        steps, sampler, cfg, seed: as the official ``--step``, ``--sampler``, ``--cfg``, ``--seed``.
        dtype: ``torch.float32`` (reference) or ``torch.bfloat16`` (autocast, as the official run).

    Returns:
        ``shape`` tensor on ``cond``'s device: the decoded image in about [-1, 1] (pixel) or the
        latent (to be decoded by the SD-VAE).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if cond.shape != uncond.shape or cond.ndim != 4:
        raise ValueError(f"cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} must be equal 4D shapes")
    if len(shape) != 4 or shape[0] != cond.shape[0]:
        raise ValueError(f"shape {tuple(shape)} must be 4D with the batch of cond ({cond.shape[0]})")
    diffusion_sampler = create_sampler(sampler, steps, cfg)
    noise = initial_noise(shape, seed).to(cond.device)
    codec_cond = torch.cat([uncond, cond], dim=0)
    with autocast_context(cond.device, dtype):
        return diffusion_sampler(net, noise, codec_cond=codec_cond)


def one_step_decode(
    net: nn.Module,
    cond: torch.Tensor,
    seed: int = DEFAULT_SEED,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One-step decode with a :class:`~cod_fast.models.cod.OneStepCoD`: ``(B, hidden, h, w) -> (B, 3, 16h, 16w)``.

    The model is switched to eval mode (which caches its t=0 modulation); its input noise
    (scaled by ``net.noise_level``) comes from a CPU generator seeded with ``seed``.
    """
    if net.training:
        net.eval()
    patch = net.patch_size
    b, _, h, w = cond.shape
    y = torch.zeros((b, 3, h * patch, w * patch), device=cond.device, dtype=cond.dtype)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with autocast_context(cond.device, dtype):
        return net.inference(y, cond=cond, generator=generator)
