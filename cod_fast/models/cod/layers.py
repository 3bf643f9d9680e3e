"""Building blocks shared by the CoD condition codec and the CoD diffusion transformers.

Plain PyTorch mirrors of the blocks in microsoft/GenCodec ``CoD/cod/models/condition_codec.py``,
``pixel_dit.py`` and ``latent_dit.py``. Module and attribute names are the official ones, so that
official checkpoints load with ``strict=True``; the arithmetic follows the official order of
operations so that fp32 outputs agree to rounding.

Two families live here:

* convolutional blocks of the condition codec (LDM/VQGAN style): :class:`ResnetBlock`,
  :class:`AttnBlock`, :class:`Downsample`, :class:`UpSample`, all on ``(B, C, H, W)`` tensors;
* transformer blocks of the DiTs: :class:`RMSNorm`, :class:`FeedForward` (SwiGLU),
  2D RoPE (:func:`precompute_freqs_cis_2d`, :func:`apply_rotary_emb`), :class:`RAttention`,
  :class:`FlattenDiTBlock`, :class:`TimestepEmbedder`, :class:`Embed`, all on ``(B, N, C)`` tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------
# Convolutional blocks (condition codec)
# --------------------------------------------------------------------------------------------


def swish(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)`` (the official ``nonlinearity``), any shape and dtype."""
    return x * torch.sigmoid(x)


def Normalize(in_channels: int) -> nn.GroupNorm:  # noqa: N802 (official name)
    """GroupNorm with 32 groups, eps 1e-6 and an affine transform (official ``Normalize``)."""
    return nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GN, swish, conv3x3) twice, plus a shortcut.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``. The shortcut is a 1x1 conv
    (``nin_shortcut``) or, with ``conv_shortcut=True``, a 3x3 conv (``conv_shortcut``), and only
    exists when the channel count changes. ``dropout`` only matters in training.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int | None = None,
        conv_shortcut: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.use_conv_shortcut = conv_shortcut
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
            else:
                self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head softmax self-attention over all spatial positions, with a residual.

    ``(B, C, H, W) -> (B, C, H, W)``; q, k, v and the output projection are 1x1 convs, the
    scale is ``C ** -0.5``. Memory is ``O((H*W)^2)`` per image, as in the official block.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.norm = Normalize(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q = self.q(hn).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        k = self.k(hn).reshape(b, c, h * w)  # (B, C, HW)
        v = self.v(hn).reshape(b, c, h * w)  # (B, C, HW)
        attn = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)  # (B, HW_q, HW_k)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero padding one pixel on the right and bottom only.

    ``(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))`` (``H/2`` for even ``H``).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class UpSample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a :class:`ResnetBlock` (``block``).

    ``(B, C, H, W) -> (B, C, 2H, 2W)``; the block's second conv starts at zero, as officially.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.block = ResnetBlock(in_channels=in_channels, out_channels=in_channels)
        nn.init.zeros_(self.block.conv2.weight)
        nn.init.zeros_(self.block.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# --------------------------------------------------------------------------------------------
# Transformer blocks (diffusion transformers)
# --------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` (broadcasting over tokens)."""
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    """RMS normalisation over the last dimension, computed in fp32, with a learned gain.

    Any ``(..., hidden_size)`` input; the normalised value is cast back to the input dtype before
    the gain is applied (so the result takes the promoted dtype of input and ``weight``).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        h = hidden_states.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(input_dtype)


class FeedForward(nn.Module):
    """SwiGLU MLP ``w2(silu(w1 x) * w3 x)`` without biases; the inner width is ``int(2/3 * hidden_dim)``.

    ``(..., dim) -> (..., dim)``; with the official ``dim=1152, hidden_dim=4608`` the inner width is 3072.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        hidden_dim = int(2 * hidden_dim / 3)
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def precompute_freqs_cis_2d(
    dim: int, height: int, width: int, theta: float = 10000.0, scale: float = 16.0
) -> torch.Tensor:
    """2D rotary frequencies for a ``height x width`` token grid, as complex64 ``(H*W, dim/2)``.

    Token positions span ``[0, scale]`` along each axis (``linspace``, so independent of the grid
    size); ``dim/4`` frequencies ``theta ** (-4k/dim)``; the complex factors of the x and y
    positions alternate along the last axis (x0, y0, x1, y1, ...). ``dim`` is the head dim.
    """
    x_pos = torch.linspace(0, scale, width)
    y_pos = torch.linspace(0, scale, height)
    y_pos, x_pos = torch.meshgrid(y_pos, x_pos, indexing="ij")
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))  # (dim/4,)
    x_angles = torch.outer(x_pos.reshape(-1), freqs)  # (N, dim/4)
    y_angles = torch.outer(y_pos.reshape(-1), freqs)
    x_cis = torch.polar(torch.ones_like(x_angles), x_angles)
    y_cis = torch.polar(torch.ones_like(y_angles), y_angles)
    return torch.stack([x_cis, y_cis], dim=-1).reshape(height * width, -1)


