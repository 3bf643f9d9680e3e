"""Configurations of SODEC's decoder networks: the SD-style UNet, the fidelity ViT, the projection.

``UNetConfig`` reads and writes diffusers' ``UNet2DConditionModel`` ``config.json`` (same field
names, same meaning, including diffusers' historical misnaming: ``attention_head_dim`` is the
NUMBER of heads per block, the head width is ``channels // attention_head_dim``). Only the
SD 1.x / 2.x family is supported; any field that would change the architecture away from it
raises ``ValueError`` naming the field.

Presets: ``SD21_BASE_UNET`` (stabilityai/stable-diffusion-2-1-base, 865.9 M parameters),
``TINY_UNET`` (tests), ``VIT_B16`` (ViT-B/16 at 224 px, timm's ``vit_base_patch16_224`` layout),
``TINY_VIT`` (tests).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn",)

# Upper bounds that keep a hostile or corrupt config.json from asking for a giant allocation.
_MAX_CHANNELS = 8192
_MAX_BLOCKS = 8
_MAX_LAYERS = 16

# diffusers fields that this mirror accepts only at their default value (the SD 1.x/2.x
# architecture). A config that sets any of them to something else describes another network.
_FIXED_DEFAULTS: dict[str, Any] = {
    "center_input_sample": False,
    "only_cross_attention": False,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "dropout": 0.0,
    "act_fn": "silu",
    "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "num_attention_heads": None,
    "dual_cross_attention": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "cross_attention_norm": None,
    "addition_embed_type_num_heads": 64,
}


def _as_tuple(value: Any, n: int, name: str) -> tuple[int, ...]:
    """An int broadcast to n entries, or a list/tuple of exactly n ints."""
    if isinstance(value, bool):
        raise ValueError(f"UNet config field {name} must be an int or a list of ints, got {value!r}")
    if isinstance(value, int):
        return (value,) * n
    if isinstance(value, (list, tuple)) and len(value) == n and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise ValueError(f"UNet config field {name} must be an int or a list of {n} ints, got {value!r}")


@dataclass(frozen=True)
class UNetConfig:
    """diffusers ``UNet2DConditionModel`` configuration restricted to the SD 1.x / 2.x family.

    ``attention_head_dim[i]`` is the number of heads of block i (diffusers' naming); the head
    width is ``block_out_channels[i] // attention_head_dim[i]`` (64 for SD 2.1-base).
    ``upcast_attention`` is accepted and has no effect, as with diffusers' default SDPA processor.
    """

    sample_size: int | None = 64
    in_channels: int = 4
    out_channels: int = 4
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    )
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    )
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)
    downsample_padding: int = 1
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 1024
    attention_head_dim: tuple[int, ...] = (5, 10, 20, 20)
    use_linear_projection: bool = True
    upcast_attention: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.block_out_channels, (list, tuple)):
            raise ValueError(f"block_out_channels must be a list of ints, got {self.block_out_channels!r}")
        n = len(self.block_out_channels)
        if not 1 <= n <= _MAX_BLOCKS:
            raise ValueError(f"block_out_channels must have 1..{_MAX_BLOCKS} entries, got {n}")
        # Normalise int-or-list fields to tuples (frozen dataclass: go through object.__setattr__).
        channels = _as_tuple(list(self.block_out_channels), n, "block_out_channels")
        object.__setattr__(self, "block_out_channels", channels)
        for name in ("down_block_types", "up_block_types"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"{name} must be a list of block type names")
        object.__setattr__(self, "layers_per_block", _as_tuple(self.layers_per_block, n, "layers_per_block"))
        object.__setattr__(self, "attention_head_dim", _as_tuple(self.attention_head_dim, n, "attention_head_dim"))
        object.__setattr__(self, "down_block_types", tuple(self.down_block_types))
        object.__setattr__(self, "up_block_types", tuple(self.up_block_types))
        for name in ("in_channels", "out_channels", "cross_attention_dim", "norm_num_groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX_CHANNELS:
                raise ValueError(f"UNet config field {name} must be an int in [1, {_MAX_CHANNELS}], got {v!r}")
        for i, (c, heads, layers) in enumerate(
            zip(self.block_out_channels, self.attention_head_dim, self.layers_per_block)
        ):
            if not 1 <= c <= _MAX_CHANNELS:
                raise ValueError(f"block_out_channels[{i}] = {c} is outside [1, {_MAX_CHANNELS}]")
            if c % self.norm_num_groups != 0:
                raise ValueError(f"block_out_channels[{i}] = {c} is not divisible by norm_num_groups")
            if heads < 1 or c % heads != 0:
                raise ValueError(f"block_out_channels[{i}] = {c} is not divisible by attention_head_dim {heads}")
            if not 1 <= layers <= _MAX_LAYERS:
                raise ValueError(f"layers_per_block[{i}] = {layers} is outside [1, {_MAX_LAYERS}]")
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError("down_block_types, up_block_types and block_out_channels must have equal lengths")
        for t in self.down_block_types:
            if t not in DOWN_BLOCK_TYPES:
                raise ValueError(f"unsupported down block type {t!r} (supported: {DOWN_BLOCK_TYPES})")
        for t in self.up_block_types:
            if t not in UP_BLOCK_TYPES:
                raise ValueError(f"unsupported up block type {t!r} (supported: {UP_BLOCK_TYPES})")
        if self.mid_block_type not in MID_BLOCK_TYPES:
            raise ValueError(f"unsupported mid block type {self.mid_block_type!r} (supported: {MID_BLOCK_TYPES})")
        if self.downsample_padding not in (0, 1):
            raise ValueError(f"downsample_padding must be 0 or 1, got {self.downsample_padding!r}")
        if not (isinstance(self.norm_eps, (int, float)) and 0 < self.norm_eps < 1):
            raise ValueError(f"norm_eps must be in (0, 1), got {self.norm_eps!r}")

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding MLP output: 4 x block_out_channels[0]."""
        return 4 * self.block_out_channels[0]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        """Build from a diffusers ``config.json`` dict.

        Keys starting with ``_`` (``_class_name``, ``_diffusers_version``...) are ignored; a known
        diffusers field at a non-default value, or an unknown field, raises ``ValueError``.
        """
        if not isinstance(d, dict):
            raise TypeError(f"UNet config must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key.startswith("_"):
                continue
            if key in names:
                kwargs[key] = value
            elif key in _FIXED_DEFAULTS:
                default = _FIXED_DEFAULTS[key]
                # diffusers writes some defaults as lists (e.g. only_cross_attention per block).
                same = value == default or (
                    isinstance(value, list) and len(value) > 0 and all(v == default for v in value)
                )
                if not same:
                    raise ValueError(
                        f"UNet config field {key}={value!r} is not supported (only {default!r}: SD 1.x/2.x UNets)"
                    )
            else:
                raise ValueError(f"unknown UNet config field {key!r}")
        if isinstance(kwargs.get("cross_attention_dim"), list):
            raise ValueError("a per-block cross_attention_dim is not supported")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "UNetConfig":
        """Read a diffusers ``config.json`` file."""
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """diffusers-compatible dict (lists instead of tuples) with ``_class_name``."""
        d: dict[str, Any] = {"_class_name": "UNet2DConditionModel"}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


SD21_BASE_UNET = UNetConfig()
"""stabilityai/stable-diffusion-2-1-base ``unet/config.json`` (epsilon prediction, 512 px)."""

TINY_UNET = UNetConfig(
    sample_size=16,
    block_out_channels=(32, 64),
    layers_per_block=(1, 1),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(4, 8),
    cross_attention_dim=32,
)
"""Two-level UNet for tests: head width 8 at both levels, cross-attention width 32."""


@dataclass(frozen=True)
class ViTConfig:
    """Plain ViT image encoder (timm ``VisionTransformer`` with a class token, no register tokens).

    Images are resized to ``image_size`` and normalised with ``mean``/``std`` (per channel, on
    images in [0, 1]) inside ``FidelityViT``; LayerNorm eps 1e-6, exact GELU, qkv with bias.
    """

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_channels", "width", "depth", "num_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX_CHANNELS:
                raise ValueError(f"ViT config field {name} must be an int in [1, {_MAX_CHANNELS}], got {v!r}")
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.num_heads != 0:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if not 0 < self.mlp_ratio <= 16:
            raise ValueError(f"mlp_ratio must be in (0, 16], got {self.mlp_ratio}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels or min(self.std) <= 0:
            raise ValueError("mean and std need one entry per input channel and std > 0")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)


VIT_B16 = ViTConfig()
"""ViT-B/16 at 224 px (86 M parameters), mean/std 0.5 as timm's augreg ``vit_base_patch16_224``."""

TINY_VIT = ViTConfig(image_size=32, patch_size=8, width=48, depth=2, num_heads=4)
"""ViT for tests: 16 patches of 8x8, width 48."""


@dataclass(frozen=True)
class ProjectionConfig:
    """Trainable projection from ViT tokens (width ``in_dim``) to UNet conditioning tokens.

    ``hidden_dim`` 0 means a single Linear; otherwise Linear -> GELU -> Linear.
    """

    in_dim: int = 768
    out_dim: int = 1024
    hidden_dim: int = 1024

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX_CHANNELS:
                raise ValueError(f"projection field {name} must be an int in [1, {_MAX_CHANNELS}], got {v!r}")
        if not isinstance(self.hidden_dim, int) or not 0 <= self.hidden_dim <= _MAX_CHANNELS:
            raise ValueError(f"projection hidden_dim must be an int in [0, {_MAX_CHANNELS}]")
