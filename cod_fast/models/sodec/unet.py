"""Stable Diffusion 1.x/2.x UNet in plain PyTorch, state-dict compatible with diffusers.

``UNet2DConditionModel`` has the module tree and parameter names of diffusers'
``UNet2DConditionModel`` for the SD 1.x/2.x family (``conv_in``, ``time_embedding.linear_1``,
``down_blocks.{i}.resnets.{j}``, ``down_blocks.{i}.attentions.{j}.transformer_blocks.0.attn1.to_q``,
``down_blocks.{i}.downsamplers.0.conv``, ``mid_block``, ``up_blocks.{i}.upsamplers.0.conv``,
``conv_norm_out``, ``conv_out``), so a diffusers checkpoint loads with ``strict=True`` and back.
SODEC runs it once, at t = 999, on the (transformed) hyperprior latent, conditioned on
fidelity-ViT tokens instead of text embeddings.

The maths follows diffusers exactly: sinusoidal timestep features (cos first when
``flip_sin_to_cos``), SiLU MLP; ResNet blocks GroupNorm -> SiLU -> conv3x3 -> + Linear(SiLU(temb))
-> GroupNorm -> SiLU -> conv3x3, 1x1 shortcut when widths differ; spatial transformers
GroupNorm(eps 1e-6) -> proj_in -> [LN -> self-attn, LN -> cross-attn, LN -> GEGLU FFN] ->
proj_out + residual; stride-2 conv down, nearest-2x + conv up. Dropout layers of the original
are omitted (inference only; they hold no parameters).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ...errors import ModelMismatchError
from .configs import UNetConfig


def timestep_features(
    timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0
) -> torch.Tensor:
    """Sinusoidal features of timesteps: [N] (any real dtype) -> [N, dim] float32.

    Frequencies ``exp(-ln(10000) * k / (dim/2 - freq_shift))`` for k < dim/2, computed in float32
    as diffusers does; output ``[cos, sin]`` when ``flip_sin_to_cos`` else ``[sin, cos]``, zero
    padded by one column when ``dim`` is odd.
    """
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = timesteps[:, None].float() * freqs[None, :]
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on the sinusoidal features: [N, c0] -> [N, 4*c0]."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    """Pre-norm residual block with an additive timestep bias: [B, cin, H, W] -> [B, cout, H, W]."""

    def __init__(self, cin: int, cout: int, temb_dim: int, groups: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # diffusers adds a 1x1 shortcut exactly when the width changes.
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """Multi-head attention, q from ``x`` [B, N, dim], k/v from ``context`` [B, L, ctx_dim] (or x).

    Projections without bias, output projection with bias (``to_out.0``); scale head_dim^-0.5.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * head_dim
        ctx = dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(ctx, inner, bias=False)
        self.to_v = nn.Linear(ctx, inner, bias=False)
        # Index 0 to match diffusers' ``to_out.0``; its ``to_out.1`` is a parameter-free Dropout.
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.to_k(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(ctx).view(b, ctx.shape[1], self.heads, -1).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](o.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    """Linear to 2*hidden, split into (value, gate), value * GELU(gate) (exact erf GELU)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU(dim -> 4*dim) then Linear(4*dim -> dim); ``net.1`` stands for diffusers' Dropout."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-LN self-attention, cross-attention and GEGLU feed-forward, each residual: [B, N, dim]."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.attn2 = Attention(dim, heads, head_dim, context_dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """Spatial transformer on [B, C, H, W] with one ``BasicTransformerBlock``; returns [B, C, H, W].

    ``proj_in``/``proj_out`` are Linear (SD 2.x, ``use_linear_projection``) or 1x1 convs (SD 1.x).
    """

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int, linear_proj: bool) -> None:
        super().__init__()
        # diffusers hard-codes eps 1e-6 here, independent of the UNet's norm_eps.
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.linear_proj = linear_proj
        if linear_proj:
            self.proj_in: nn.Module = nn.Linear(channels, channels)
            self.proj_out: nn.Module = nn.Linear(channels, channels)
        else:
            self.proj_in = nn.Conv2d(channels, channels, 1)
            self.proj_out = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, channels // heads, context_dim, eps=1e-5)]
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x)
        if not self.linear_proj:
            t = self.proj_in(t)
        t = t.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.linear_proj:
            t = self.proj_in(t)
        for block in self.transformer_blocks:
            t = block(t, context)
        if self.linear_proj:
            t = self.proj_out(t)
        t = t.reshape(b, h, w, c).permute(0, 3, 1, 2)
        if not self.linear_proj:
            t = self.proj_out(t)
        return t + x


class Downsample2D(nn.Module):
    """3x3 stride-2 conv; with padding 0 the input is first padded by one on the right/bottom."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour 2x (or to ``size``) then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class DownBlock(nn.Module):
    """diffusers ``CrossAttnDownBlock2D`` (``cross_attention``) or ``DownBlock2D``.

    Returns the block output and the tuple of skip tensors (one per layer, plus the downsampled
    output when the block downsamples).
    """

    def __init__(
        self, cin: int, cout: int, cfg: UNetConfig, level: int, cross_attention: bool, downsample: bool
    ) -> None:
        super().__init__()
        n = cfg.layers_per_block[level]
        g, eps, temb = cfg.norm_num_groups, cfg.norm_eps, cfg.time_embed_dim
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, temb, g, eps) for i in range(n)])
        self.attentions = (
            nn.ModuleList(
                [
                    Transformer2DModel(
                        cout, cfg.attention_head_dim[level], cfg.cross_attention_dim, g, cfg.use_linear_projection
                    )
                    for _ in range(n)
                ]
            )
            if cross_attention
            else None
        )
        self.downsamplers = nn.ModuleList([Downsample2D(cout, cfg.downsample_padding)]) if downsample else None

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips: tuple[torch.Tensor, ...] = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class UNetMidBlock2DCrossAttn(nn.Module):
    """ResNet -> spatial transformer -> ResNet at the lowest resolution."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        c = cfg.block_out_channels[-1]
        g, eps, temb = cfg.norm_num_groups, cfg.norm_eps, cfg.time_embed_dim
        self.attentions = nn.ModuleList(
            [Transformer2DModel(c, cfg.attention_head_dim[-1], cfg.cross_attention_dim, g, cfg.use_linear_projection)]
        )
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c, temb, g, eps), ResnetBlock2D(c, c, temb, g, eps)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class UpBlock(nn.Module):
    """diffusers ``CrossAttnUpBlock2D`` (``cross_attention``) or ``UpBlock2D``.

    Each of its ``layers_per_block + 1`` ResNets takes the running tensor concatenated (on
    channels) with the most recent unused skip tensor; ``skip_channels[i]`` is that skip's width.
    """

    def __init__(
        self,
        prev_channels: int,
        cout: int,
        skip_channels: list[int],
        cfg: UNetConfig,
        level: int,
        cross_attention: bool,
        upsample: bool,
    ) -> None:
        super().__init__()
        g, eps, temb = cfg.norm_num_groups, cfg.norm_eps, cfg.time_embed_dim
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D((prev_channels if i == 0 else cout) + s, cout, temb, g, eps)
                for i, s in enumerate(skip_channels)
            ]
        )
        self.attentions = (
            nn.ModuleList(
                [
                    Transformer2DModel(
                        cout, cfg.attention_head_dim[level], cfg.cross_attention_dim, g, cfg.use_linear_projection
                    )
                    for _ in skip_channels
                ]
            )
            if cross_attention
            else None
        )
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        context: torch.Tensor,
        upsample_size: tuple[int, int] | None,
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class UNet2DConditionModel(nn.Module):
    """SD 1.x/2.x denoiser with diffusers' parameter names (see the module docstring).

    ``forward(sample, timestep, encoder_hidden_states) -> Tensor`` (a plain tensor, not
    diffusers' output dataclass): the model prediction (epsilon for SD 2.1-base) with the shape
    and dtype of ``sample``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config = config
        ch = config.block_out_channels
        n = len(ch)
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], config.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        skip_channels = [ch[0]]  # widths of the skip tensors, in the order they are produced
        for i, kind in enumerate(config.down_block_types):
            cin = ch[0] if i == 0 else ch[i - 1]
            last = i == n - 1
            self.down_blocks.append(
                DownBlock(cin, ch[i], config, i, kind == "CrossAttnDownBlock2D", downsample=not last)
            )
            skip_channels += [ch[i]] * config.layers_per_block[i] + ([] if last else [ch[i]])

        self.mid_block = UNetMidBlock2DCrossAttn(config)

        self.up_blocks = nn.ModuleList()
        prev = ch[-1]
        for i, kind in enumerate(config.up_block_types):
            level = n - 1 - i  # up block i mirrors down level n-1-i
            n_res = config.layers_per_block[level] + 1
            mine = [skip_channels.pop() for _ in range(n_res)]
            self.up_blocks.append(
                UpBlock(prev, ch[level], mine, config, level, kind == "CrossAttnUpBlock2D", upsample=i < n - 1)
            )
            prev = ch[level]
        # Every skip tensor is consumed exactly once: the structure is only consistent if so.
        assert not skip_channels, "skip connections left unconsumed"

        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, ch[0], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(ch[0], config.out_channels, 3, padding=1)

    def _timesteps(self, timestep: int | float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        """Timesteps as a [batch] tensor (int64 for ints, float64 for floats, as diffusers)."""
        if isinstance(timestep, bool):
            raise TypeError("timestep must be an int, a float or a tensor, not a bool")
        if isinstance(timestep, int):
            return torch.full((batch,), timestep, dtype=torch.int64, device=device)
        if isinstance(timestep, float):
            return torch.full((batch,), timestep, dtype=torch.float64, device=device)
        if not isinstance(timestep, torch.Tensor):
            raise TypeError(f"timestep must be an int, a float or a tensor, got {type(timestep).__name__}")
        t = timestep.to(device)
        if t.dim() == 0:
            t = t[None]
        if t.dim() != 1 or t.shape[0] not in (1, batch):
            raise ValueError(f"timestep tensor must have shape [], [1] or [{batch}], got {list(t.shape)}")
        return t.expand(batch)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: int | float | torch.Tensor,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the noise (or v) for ``sample``.

        Args:
            sample: [B, in_channels, h, w] latent, float dtype of the weights.
            timestep: int/float, or a tensor of shape [], [1] or [B].
            encoder_hidden_states: [B, L, cross_attention_dim] conditioning tokens.
        Returns:
            [B, out_channels, h, w] tensor, dtype of ``sample``.
        """
        cfg = self.config
        if sample.dim() != 4 or sample.shape[1] != cfg.in_channels:
            raise ValueError(f"sample must be [B, {cfg.in_channels}, h, w], got {list(sample.shape)}")
        ctx = encoder_hidden_states
        if ctx.dim() != 3 or ctx.shape[0] != sample.shape[0] or ctx.shape[2] != cfg.cross_attention_dim:
            raise ValueError(
                f"encoder_hidden_states must be [{sample.shape[0]}, L, {cfg.cross_attention_dim}], "
                f"got {list(ctx.shape)}"
            )
        if ctx.shape[1] == 0 or sample.shape[2] == 0 or sample.shape[3] == 0:
            raise ValueError("sample and encoder_hidden_states must be non-empty")
        t = self._timesteps(timestep, sample.shape[0], sample.device)
        temb = timestep_features(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(temb.to(sample.dtype))

        # diffusers passes explicit upsample sizes only when a side is not a multiple of 2^levels.
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        explicit_sizes = any(s % factor != 0 for s in sample.shape[-2:])

        x = self.conv_in(sample)
        skips: list[torch.Tensor] = [x]
        for block in self.down_blocks:
            x, res = block(x, temb, ctx)
            skips.extend(res)
        x = self.mid_block(x, temb, ctx)
        for block in self.up_blocks:
            n_res = len(block.resnets)
            mine = skips[len(skips) - n_res :]
            del skips[len(skips) - n_res :]
            size = tuple(skips[-1].shape[-2:]) if (explicit_sizes and skips) else None
            x = block(x, mine, temb, ctx, size)
        x = F.silu(self.conv_norm_out(x))
        return self.conv_out(x)



def _read_state_dict(folder: Path, variant: str | None) -> dict[str, torch.Tensor]:
    """Tensors of a diffusers weight file (safetensors preferred, .bin via weights_only, or shards)."""
    v = f".{variant}" if variant else ""
    st = folder / f"diffusion_pytorch_model{v}.safetensors"
    if st.is_file():
        return load_file(str(st))
    index = folder / f"diffusion_pytorch_model{v}.safetensors.index.json"
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: no weight_map")
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = (folder / shard).resolve()
            if shard_path.parent != folder.resolve():
                raise ValueError(f"{index}: shard {shard!r} is outside the folder")
            out.update(load_file(str(shard_path)))
        return out
    binf = folder / f"diffusion_pytorch_model{v}.bin"
    if binf.is_file():
        sd = torch.load(binf, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
        ):
            raise ValueError(f"{binf}: expected a state dict of str -> Tensor")
        return sd
    raise FileNotFoundError(
        f"{folder}: no diffusion_pytorch_model{v}.safetensors / .safetensors.index.json / .bin"
    )


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise ``ModelMismatchError`` unless ``state_dict`` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad_shape = sorted(
        k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ModelMismatchError(
            expected=type(model).__name__,
            found="checkpoint",
            message=f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts),
        )


def load_unet(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    variant: str | None = None,
) -> UNet2DConditionModel:
    """Load a diffusers-format UNet folder without diffusers.

    ``path`` is the ``unet/`` folder (``config.json`` + ``diffusion_pytorch_model[.variant]``
    ``.safetensors``/``.bin``/sharded safetensors) or a pipeline folder that contains ``unet/``.
    The model is built on the meta device and the checkpoint tensors, cast to ``dtype``, are
    assigned in place: no random initialisation, one copy of the weights. Returns the model in
    eval mode. Raises ``ModelMismatchError`` when keys or shapes do not fit the config.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file() and (folder / "unet" / "config.json").is_file():
        folder = folder / "unet"
    config = UNetConfig.from_json(folder / "config.json")
    state_dict = _read_state_dict(folder, variant)
    with torch.device("meta"):
        model = UNet2DConditionModel(config)
    check_state_dict(model, state_dict)
    state_dict = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()
