"""Image quality metrics in torch: PSNR and MS-SSIM (Wang, Simoncelli and Bovik 2003).

Both take two images of the same shape, [3, H, W] or [B, 3, H, W], uint8 (data range 255) or
float (data range 1.0 unless ``data_range`` is given), and compute in float64 on the CPU.

MS-SSIM uses 5 scales with the standard weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an
11x11 Gaussian window (sigma 1.5, "valid" filtering), K1 = 0.01, K2 = 0.03 and 2x2 average
pooling between scales. Five scales need at least 176 px per side (the coarsest scale, 1/16,
must hold one 11x11 window). Fallback for smaller images: use the largest number of scales s
whose coarsest scale still holds the window (side / 2**(s-1) >= 11), with the first s weights
renormalised to sum to 1; below 11 px the window shrinks to the largest odd size that fits
(sigma scaled by size / 11) and one scale is used.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
#: Smallest side for the full 5-scale MS-SSIM: WINDOW * 2**4.
FULL_SCALE_SIDE = WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)


def _prepare(a: torch.Tensor, b: torch.Tensor, data_range: float | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("metrics take two torch tensors")
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.dim() != 4 or a.shape[-1] < 1 or a.shape[-2] < 1:
        raise ValueError(f"expected [C, H, W] or [B, C, H, W] images, got {tuple(a.shape)}")
    if data_range is None:
        data_range = 255.0 if a.dtype == torch.uint8 else 1.0
    return a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64), float(data_range)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float | None = None) -> float:
    """PSNR in dB over all pixels of ``a`` and ``b`` ([C,H,W] or [B,C,H,W]); ``inf`` when equal."""
    x, y, r = _prepare(a, b, data_range)
    mse = float((x - y).pow(2).mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(r * r / mse)


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(c * c) / (2.0 * sigma * sigma))
    return g / g.sum()


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, r: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image: x, y (B, C, H, W) -> two (B,)."""
    n = g.numel()
    taps = [float(v) for v in g]

    def blur1d(t: torch.Tensor, dim: int) -> torch.Tensor:
        # "valid" filtering as a sum of shifted slices: float64 grouped conv2d is ~5x slower
        out_len = t.shape[dim] - n + 1
        acc = t.narrow(dim, 0, out_len) * taps[0]
        for k in range(1, n):
            acc.add_(t.narrow(dim, k, out_len), alpha=taps[k])
        return acc

    c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
    # the five blurred maps at once: separable Gaussian, per channel
    stats = blur1d(blur1d(torch.stack([x, y, x * x, y * y, x * y]), -1), -2)
    mx, my = stats[0], stats[1]
    sxx = stats[2] - mx * mx
    syy = stats[3] - my * my
    sxy = stats[4] - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return ssim.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor, data_range: float | None = None) -> float:
    """MS-SSIM of ``a`` and ``b`` ([C,H,W] or [B,C,H,W]), averaged over the batch; 1.0 when
    equal. Images under 176 px per side use fewer scales (see the module docstring)."""
    x, y, r = _prepare(a, b, data_range)
    side = min(x.shape[-2:])
    size, sigma = WINDOW, SIGMA
    if side < WINDOW:
        size = side if side % 2 else side - 1
        sigma = SIGMA * size / WINDOW
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2 ** scales >= size:
        scales += 1
    w = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    w = w / w.sum()
    g = _gaussian(size, sigma)
    values = []
    for i in range(scales):
        ssim, cs = _ssim_cs(x, y, g, r)
        values.append(ssim if i == scales - 1 else cs)
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    # negative cs values (anti-correlated patches) are clamped to 0, as in the common implementations
    stack = torch.stack(values, dim=1).clamp_min(0.0)
    return float(torch.prod(stack ** w, dim=1).mean())
