"""CoD-Lite's convolutional diffusion network ``DConv`` and its ``DiCoBlock``.

Mirror of GenCodec ``CoD_Lite/cod/models/pixel_cnn.py``: module and attribute names are the
official ones, so state-dict keys and shapes match the published checkpoints.

Data flow of ``DConv.forward`` for an image ``x`` (B, 3, H, W), H and W multiples of ``patch_size``:

* ``s_embedder``: a ``patch_size`` stride conv of ``x`` concatenated with the condition map
  ``cond`` (B, hidden, H/p, W/p) -> ``s`` (B, hidden, H/p, W/p);
* ``blocks``: ``num_cond_blocks`` DiCoBlocks (conv token mixer + channel attention + conv FFN,
  adaLN-modulated by the timestep embedding only);
* per-patch pixel decoder: every patch's pixels (p*p of them, each [3 pixel values, hidden_size_x
  features from ``y_embedder_x(cond)``] plus 8x8 DCT position features) go through
  ``x_embedder``, then ``dec_net`` (``num_blocks - num_cond_blocks`` MLP ResBlocks modulated per
  pixel by ``s``), then ``final_layer`` -> (B, 3, H, W) by ``fold``.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .cod_base import CoDBase
from .common import NerfEmbedder, NerfFinalLayer


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift``.

    x (B, C, H, W) with shift/scale (B, C) or (1, C); or x (N, L, C) with shift/scale (N, C).
    """
    if x.dim() == 4:
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of a (B, C, H, W) tensor (eps 1e-6 by default)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class BottleneckPatchEmbed(nn.Module):
    """Patchify ``x`` (B, in_chans, H, W) to (B, pca_dim, H/p, W/p), concat ``cond``, 1x1 to embed_dim."""

    def __init__(
        self,
        patch_size: int = 16,
        in_chans: int = 3,
        pca_dim: int = 768,
        embed_dim: int = 768,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(in_chans, pca_dim, kernel_size=patch_size, stride=patch_size, bias=False)
        self.proj2 = nn.Conv2d(pca_dim + embed_dim, embed_dim, kernel_size=1, stride=1, bias=bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.proj2(torch.cat([self.proj1(x), cond], dim=1))


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of t (N,) (cos half first, ``max_period`` 1e4) -> MLP -> (N, hidden_size)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        """t (N,) float -> (N, dim) float32: [cos(t*f_i), sin(t*f_i)], f_i = max_period^(-i/half)."""
        half = dim // 2
        freqs = _frequencies(half, float(max_period), t.device)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # The sinusoids are float32 (as officially); with bf16/fp16 weights loaded as such (no
        # autocast) they enter the MLP in its dtype. A no-op for float32 weights.
        freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


@functools.lru_cache(maxsize=16)
def _frequencies(half: int, max_period: float, device: torch.device) -> torch.Tensor:
    """The (half,) float32 frequencies ``exp(-log(P) * arange(half) / half)`` on ``device``.

    Computed on the CPU as the official code does (multiply first, then divide; CPU ``exp``), so
    they are bit-identical on every device, then moved once and cached: a call inside a CUDA graph
    capture finds them on the device instead of copying from the host. Never modified in place;
    made outside inference mode so that a cached copy also serves calls that record autograd.
    """
    with torch.inference_mode(False), torch.no_grad():
        exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / half
        return torch.exp(exponent).to(device=device)


class ResBlock(nn.Module):
    """Token MLP block: x (N, L, C) modulated per token by y (N, L, C); gated residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(channels, channels, bias=True),
            nn.SiLU(),
            nn.Linear(channels, channels, bias=True),
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels, bias=True))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(y).chunk(3, dim=-1)
        h = self.in_ln(x) * (1 + scale_mlp) + shift_mlp
        return x + gate_mlp * self.mlp(h)


class SimpleMLPAdaLN(nn.Module):
    """Per-pixel decoder: x (N, p*p, in_channels), c (N, z_channels) -> (N, p*p, model_channels).

    ``cond_embed`` turns each patch token into one modulation vector per pixel of the patch.
    (``out_channels`` is kept for signature compatibility; the official module has no output layer.)
    """

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        z_channels: int,
        num_res_blocks: int,
        patch_size: int,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.patch_size = patch_size
        self.cond_embed = nn.Linear(z_channels, patch_size**2 * model_channels)
        self.input_proj = nn.Linear(in_channels, model_channels)
        self.res_blocks = nn.ModuleList([ResBlock(model_channels) for _ in range(num_res_blocks)])

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.cond_embed(c).reshape(c.shape[0], self.patch_size**2, -1)
        for block in self.res_blocks:
            x = block(x, y)
        return x


class DiCoBlock(nn.Module):
    """Conv diffusion block on s (B, C, H, W), modulated by c (B, C) (the timestep embedding).

    x = s + g1 * conv3(CA(gelu(dw3x3(conv1(mod(LN(s))))))); out = x + g2 * conv5(gelu(conv4(mod(LN(x))))).
    ``cached_modulation`` (non-persistent buffer, (1 or B, 6C)), when set, replaces
    ``adaLN_modulation(c)``: this is how the one-step model caches its t=0 modulation.
    """

    def __init__(self, hidden_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        h = hidden_size
        self.conv1 = nn.Conv2d(h, h, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.conv2 = nn.Conv2d(h, h, kernel_size=3, padding=1, stride=1, groups=h, bias=True)
        self.conv3 = nn.Conv2d(h, h, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.ca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(h, h, kernel_size=1, padding=0, stride=1, groups=1, bias=True),
            nn.Sigmoid(),
        )
        ffn_channel = int(mlp_ratio * h)
        self.conv4 = nn.Conv2d(h, ffn_channel, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.conv5 = nn.Conv2d(ffn_channel, h, kernel_size=1, padding=0, stride=1, groups=1, bias=True)
        self.norm1 = LayerNorm2d(h, affine=False, eps=1e-6)
        self.norm2 = LayerNorm2d(h, affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 6 * h, bias=True))
        self.register_buffer("cached_modulation", None, persistent=False)

    def forward(self, inp: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        mod = self.cached_modulation if self.cached_modulation is not None else self.adaLN_modulation(c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)

        x = modulate(self.norm1(inp), shift_msa, scale_msa)
        x = F.gelu(self.conv2(self.conv1(x)))
        x = x * self.ca(x)
        x = inp + gate_msa[:, :, None, None] * self.conv3(x)

        y = modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp[:, :, None, None] * self.conv5(F.gelu(self.conv4(y)))


class DConv(CoDBase):
    """CoD-Lite's conv diffusion denoiser (official constructor; extra kwargs go to ``CoDBase``).

    ``forward(x, t, y, cond)``: x (B, 3, H, W) noisy image, t (B,) in [0, 1] (0 = noise), y the
    clean image in [0, 1] (only used when ``cond`` is None, through the condition codec), cond
    (B, hidden_size, H/p, W/p). Returns ``(output, cond)``: with ``return_pred`` the predicted
    image (B, 3, H, W) in [-1, 1], else the velocity derived from it (``pred='x'``:
    (pred - x) / max(1 - t, 0.05)). With ``return_codec_res`` a third item, the codec's result
    dict (None when ``cond`` was given; the official code raises NameError there). The official
    training-time ``initialize_weights`` (xavier / zero init) is not mirrored: weights come from
    checkpoints.
    """

    def __init__(
        self,
        pred: str = "x",
        patch_size: int = 16,
        in_channels: int = 3,
        hidden_size: int = 1152,
        hidden_size_x: int = 32,
        mlp_ratio: float = 4.0,
        num_blocks: int = 31,
        num_cond_blocks: int = 28,
        bottleneck_dim: int = 128,
        *args,
        **kwargs,
    ) -> None:
        super().__init__(*args, hidden_size=hidden_size, **kwargs)
        if pred not in ("x", "v"):
            raise ValueError(f"pred must be 'x' or 'v', got {pred!r}")
        self.pred = pred
        self.v_clamp_min = 0.05 if pred == "x" else 0.0
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_blocks = num_blocks
        self.num_cond_blocks = num_cond_blocks

        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder_x = nn.Conv2d(hidden_size, hidden_size_x * patch_size**2, 1, 1, 0)
        self.x_embedder = NerfEmbedder(in_channels + hidden_size_x, hidden_size_x, max_freqs=8)
        self.s_embedder = BottleneckPatchEmbed(patch_size, in_channels, bottleneck_dim, hidden_size, bias=True)
        self.blocks = nn.ModuleList([DiCoBlock(hidden_size, mlp_ratio=mlp_ratio) for _ in range(num_cond_blocks)])
        self.dec_net = SimpleMLPAdaLN(
            in_channels=hidden_size_x,
            model_channels=hidden_size_x,
            out_channels=in_channels,
            z_channels=hidden_size,
            num_res_blocks=num_blocks - num_cond_blocks,
            patch_size=patch_size,
        )
        self.final_layer = NerfFinalLayer(hidden_size_x, self.out_channels)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None,
        cond: torch.Tensor | None,
        return_codec_res: bool = False,
        return_pred: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        input_t = t
        codec_res = None
        if cond is None:
            cond, codec_res = self.y_embedder(y)
        if cond.shape[-2:] != (h // p, w // p):
            raise ValueError(
                f"condition grid {tuple(cond.shape[-2:])} does not match the token grid {(h // p, w // p)}"
            )
        c = self.t_embedder(t.view(-1))

        s = self.s_embedder(x, cond)
        for block in self.blocks:
            s = block(s, c)
        length = s.shape[-2] * s.shape[-1]
        s = s.permute(0, 2, 3, 1).reshape(-1, self.hidden_size)  # (B*L, hidden)

        # Per-patch pixel inputs: (B*L, p*p, in_channels + hidden_size_x).
        px = F.unfold(x, kernel_size=p, stride=p)  # (B, in_channels*p*p, L)
        px = torch.cat([px, self.y_embedder_x(cond).flatten(2)], dim=1)
        px = px.reshape(b, -1, p * p, length).permute(0, 3, 2, 1).flatten(0, 1)
        px = self.x_embedder(px)

        px = self.final_layer(self.dec_net(px, s))  # (B*L, p*p, out_channels)
        px = px.transpose(1, 2).reshape(b, length, -1).transpose(1, 2)
        output_pred = F.fold(px.contiguous(), (h, w), kernel_size=p, stride=p)

        if return_pred:
            output = output_pred
        elif self.pred == "x":
            output = (output_pred - x) / (1.0 - input_t.view(-1, 1, 1, 1)).clamp_min(self.v_clamp_min)
        else:
            output = output_pred
        if return_codec_res:
            return output, cond, codec_res
        return output, cond
