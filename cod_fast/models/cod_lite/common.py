"""Pixel-decoder pieces shared by CoD-Lite's ``DConv`` (official ``CoD_Lite/cod/models/common.py``).

``RMSNorm`` (the same module as CoD's, re-exported), ``NerfEmbedder`` (pixel features + 2D DCT
position features -> Linear) and ``NerfFinalLayer`` (RMSNorm + Linear). Attribute names are the
official ones.
"""
from __future__ import annotations

import torch
from torch import nn

from ..cod.layers import RMSNorm

__all__ = ["RMSNorm", "dct_features", "NerfEmbedder", "NerfFinalLayer"]


def dct_features(patch_size: int, max_freqs: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """2D DCT position features of a patch: (1, patch_size**2, max_freqs**2), raster order.

    Feature (i, j) of pixel (y, x) is cos(pi*x*f_i) * cos(pi*y*f_j) / (1 + f_i*f_j) with
    positions ``linspace(0, 1, patch_size)`` and frequencies ``linspace(0, max_freqs, max_freqs)``
    (the official spacing: max_freqs/(max_freqs-1), not integers).
    """
    pos = torch.linspace(0, 1, patch_size, device=device, dtype=dtype)
    pos_y, pos_x = torch.meshgrid(pos, pos, indexing="ij")
    pos_x = pos_x.reshape(-1, 1, 1)
    pos_y = pos_y.reshape(-1, 1, 1)
    freqs = torch.linspace(0, max_freqs, max_freqs, dtype=dtype, device=device)
    freqs_x = freqs[None, :, None]
    freqs_y = freqs[None, None, :]
    coeffs = (1 + freqs_x * freqs_y) ** -1
    dct = torch.cos(pos_x * freqs_x * torch.pi) * torch.cos(pos_y * freqs_y * torch.pi) * coeffs
    return dct.view(1, -1, max_freqs**2)


class NerfEmbedder(nn.Module):
    """inputs (N, p*p, in_channels) -> cat DCT features -> Linear -> (N, p*p, hidden_size_input)."""

    def __init__(self, in_channels: int, hidden_size_input: int, max_freqs: int) -> None:
        super().__init__()
        self.max_freqs = max_freqs
        self.hidden_size_input = hidden_size_input
        self.embedder = nn.Sequential(nn.Linear(in_channels + max_freqs**2, hidden_size_input, bias=True))
        # (patch_size, device, dtype) -> DCT table; a plain dict, not part of the state dict.
        self._pos_cache: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}

    def fetch_pos(self, patch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Cached ``dct_features`` for this patch size, device and dtype."""
        key = (patch_size, str(device), dtype)
        table = self._pos_cache.get(key)
        if table is None:
            table = dct_features(patch_size, self.max_freqs, device, dtype)
            self._pos_cache[key] = table
        return table

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        n, p2, _ = inputs.shape
        patch_size = int(round(p2**0.5))
        if patch_size * patch_size != p2:
            raise ValueError(f"NerfEmbedder expects a square number of pixels per patch, got {p2}")
        dct = self.fetch_pos(patch_size, inputs.device, inputs.dtype).expand(n, -1, -1)
        return self.embedder(torch.cat([inputs, dct], dim=-1))


class NerfFinalLayer(nn.Module):
    """x (..., hidden_size) -> RMSNorm -> Linear -> (..., out_channels)."""

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden_size, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))
