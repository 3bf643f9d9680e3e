"""One-step CoD-Lite decoding, as ``finetuned_one_step_codec/inference.py`` does it, on any device.

Official decode of a ``.cod`` file: ``cond = net.decompress(indices, H, W, device)`` (unpack the
indices, codebook lookup, condition decoder), then ``img = net.inference(y=zeros(1, 3, H, W),
cond=cond)`` (one DConv forward at t=0 from ``noise_level`` noise, 0 for the published models),
then ``fp2uint8``: ``clamp((img + 1) * 127.5 + 0.5, 0, 255)`` truncated to uint8.

Image sizes: the official code neither pads nor crops. The condition map must land on the
16-pixel token grid, which holds when H and W are multiples of ``max(16, real_ds)`` (real_ds =
ds with up2x, ds/2 without): multiples of 16 for ds 4/8/16 (720x480 works at 0.0312 bpp: 45x30
indices), multiples of 32 for ds 32 (720x480 fails officially at 0.0039/0.0078 bpp with a tensor
size mismatch). :func:`check_image_size` raises ``ValueError`` for those sizes instead; padding
such images is the codec's business (it must also carry the true size).
"""
from __future__ import annotations

import torch

from .one_step import OneStepCoD


def required_multiple(net: OneStepCoD) -> int:
    """The multiple that H and W must be for ``net`` (see the module docstring)."""
    codec = net.y_embedder
    real_ds = codec.ds if codec.up2x else codec.ds // 2
    return max(net.patch_size, real_ds)


def check_image_size(net: OneStepCoD, height: int, width: int) -> None:
    """Raise ``ValueError`` unless an H x W image can be coded by ``net`` without padding."""
    m = required_multiple(net)
    if height <= 0 or width <= 0 or height % m or width % m:
        raise ValueError(f"image size {height}x{width} (HxW) must be positive multiples of {m} for this model")


def fp2uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float image -> uint8 [0, 255]: ``clamp((x + 1) * 127.5 + 0.5, 0, 255)``, truncated."""
    return ((x.float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


def condition_from_indices(net: OneStepCoD, indices: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """VQ indices (h*w,) int64 in raster order -> condition map (1, hidden, H/16, W/16)."""
    check_image_size(net, height, width)
    codec = net.y_embedder
    h, w = codec.calculate_indices_size(height, width)
    indices = indices.reshape(-1)
    if indices.numel() != h * w:
        raise ValueError(f"expected {h * w} indices for a {height}x{width} image, got {indices.numel()}")
    if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
    n_e = codec.bottleneck.n_e
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_e):
        raise ValueError(f"indices must lie in [0, {n_e})")
    device = next(net.parameters()).device
    y_hat = codec.bottleneck.get_codebook_entry(indices.to(device=device, dtype=torch.int64), (h, w))
    return codec.decoder(y_hat)


@torch.inference_mode()
def one_step_decode(
    net: OneStepCoD,
    indices: torch.Tensor,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Indices -> image (1, 3, H, W) float in [-1, 1] (not clamped; use :func:`fp2uint8`).

    ``net`` should be in eval mode (t=0 adaLN cached; windowed codec attention). ``generator``
    drives the starting noise when ``net.noise_level > 0``. ``autocast_dtype`` (e.g.
    ``torch.bfloat16``) runs under autocast on the parameters' device type, as the official
    script does on CUDA; None runs in the parameters' dtype.
    """
    if net.training:
        raise ValueError("one_step_decode needs the model in eval mode (call net.eval())")
    p = next(net.parameters())
    with torch.autocast(p.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        cond = condition_from_indices(net, indices, height, width)
        y = torch.zeros((1, 3, height, width), device=cond.device, dtype=cond.dtype)
        return net.inference(y, cond=cond, generator=generator)


@torch.inference_mode()
def one_step_encode(net: OneStepCoD, image: torch.Tensor) -> torch.Tensor:
    """Image (1, 3, H, W) float in [0, 1] -> VQ indices (h*w,) int64, raster order."""
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"expected an image of shape (1, 3, H, W), got {tuple(image.shape)}")
    check_image_size(net, image.shape[-2], image.shape[-1])
    codec = net.y_embedder
    p = next(net.parameters())
    y = codec.encoder(image.to(device=p.device, dtype=p.dtype))
    return codec.bottleneck(y)[2]
