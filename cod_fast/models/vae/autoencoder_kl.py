"""SD-VAE (diffusers ``AutoencoderKL``) in plain PyTorch, with diffusers' state-dict keys.

Covers the configurations used by Stable Diffusion VAEs (``stabilityai/sd-vae-ft-ema``):
``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` blocks, GroupNorm + SiLU, one single-head attention
in each mid block. Other diffusers block types (e.g. ``AttnDownEncoderBlock2D``, used by no SD
VAE) raise ``NotImplementedError`` naming the type (documented unsupported case, tested). Keys
match diffusers exactly, e.g. ``encoder.down_blocks.0.resnets.0.norm1.weight``,
``encoder.down_blocks.0.downsamplers.0.conv.weight``, ``decoder.mid_block.attentions.0.to_q.weight``,
``decoder.up_blocks.0.upsamplers.0.conv.weight``, ``quant_conv.weight``, ``post_quant_conv.weight``.

Geometry for ``n = len(block_out_channels)``: images (B, in_channels, H, W) map to latents
(B, latent_channels, H / 2**(n-1), W / 2**(n-1)) (4 x 64 x 64 for 512 x 512 with the SD config).
Images are in [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _activation(name: str) -> nn.Module:
    acts = {"silu": nn.SiLU, "swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "mish": nn.Mish}
    if name not in acts:
        raise ValueError(f"unsupported act_fn {name!r}; supported: {sorted(acts)}")
    return acts[name]()


class ResnetBlock2D(nn.Module):
    """(GN, act, conv3x3) x 2 plus a 1x1 ``conv_shortcut`` when channels change; no time embedding."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float, act_fn: str) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nonlinearity = _activation(act_fn)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """Single-head spatial self-attention of the VAE mid blocks, diffusers' parameter names.

    (B, C, H, W) -> (B, C, H, W): GroupNorm, Linear q/k/v over the H*W tokens, softmax attention
    scaled by C**-0.5, ``to_out.0`` Linear, residual add.
    """

    def __init__(self, channels: int, groups: int, eps: float) -> None:
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps, affine=True)
        self.to_q = nn.Linear(channels, channels, bias=True)
        self.to_k = nn.Linear(channels, channels, bias=True)
        self.to_v = nn.Linear(channels, channels, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels, bias=True), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        q = self.to_q(tokens).unsqueeze(1)  # (B, 1 head, HW, C)
        k = self.to_k(tokens).unsqueeze(1)
        v = self.to_v(tokens).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        out = self.to_out[1](self.to_out[0](out))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample2D(nn.Module):
    """Zero-pad right/bottom by one, then a stride-2 3x3 conv (diffusers ``padding=0`` variant)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample2D(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    """``num_layers`` ResnetBlock2D (first one changes channels) + optional ``downsamplers.0``."""

    def __init__(self, in_ch: int, out_ch: int, num_layers: int, add_downsample: bool, groups: int, act_fn: str) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, groups, 1e-6, act_fn) for i in range(num_layers)]
        )
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch)]) if add_downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Module):
    """``num_layers`` ResnetBlock2D + optional ``upsamplers.0``."""

    def __init__(self, in_ch: int, out_ch: int, num_layers: int, add_upsample: bool, groups: int, act_fn: str) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if i == 0 else out_ch, out_ch, groups, 1e-6, act_fn) for i in range(num_layers)]
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)]) if add_upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2D(nn.Module):
    """ResnetBlock2D, (Attention, ResnetBlock2D) at constant width; attention optional."""

    def __init__(self, channels: int, groups: int, act_fn: str, add_attention: bool) -> None:
        super().__init__()
        self.add_attention = add_attention
        self.attentions = nn.ModuleList([Attention(channels, groups, 1e-6)]) if add_attention else nn.ModuleList()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups, 1e-6, act_fn) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if self.add_attention:
            x = self.attentions[0](x)
        return self.resnets[1](x)


def _check_block_types(types: Sequence[str], expected: str, what: str) -> None:
    for t in types:
        if t != expected:
            raise NotImplementedError(f"{what} type {t!r} is not supported (only {expected!r}, as in SD VAEs)")


