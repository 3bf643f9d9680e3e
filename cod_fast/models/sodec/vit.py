"""SODEC's fidelity guidance: a frozen ViT on the fidelity image plus a trainable projection.

SODEC's fidelity decoder turns the latent ``y`` into a coarse image ``x_f``; a frozen ViT encodes
it and a trainable projection maps the ViT tokens to the UNet's cross-attention width, in place
of the text embeddings SD was trained with. The paper does not name the ViT, so this is a plain
ViT with timm's ``VisionTransformer`` parameter names (class token, learned absolute position
embedding that includes the class position, pre-norm blocks, final LayerNorm, no classifier
head): ``cls_token`` [1, 1, D], ``pos_embed`` [1, 1+N, D], ``patch_embed.proj`` (conv p x p,
stride p), ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv`` (Linear D -> 3D with bias, channel order
(q|k|v) x heads x head_dim), ``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``,
``blocks.{i}.mlp.fc2``, ``norm``; LayerNorm eps 1e-6, exact GELU. A timm ``vit_base_patch16_224``
state dict without ``head.*`` loads into ``FidelityViT(VIT_B16)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configs import ProjectionConfig, ViTConfig


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> D: [B, C, H, W] -> [B, (H/p)*(W/p), D], raster order."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.width, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # qkv channels are laid out (3, heads, head_dim): q for all heads, then k, then v.
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = ViTAttention(cfg.width, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = Mlp(cfg.width, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FidelityViT(nn.Module):
    """ViT image encoder: images [B, C, H, W] in [-1, 1] -> tokens [B, 1 + N, width].

    Images are mapped to [0, 1], resized to ``image_size`` x ``image_size`` when their size
    differs (bicubic, antialiased), normalised with the config's mean/std, then encoded. Token 0
    is the class token; tokens 1..N are the patches in raster order. All tokens pass the final
    LayerNorm.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ViTConfig):
            raise TypeError(f"cfg must be a ViTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + cfg.num_patches, cfg.width) * 0.02)
        self.blocks = nn.ModuleList([ViTBlock(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.register_buffer("pixel_mean", torch.tensor(cfg.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.std).view(1, -1, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> normalised [B, C, image_size, image_size] in the weights' dtype."""
        cfg = self.cfg
        if images.dim() != 4 or images.shape[1] != cfg.in_channels or min(images.shape[2:]) < 1:
            raise ValueError(f"images must be [B, {cfg.in_channels}, H, W] with H, W >= 1, got {list(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor in [-1, 1], got {images.dtype}")
        x = (images.to(self.pos_embed.dtype) + 1) * 0.5
        if tuple(x.shape[2:]) != (cfg.image_size, cfg.image_size):
            size = (cfg.image_size, cfg.image_size)
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        return (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.preprocess(images))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class FidelityProjection(nn.Module):
    """Trainable map of ViT tokens to UNet conditioning tokens: [B, L, in_dim] -> [B, L, out_dim].

    ``fc1`` -> GELU -> ``fc2`` when ``hidden_dim`` > 0, otherwise ``fc1`` alone (in -> out).
    """

    def __init__(self, cfg: ProjectionConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ProjectionConfig):
            raise TypeError(f"cfg must be a ProjectionConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        if cfg.hidden_dim > 0:
            self.fc1 = nn.Linear(cfg.in_dim, cfg.hidden_dim)
            self.fc2: nn.Linear | None = nn.Linear(cfg.hidden_dim, cfg.out_dim)
        else:
            self.fc1 = nn.Linear(cfg.in_dim, cfg.out_dim)
            self.fc2 = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 3 or tokens.shape[2] != self.cfg.in_dim:
            raise ValueError(f"tokens must be [B, L, {self.cfg.in_dim}], got {list(tokens.shape)}")
        x = self.fc1(tokens)
        if self.fc2 is not None:
            x = self.fc2(F.gelu(x))
        return x


class FidelityGuidance(nn.Module):
    """Frozen ``FidelityViT`` (``vit``) + trainable ``FidelityProjection`` (``projection``).

    ``forward(x_f)``: fidelity image [B, C, H, W] in [-1, 1] -> UNet ``encoder_hidden_states``
    [B, 1 + N, out_dim]. The ViT's parameters have ``requires_grad=False`` and the ViT stays in
    eval mode even when the module is put in training mode.
    """

    def __init__(self, vit_cfg: ViTConfig, proj_cfg: ProjectionConfig) -> None:
        super().__init__()
        if proj_cfg.in_dim != vit_cfg.width:
            raise ValueError(f"projection in_dim {proj_cfg.in_dim} != ViT width {vit_cfg.width}")
        self.vit = FidelityViT(vit_cfg)
        self.vit.requires_grad_(False)
        self.projection = FidelityProjection(proj_cfg)

    def train(self, mode: bool = True) -> "FidelityGuidance":
        super().train(mode)
        self.vit.eval()  # frozen backbone: no train-mode behaviour
        return self

    def forward(self, x_f: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tokens = self.vit(x_f)
        return self.projection(tokens)
