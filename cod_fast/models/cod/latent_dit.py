"""Latent-space CoD denoiser ``DDT`` (GenCodec ``CoD/cod/models/latent_dit.py``).

Works on SD-VAE latents (``(B, 4, H/8, W/8)``, patch 2, so one token per 16x16 image pixels, the
codec map's grid). A decoupled DiT: ``num_cond_blocks`` "encoder" blocks turn
``s_embedder([noisy patch, c token])`` into per-token conditions ``s = silu(t_emb + s)``
(modulated by ``silu(t_emb)``), then ``num_blocks - num_cond_blocks`` "decoder" blocks process
``x_embedder([noisy patch, c token])`` modulated per token by ``s``; ``final_layer`` (adaLN from
``s``) gives the velocity patches.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .condition_codec import Codec, CodecPassthrough
from .layers import Embed, FlattenDiTBlock, TimestepEmbedder, modulate, precompute_freqs_cis_2d


class FinalLayer(nn.Module):
    """LayerNorm (no affine) + adaLN shift/scale from ``c`` + Linear.

    ``forward(x (B, N, hidden), c (B, N or 1, hidden)) -> (B, N, out_channels)``.
    """

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DDT(CodecPassthrough, nn.Module):
    """Latent CoD denoiser; constructor arguments are the official YAML ``init_args``.

    Official latent configs: ``in_channels=4, patch_size=2, num_groups=16, hidden_size=1152,
    num_blocks=28, num_cond_blocks=22`` with the codec's ``ds``, ``codebook_bits``, ``up2x``.
    ``learn_sigma``, ``deep_supervision``, ``weight_path`` and ``load_ema`` are stored as the
    official module stores them and have no effect on inference; extra arguments are ignored.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_groups: int = 12,
        hidden_size: int = 1152,
        num_blocks: int = 18,
        num_cond_blocks: int = 4,
        patch_size: int = 2,
        learn_sigma: bool = True,
        deep_supervision: int = 0,
        weight_path: str | None = None,
        load_ema: bool = False,
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
        self.deep_supervision = deep_supervision
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.hidden_size = hidden_size
        self.num_groups = num_groups
        self.num_blocks = num_blocks
        self.num_cond_blocks = num_cond_blocks
        self.patch_size = patch_size
        self.x_embedder = Embed(in_channels * patch_size ** 2 + hidden_size, hidden_size, bias=True)
        self.s_embedder = Embed(in_channels * patch_size ** 2 + hidden_size, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.final_layer = FinalLayer(hidden_size, in_channels * patch_size ** 2)
        self.weight_path = weight_path
        self.load_ema = load_ema
        self.blocks = nn.ModuleList([FlattenDiTBlock(hidden_size, num_groups) for _ in range(num_blocks)])
        self.initialize_weights()
        self.precompute_pos: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def initialize_weights(self) -> None:
        """Official init: xavier embedders, N(0, 0.02) timestep MLP, zero final layer and its adaLN."""
        for embed in (self.x_embedder, self.s_embedder):
            nn.init.xavier_uniform_(embed.proj.weight)
            nn.init.constant_(embed.proj.bias, 0)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
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
        """Predict the output for noisy latents ``x`` at times ``t``.

        Args:
            x: ``(B, in_channels, h, w)`` latents, ``h``, ``w`` multiples of ``patch_size``.
            t: ``(B,)`` times in [0, 1] (0 = noise, 1 = data).
            y: ``(B, 3, 8h, 8w)`` images in [0, 1] for the codec; used only when ``cond`` is None.
            cond: codec maps ``(B, hidden_size, h/patch, w/patch)``, or None to compute them from ``y``.
            s: optional precomputed encoder features ``(B, N, hidden_size)``.
            mask: optional attention mask for the encoder blocks (the decoder blocks use none).
            return_codec_res: also return the codec's ``res`` dict (only when ``cond`` is None).

        Returns:
            ``(out (B, in_channels, h, w), cond)`` or ``(out, cond, codec_res)``.
        """
        b, _, height, width = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"latent size {height}x{width} is not a multiple of patch_size {p}")
        gh, gw = height // p, width // p
        pos = self.fetch_pos(gh, gw, x.device)
        x = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p)
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
        x = self.x_embedder(torch.cat([x, c1], dim=-1))
        for i in range(self.num_cond_blocks, self.num_blocks):
            x = self.blocks[i](x, s, pos, None)
        x = self.final_layer(x, s)  # (B, N, C*p*p)
        out = F.fold(x.transpose(1, 2).contiguous(), (height, width), kernel_size=p, stride=p)
        if return_codec_res:
            return out, cond, codec_res
        return out, cond
