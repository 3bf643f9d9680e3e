"""Vector quantizer of the CoD condition codec (GenCodec ``cod/models/utils/vq.py``).

A codebook of ``n_e`` vectors of size ``e_dim`` (``embedding``); each latent vector goes to its
nearest codebook entry in L2 distance. No entropy model: the indices are sent at a fixed
``log2(n_e)`` bits each (see :mod:`.packing`).
"""
from __future__ import annotations

import torch
from torch import nn


class VectorQuantizer(nn.Module):
    """Nearest-neighbour VQ with the official straight-through output and commitment loss.

    ``beta`` weights the commitment term of the training loss; it does not affect inference.
    """

    def __init__(self, n_e: int, e_dim: int, beta: float) -> None:
        super().__init__()
        self.n_e = n_e
        self.e_dim = e_dim
        self.beta = beta
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest entries, ``(M, e_dim) -> (M,)`` int64.

        The distance is expanded as ``|z|^2 + |e|^2 - 2 z.e`` exactly as officially, so that
        near-ties resolve the same way (``argmin`` takes the first minimum).
        """
        weight = self.embedding.weight
        d = (
            torch.sum(z_flat ** 2, dim=1, keepdim=True)
            + torch.sum(weight ** 2, dim=1)
            - 2 * torch.matmul(z_flat, weight.t())
        )
        return torch.argmin(d, dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize ``z`` of shape ``(B, e_dim, h, w)``.

        Returns ``(z_q (B, e_dim, h, w), loss (scalar), indices (B*h*w,) int64 in raster order
        per image)``. ``z_q`` is the straight-through value ``z + (e - z)``, which equals the
        codebook entry up to one rounding, as in the official code.
        """
        z = z.permute(0, 2, 3, 1).contiguous()  # (B, h, w, C)
        z_flat = z.view(-1, self.e_dim)
        indices = self.nearest(z_flat)
        z_q = self.embedding(indices).view(z.shape)
        loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), loss, indices

    def get_codebook_entry(
        self, indices: torch.Tensor, shape: tuple[int, int] | None
    ) -> torch.Tensor:
        """Codebook vectors for ``indices``.

        With ``shape=(h, w)``: indices of ``B*h*w`` entries (raster order per image) give
        ``(B, e_dim, h, w)`` (the official code supports ``B=1`` only). With ``shape=None``:
        ``indices.shape + (e_dim,)``.
        """
        z_q = self.embedding(indices)
        if shape is not None:
            z_q = z_q.view(-1, shape[0], shape[1], self.e_dim).permute(0, 3, 1, 2).contiguous()
        return z_q
