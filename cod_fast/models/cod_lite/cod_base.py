"""``CoDBase``: the condition-codec holder that CoD-Lite's denoisers derive from.

Mirror of ``CoD_Lite/cod/models/cod_base.py``: the codec lives at ``y_embedder`` (so its keys are
``y_embedder.encoder.*``, ``y_embedder.bottleneck.embedding.weight``, ``y_embedder.decoder.*``).
"""
from __future__ import annotations

import torch
from torch import nn

from .condition_codec import Codec


class CoDBase(nn.Module):
    """Holds ``y_embedder = Codec(ch=hidden_size, codebook_bits, ds, up2x, light)``."""

    def __init__(
        self,
        hidden_size: int = 1152,
        ds: int = 32,
        codebook_bits: int = 4,
        up2x: bool = False,
        light: bool = False,
        *args,
        **kwargs,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.y_embedder = Codec(ch=hidden_size, codebook_bits=codebook_bits, ds=ds, up2x=up2x, light=light)

    def calculate_uncond(self, uncond: torch.Tensor) -> None:
        """Run the unconditional image (all -1) through the codec once and keep its condition map."""
        self.y_embedder.calculate_uncond(uncond)

    def calculate_indices_bytes(self, H: int, W: int) -> int:
        """Bytes of the packed VQ indices for an H x W image."""
        return self.y_embedder.calculate_indices_bytes(H, W)

    def compress(self, x: torch.Tensor) -> bytes:
        """x (1, 3, H, W) in [0, 1] -> packed indices (official bit layout)."""
        return self.y_embedder.compress(x)

    def decompress(
        self,
        bitstream: bytes,
        H: int,
        W: int,
        device: torch.device | str,
        uncond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed indices -> condition map (1, hidden_size, h, w); with ``uncond`` the CFG batch of 2
        (unconditional map first), as the official code does."""
        x_hat = self.y_embedder.decompress(bitstream, H, W, device)
        if uncond is not None:
            self.calculate_uncond(uncond)
            x_hat = torch.cat([self.y_embedder.pre_calculated_uncond, x_hat], dim=0)
        return x_hat