class Encoder(nn.Module):
    """Image (B, in, H, W) -> moments (B, 2*latent, H/2**(n-1), W/2**(n-1)) before ``quant_conv``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        down_block_types: Sequence[str],
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        act_fn: str,
        mid_block_add_attention: bool,
    ) -> None:
        super().__init__()
        _check_block_types(down_block_types, "DownEncoderBlock2D", "down block")
        if len(down_block_types) != len(block_out_channels):
            raise ValueError("down_block_types and block_out_channels must have the same length")
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, stride=1, padding=1)
        self.down_blocks = nn.ModuleList()
        prev = block_out_channels[0]
        for i, ch in enumerate(block_out_channels):
            last = i == len(block_out_channels) - 1
            self.down_blocks.append(DownEncoderBlock2D(prev, ch, layers_per_block, not last, norm_num_groups, act_fn))
            prev = ch
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], norm_num_groups, act_fn, mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.conv_act = _activation(act_fn)
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """Latent (B, latent, h, w) (after ``post_quant_conv``) -> image (B, out, h*2**(n-1), w*2**(n-1))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        up_block_types: Sequence[str],
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        act_fn: str,
        mid_block_add_attention: bool,
    ) -> None:
        super().__init__()
        _check_block_types(up_block_types, "UpDecoderBlock2D", "up block")
        if len(up_block_types) != len(block_out_channels):
            raise ValueError("up_block_types and block_out_channels must have the same length")
        rev = list(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(in_channels, rev[0], kernel_size=3, stride=1, padding=1)
        # Registered before mid_block, as in diffusers, so that state_dict() lists keys in its order.
        self.up_blocks = nn.ModuleList()
        self.mid_block = UNetMidBlock2D(rev[0], norm_num_groups, act_fn, mid_block_add_attention)
        prev = rev[0]
        for i, ch in enumerate(rev):
            last = i == len(rev) - 1
            self.up_blocks.append(UpDecoderBlock2D(prev, ch, layers_per_block + 1, not last, norm_num_groups, act_fn))
            prev = ch
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-6)
        self.conv_act = _activation(act_fn)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


@dataclass
class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) from moments (B, 2*latent, h, w); logvar clamped to [-30, 20]."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return cls(mean, torch.clamp(logvar, -30.0, 20.0))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * eps, eps ~ N(0, I) drawn with ``generator`` on the mean's device."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean


class AutoencoderKL(nn.Module):
    """diffusers ``AutoencoderKL``; takes diffusers' config.json entries as keyword arguments.

    ``encode(x)`` -> :class:`DiagonalGaussian` (``.mean``, ``.sample(generator)``);
    ``decode(z)`` -> image. Neither applies ``scaling_factor`` (see :mod:`.latent` for that).
    Unknown config keys (``_class_name``, ``_diffusers_version``, ``sample_size``, ...) are ignored.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: Sequence[str] = ("DownEncoderBlock2D",),
        up_block_types: Sequence[str] = ("UpDecoderBlock2D",),
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        **unused_config: object,
    ) -> None:
        super().__init__()
        for ch in block_out_channels:
            if ch % norm_num_groups:
                raise ValueError(f"block_out_channels {list(block_out_channels)} must be multiples of norm_num_groups {norm_num_groups}")
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = shift_factor
        self.encoder = Encoder(in_channels, latent_channels, down_block_types, block_out_channels,
                               layers_per_block, norm_num_groups, act_fn, mid_block_add_attention)
        self.decoder = Decoder(latent_channels, out_channels, up_block_types, block_out_channels,
                               layers_per_block, norm_num_groups, act_fn, mid_block_add_attention)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x (B, in, H, W) in [-1, 1] -> posterior over (B, latent, H/f, W/f), f = 2**(n-1)."""
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent, h, w) (unscaled) -> image (B, out, h*f, w*f), nominally [-1, 1] (not clamped)."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample_posterior: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction: decode(posterior mean, or a sample with ``sample_posterior``)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z)
