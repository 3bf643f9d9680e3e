"""Pixel-space CoD denoiser ``PixNerDiT`` (GenCodec ``CoD/cod/models/pixel_dit.py``).

A DiT over ``patch_size`` x ``patch_size`` patches, conditioned on the codec map ``c`` (one
token per patch), followed by a per-patch neural field (NerfBlocks) that renders the patch pixels:

1. ``s = s_embedder([noisy patch, c token])``, then ``num_cond_blocks`` :class:`FlattenDiTBlock`
   modulated by ``silu(t_emb)`` (one modulation per image), then ``s = silu(t_emb + s)``;
2. per patch, ``patch_size**2`` pixel queries ``[noisy pixel, y_embedder_x(c)]`` + DCT position
   features go through ``x_embedder``, then ``num_blocks - num_cond_blocks`` :class:`NerfBlock`
   whose 2-layer MLP weights are generated from ``s`` (a hypernetwork per token);
3. ``final_layer`` (RMSNorm + Linear) gives the ``in_channels`` outputs per pixel, folded back
   into ``(B, in_channels, H, W)``: the velocity ``v = x - eps`` for the v-pred checkpoints.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .condition_codec import Codec, CodecPassthrough
from .layers import (
    Embed,
    FlattenDiTBlock,
    RMSNorm,
    TimestepEmbedder,
    precompute_freqs_cis_2d,
)


class NerfEmbedder(nn.Module):
    """Embeds the pixel queries of a patch together with 2D DCT position features.

    ``(M, P*P, in_channels) -> (M, P*P, hidden_size_input)`` where the ``max_freqs**2`` DCT
    features ``cos(pi x fx) cos(pi y fy) / (1 + fx fy)`` (``fx, fy`` in
    ``linspace(0, max_freqs, max_freqs)``, pixel positions in ``linspace(0, 1, P)``) are appended
    to each query before ``embedder`` (one Linear).
    """

    def __init__(self, in_channels: int, hidden_size_input: int, max_freqs: int) -> None:
        super().__init__()
        self.max_freqs = max_freqs
        self.hidden_size_input = hidden_size_input
        self.embedder = nn.Sequential(nn.Linear(in_channels + max_freqs ** 2, hidden_size_input, bias=True))
        self._dct_cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def fetch_pos(self, patch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """DCT features ``(1, patch_size**2, max_freqs**2)``, cached per (size, device, dtype)."""
        key = (patch_size, torch.device(device), dtype)
        if key not in self._dct_cache:
            pos = torch.linspace(0, 1, patch_size, device=device, dtype=dtype)
            pos_y, pos_x = torch.meshgrid(pos, pos, indexing="ij")
            pos_x = pos_x.reshape(-1, 1, 1)
            pos_y = pos_y.reshape(-1, 1, 1)
            freqs = torch.linspace(0, self.max_freqs, self.max_freqs, dtype=dtype, device=device)
            freqs_x = freqs[None, :, None]
            freqs_y = freqs[None, None, :]
            coeffs = (1 + freqs_x * freqs_y) ** -1
            dct_x = torch.cos(pos_x * freqs_x * torch.pi)
            dct_y = torch.cos(pos_y * freqs_y * torch.pi)
            self._dct_cache[key] = (dct_x * dct_y * coeffs).view(1, -1, self.max_freqs ** 2)
        return self._dct_cache[key]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        m, p2, _ = inputs.shape
        dct = self.fetch_pos(int(p2 ** 0.5), inputs.device, inputs.dtype).repeat(m, 1, 1)
        return self.embedder(torch.cat([inputs, dct], dim=-1))


class NerfBlock(nn.Module):
    """Residual per-token MLP whose weights are generated from the token's DiT feature.

    ``forward(x (M, P*P, hx), s (M, hidden)) -> (M, P*P, hx)``: ``param_generator1(s)`` gives
    ``fc1 (hx, hx*mlp_ratio)`` and ``fc2 (hx*mlp_ratio, hx)``, each L2-normalised along its input
    dimension; ``x + silu(norm(x) @ fc1) @ fc2``.
    """

    def __init__(self, hidden_size_s: int, hidden_size_x: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.param_generator1 = nn.Sequential(
            nn.Linear(hidden_size_s, 2 * hidden_size_x ** 2 * mlp_ratio, bias=True)
        )
        self.norm = RMSNorm(hidden_size_x, eps=1e-6)
        self.mlp_ratio = mlp_ratio

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        m, _, hx = x.shape
        fc1, fc2 = self.param_generator1(s).chunk(2, dim=-1)
        fc1 = F.normalize(fc1.view(m, hx, hx * self.mlp_ratio), dim=-2)
        fc2 = F.normalize(fc2.view(m, hx * self.mlp_ratio, hx), dim=-2)
        h = torch.bmm(self.norm(x), fc1)
        return torch.bmm(F.silu(h), fc2) + x


class NerfFinalLayer(nn.Module):
    """RMSNorm + Linear: ``(M, P*P, hidden_size) -> (M, P*P, out_channels)``."""

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden_size, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


class PixNerDiT(CodecPassthrough, nn.Module):
    """Pixel CoD denoiser; constructor arguments are the official YAML ``init_args``.

    Official pixel configs: ``in_channels=3, patch_size=16, num_groups=16, hidden_size=1152,
    hidden_size_x=64, num_blocks=30, num_cond_blocks=26, nerf_mlpratio=2`` with the codec's
    ``ds``, ``codebook_bits``, ``up2x`` (see :mod:`.configs`). ``num_cond_blocks`` counts the DiT
    blocks; blocks ``num_cond_blocks .. num_blocks-1`` are NerfBlocks. ``light`` selects the
    lighter codec decoder. Extra positional/keyword arguments are accepted and ignored, as by the
    official constructor (configs may carry training-only keys).
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_groups: int = 12,
        hidden_size: int = 1152,
        hidden_size_x: int = 64,
        nerf_mlpratio: int = 4,
        num_blocks: int = 18,
        num_cond_blocks: int = 4,
        patch_size: int = 2,
        ds: int = 32,
        codebook_bits: int = 4,
        up2x: bool = False,
        light: bool = False,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not 0 <= num_cond_blocks <= num_blocks:
            raise ValueError(f"need 0 <= num_cond_blocks <= num_blocks, got {num_cond_blocks}, {num_blocks}")
        self.y_embedder = Codec(ch=hidden_size, codebook_bits=codebook_bits, ds=ds, up2x=up2x, light=light)
        self.y_embedder.decoder.initialize_weights()
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.hidden_size = hidden_size
        self.num_groups = num_groups
        self.num_blocks = num_blocks
        self.num_cond_blocks = num_cond_blocks
        self.patch_size = patch_size
        self.x_embedder = NerfEmbedder(in_channels + hidden_size_x, hidden_size_x, max_freqs=8)
        self.s_embedder = Embed(in_channels * patch_size ** 2 + hidden_size, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder_x = nn.Linear(hidden_size, hidden_size_x * patch_size ** 2)
        self.final_layer = NerfFinalLayer(hidden_size_x, self.out_channels)
        self.blocks = nn.ModuleList(
            [FlattenDiTBlock(hidden_size, num_groups) for _ in range(num_cond_blocks)]
            + [NerfBlock(hidden_size, hidden_size_x, nerf_mlpratio) for _ in range(num_cond_blocks, num_blocks)]
        )
        self.initialize_weights()
        self.precompute_pos: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def initialize_weights(self) -> None:
        """Official init: xavier ``s_embedder``, N(0, 0.02) timestep MLP, zero ``final_layer.linear``."""
        nn.init.xavier_uniform_(self.s_embedder.proj.weight)
        nn.init.constant_(self.s_embedder.proj.bias, 0)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def fetch_pos(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """RoPE factors for a ``height x width`` token grid: complex ``(height*width, head_dim/2)``."""
        key = (height, width, torch.device(device))
        if key not in self.precompute_pos:
            head_dim = self.hidden_size // self.num_groups
            self.precompute_pos[key] = precompute_freqs_cis_2d(head_dim, height, width).to(device)
        return self.precompute_pos[key]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        cond: torch.Tensor | None,
        s: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_codec_res: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Predict the output for noisy images ``x`` at times ``t``.

        Args:
            x: ``(B, in_channels, H, W)``, ``H`` and ``W`` multiples of ``patch_size``.
            t: ``(B,)`` times in [0, 1] (0 = noise, 1 = data).
            y: ``(B, 3, H, W)`` images in [0, 1] for the codec; used only when ``cond`` is None.
            cond: codec maps ``(B, hidden_size, H/patch, W/patch)``, or None to compute them from ``y``.
            s: optional precomputed DiT features ``(B, N, hidden_size)`` (skips the DiT blocks).
            mask: optional attention mask for the DiT blocks.
            return_codec_res: also return the codec's ``res`` dict (only when ``cond`` is None).

        Returns:
            ``(out (B, in_channels, H, W), cond)`` or ``(out, cond, codec_res)``.
        """
        b, _, height, width = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} is not a multiple of patch_size {p}")
        gh, gw = height // p, width // p
        pos = self.fetch_pos(gh, gw, x.device)
        x = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p), channel-major
        t = self.t_embedder(t.view(-1)).view(b, -1, self.hidden_size)  # (B, 1, hidden)
        codec_res = None
        if cond is None:
            if y is None:
                raise ValueError("either y or cond must be given")
            cond, codec_res = self.y_embedder(y)
        if cond.shape[0] != b or tuple(cond.shape[-2:]) != (gh, gw):
            raise ValueError(f"cond of shape {tuple(cond.shape)} does not fit a {gh}x{gw} token grid, batch {b}")
        c1 = cond.flatten(2, 3).transpose(1, 2)  # (B, N, hidden)
        if s is None:
            c2 = F.silu(t)
            s = self.s_embedder(torch.cat([x, c1], dim=-1))
            for i in range(self.num_cond_blocks):
                s = self.blocks[i](s, c2, pos, mask)
            s = F.silu(t + s)
        _, length, _ = s.shape
        # Per-pixel queries of each patch: [noisy pixel (C), codec feature (hidden_size_x)].
        x = torch.cat([x, self.y_embedder_x(c1)], dim=-1)  # (B, N, (C + hx)*p*p)
        x = x.reshape(b * length, -1, p * p).transpose(1, 2)  # (B*N, p*p, C + hx)
        s = s.reshape(b * length, self.hidden_size)
        x = self.x_embedder(x)
        for i in range(self.num_cond_blocks, self.num_blocks):
            x = self.blocks[i](x, s)
        x = self.final_layer(x)  # (B*N, p*p, C)
        x = x.transpose(1, 2).reshape(b, length, -1)  # (B, N, C*p*p)
        out = F.fold(x.transpose(1, 2).contiguous(), (height, width), kernel_size=p, stride=p)
        if return_codec_res:
            return out, cond, codec_res
        return out, cond