def apply_rotary_emb(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate consecutive channel pairs of q and k by ``freqs_cis`` (computed in fp32).

    ``xq, xk``: ``(B, N, heads, head_dim)``; ``freqs_cis``: complex ``(N, head_dim/2)``.
    Returns tensors of the input shapes and dtypes.
    """
    f = freqs_cis[None, :, None, :]
    q = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2)) * f
    k = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2)) * f
    return torch.view_as_real(q).flatten(3).type_as(xq), torch.view_as_real(k).flatten(3).type_as(xk)


class RAttention(nn.Module):
    """Multi-head self-attention with QK-RMSNorm and 2D RoPE (SDPA, no mask by default).

    ``forward(x (B, N, dim), pos complex (N, head_dim/2), mask) -> (B, N, dim)``.
    ``attn_drop``/``proj_drop`` are training-only dropouts (identity at rate 0).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] = RMSNorm,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 1, 3, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, N, heads, head_dim)
        q, k = apply_rotary_emb(self.q_norm(q), self.k_norm(k), pos)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class FlattenDiTBlock(nn.Module):
    """Pre-norm DiT block: RMSNorm + adaLN-modulated attention and SwiGLU MLP, each gated.

    ``forward(x (B, N, hidden), c (B, 1 or N, hidden), pos, mask) -> (B, N, hidden)``.
    The six modulations (shift/scale/gate for attention and MLP) come from
    ``adaLN_modulation(c)``. When ``cached_modulation`` (a non-persistent buffer holding one
    ``adaLN_modulation`` output) is set, it is used instead and ``c`` is ignored: this is how
    the one-step model caches its t=0 modulation without changing the state-dict keys.
    """

    def __init__(self, hidden_size: int, groups: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = RMSNorm(hidden_size, eps=1e-6)
        self.attn = RAttention(hidden_size, num_heads=groups, qkv_bias=False)
        self.norm2 = RMSNorm(hidden_size, eps=1e-6)
        self.mlp = FeedForward(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.register_buffer("cached_modulation", None, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor | None,
        pos: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mod = self.cached_modulation if self.cached_modulation is not None else self.adaLN_modulation(c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), pos, mask=mask)
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of ``t`` in [0, 1] (``max_period=10``) followed by a 2-layer SiLU MLP.

    ``(B,) -> (B, hidden_size)``.
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10) -> torch.Tensor:
        """``[cos(t f), sin(t f)]`` with ``f_k = max_period ** (-k / (dim/2))``: ``(B,) -> (B, dim)``.

        Computed in fp32 and cast to ``t.dtype``; an odd ``dim`` gets one zero column.
        """
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half
        )
        args = t[..., None].float() * freqs[None, ...]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb.to(t.dtype)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class Embed(nn.Module):
    """Token embedding: ``Linear(in_chans -> embed_dim)`` then an optional norm (identity by default).

    ``(..., in_chans) -> (..., embed_dim)``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: type[nn.Module] | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Linear(in_chans, embed_dim, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))
