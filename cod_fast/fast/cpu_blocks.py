"""CPU variants of the reference blocks: the same fp32 maths with fewer passes over memory.

Route "cpu" (what ``optimize(model, "cpu")`` swaps in; the TABLE below). Every variant computes
what the reference computes, in fp32, with the same operations up to summation order, so outputs
agree to fp32 rounding: tolerance ``rtol 1e-4, atol 1e-4 * max|ref|`` on the tiny test models
(tests/fast/test_cpu_backend.py); measured at full size in BENCHMARKS.md ("Optimized path (CPU)").
What changes is the number of passes over memory:

- modulation and gated residuals are single ``addcmul``/in-place passes instead of 2-3 temporaries;
- ``torch.nn.functional.rms_norm`` (one fused kernel) replaces pow/mean/rsqrt/mul chains;
- SwiGLU and SiLU run in place on freshly produced activations;
- CoD-Lite's ``DiCoBlock`` runs token-major: its activations stay channels-last between blocks,
  LayerNorm2d is a plain last-dim ``layer_norm``, the 1x1 convs are GEMMs on the (B, H, W, C) view
  and the depthwise 3x3 runs on the channels-last view (no NCHW <-> NHWC copies);
- the NeRF embedders' DCT half of ``x_embedder`` is the same for every patch: its Linear
  contribution (plus the bias) is computed once per patch size and weight version, and the
  per-pixel input goes through the remaining columns only (no ``cat``, 35 instead of 99 inputs);
- CoD-Lite's per-pixel decoder applies ``silu`` to its modulation input once for all ResBlocks;
- the NeRF residual is folded into ``baddbmm``;
- SODEC's UNet and the SD-VAE run with channels-last activations from their entry to their
  exit (converted once, returned contiguous): oneDNN's 3x3 and 1x1 convs are faster on NHWC, the
  spatial transformers' and the VAE attention's token views become free reshapes instead of
  permute copies, and GroupNorm/SiLU/nearest-upsampling/``cat`` keep the layout; SiLU and the
  residual/timestep adds run in place, GEGLU gates in place, and the one-step (t = 999) timestep
  embedding is computed once and reused while the timestep and the weights are unchanged;
- their nearest-2x upsamplers (upsample, then conv3x3) run as four 2x2 sub-pixel convs on the
  low-resolution input: 2.25x fewer FLOPs for the largest convs of the VAE decoder.

The optional int8 route (``cod_fast.fast.quant``) is applied on top of this one; see its docstring.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.cod import layers as cod_layers
from ..models.cod import pixel_dit as cod_pixel
from ..models.cod_lite import common as lite_common
from ..models.cod_lite import pixel_cnn as lite_cnn
from ..models.sodec import unet as sodec_unet
from ..models.vae import autoencoder_kl as vae_kl
from .swap import FastModule, SwapTable

BACKEND = "cpu"


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference RMSNorm (fp32 statistics, gain applied after the cast) in fused form."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _modulated(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``h * (1 + scale) + shift`` in one pass over h (h is a temporary and is overwritten)."""
    return h.mul_(1 + scale).add_(shift)


class CpuRMSNorm(FastModule, cod_layers.RMSNorm):
    fast_backend = BACKEND
    fast_reason = "fused rms_norm kernel"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return _rms_norm(hidden_states, self.weight, self.variance_epsilon)




class CpuFlattenDiTBlock(FastModule, cod_layers.FlattenDiTBlock):
    fast_backend = BACKEND
    fast_reason = "fused rms_norm, in-place modulate/SwiGLU, addcmul gated residuals"

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, pos: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        mod = self.cached_modulation if self.cached_modulation is not None else self.adaLN_modulation(c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = _modulated(_rms_norm(x, self.norm1.weight, self.norm1.variance_epsilon), shift_msa, scale_msa)
        x = torch.addcmul(x, gate_msa, self.attn(h, pos, mask=mask))
        h = _modulated(_rms_norm(x, self.norm2.weight, self.norm2.variance_epsilon), shift_mlp, scale_mlp)
        mlp = self.mlp
        a = F.silu(mlp.w1(h), inplace=True).mul_(mlp.w3(h))
        return torch.addcmul(x, gate_mlp, mlp.w2(a))


class CpuNerfBlock(FastModule, cod_pixel.NerfBlock):
    fast_backend = BACKEND
    fast_reason = "fused rms_norm, in-place SiLU, residual folded into baddbmm"

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        m, _, hx = x.shape
        fc1, fc2 = self.param_generator1(s).chunk(2, dim=-1)
        fc1 = F.normalize(fc1.view(m, hx, hx * self.mlp_ratio), dim=-2)
        fc2 = F.normalize(fc2.view(m, hx * self.mlp_ratio, hx), dim=-2)
        h = torch.bmm(_rms_norm(x, self.norm.weight, self.norm.variance_epsilon), fc1)
        return torch.baddbmm(x, F.silu(h, inplace=True), fc2)


class CpuLayerNorm2d(FastModule, lite_cnn.LayerNorm2d):
    fast_backend = BACKEND
    fast_reason = "layer_norm on a channels-last view (no permute copies)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xl = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        y = F.layer_norm(xl, self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _conv1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution applied to a token-major (..., C_in) tensor: one GEMM -> (..., C_out).

    A conv swapped by the int8 route (``quant.Int8Conv1x1``) runs its int8 GEMM instead."""
    linear_tokens = getattr(conv, "linear_tokens", None)
    if linear_tokens is not None:
        return linear_tokens(x)
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class CpuDiCoBlock(FastModule, lite_cnn.DiCoBlock):
    fast_backend = BACKEND
    fast_reason = "token-major (channels-last) block: 1x1 convs as GEMMs, last-dim layer_norm, fused modulate/residuals"

    def forward(self, inp: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """inp (B, C, H, W) in any memory format -> (B, C, H, W) channels-last (same values)."""
        mod = self.cached_modulation if self.cached_modulation is not None else self.adaLN_modulation(c)
        # (B, 6C) -> six (B, 1, 1, C): broadcast over the (B, H, W, C) token view.
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            t[:, None, None, :] for t in mod.chunk(6, dim=1))
        c_ = inp.shape[1]
        # Invariant: after this line ``t_in`` is a contiguous (B, H, W, C) view of a channels-last
        # NCHW tensor, so every per-channel op below works on the last (contiguous) dimension.
        t_in = inp.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        x = _modulated(F.layer_norm(t_in, (c_,), None, None, self.norm1.eps), shift_msa, scale_msa)
        x = _conv1x1(x, self.conv1).permute(0, 3, 1, 2)  # channels-last NCHW view
        x = F.conv2d(x, self.conv2.weight, self.conv2.bias, padding=1, groups=c_)
        x = F.gelu(x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1))
        # Channel attention: global average pool -> 1x1 -> sigmoid, as a (B, 1, 1, C) gate.
        ca_conv = self.ca[1]
        att = torch.sigmoid(F.linear(x.mean(dim=(1, 2), keepdim=True), ca_conv.weight.flatten(1), ca_conv.bias))
        x = x.mul_(att)
        x = torch.addcmul(t_in, gate_msa, _conv1x1(x, self.conv3))
        y = _modulated(F.layer_norm(x, (c_,), None, None, self.norm2.eps), shift_mlp, scale_mlp)
        h = F.gelu(_conv1x1(y, self.conv4))
        out = torch.addcmul(x, gate_mlp, _conv1x1(h, self.conv5))
        return out.permute(0, 3, 1, 2)


class _CpuNerfEmbedderMixin(FastModule):
    """``embedder(cat([inputs, dct]))`` = ``inputs @ W_in.T + (dct @ W_dct.T + b)``; the bracket is
    the same for every patch, so it is computed once (per patch size, device, dtype and weight
    version) and added to the per-pixel GEMM over the ``in_channels`` columns only."""

    fast_backend = BACKEND
    fast_reason = "DCT half of the embedder Linear precomputed once per patch size (no cat)"

    def fast_prepare(self) -> None:
        self._fast_table: dict[tuple, torch.Tensor] = {}

    def _dct_term(self, p2: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        lin = self.embedder[0]
        cin = lin.in_features - self.max_freqs ** 2
        # The weight version is in the key so that an in-place weight update invalidates the table.
        key = (p2, str(device), dtype, lin.weight._version, lin.weight.data_ptr())
        term = self._fast_table.get(key)
        if term is None:
            dct = self.fetch_pos(int(round(p2 ** 0.5)), device, dtype).reshape(p2, -1)
            term = F.linear(dct, lin.weight[:, cin:], lin.bias)  # (p2, hidden_size_input)
            self._fast_table.clear()
            self._fast_table[key] = term
        return term

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (M, p*p, in_channels) -> (M, p*p, hidden_size_input)."""
        _, p2, cin = inputs.shape
        if int(round(p2 ** 0.5)) ** 2 != p2:
            raise ValueError(f"NerfEmbedder expects a square number of pixels per patch, got {p2}")
        lin = self.embedder[0]
        return torch.matmul(inputs, lin.weight[:, :cin].t()).add_(self._dct_term(p2, inputs.device, inputs.dtype))


class CpuNerfEmbedder(_CpuNerfEmbedderMixin, cod_pixel.NerfEmbedder):
    pass


class CpuLiteNerfEmbedder(_CpuNerfEmbedderMixin, lite_common.NerfEmbedder):
    pass


class CpuLiteResBlock(FastModule, lite_cnn.ResBlock):
    fast_backend = BACKEND
    fast_reason = "fused layer_norm modulate, in-place SiLU, addcmul gated residual"

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_silu: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, L, C), y (N, L, C) the modulation input; ``y_silu`` = silu(y) when already computed."""
        if y_silu is None:
            y_silu = F.silu(y)
        shift, scale, gate = F.linear(y_silu, self.adaLN_modulation[1].weight,
                                      self.adaLN_modulation[1].bias).chunk(3, dim=-1)
        ln = self.in_ln
        h = _modulated(F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps), shift, scale)
        fc1, fc2 = self.mlp[0], self.mlp[2]
        return torch.addcmul(x, gate, F.linear(F.silu(F.linear(h, fc1.weight, fc1.bias), inplace=True),
                                               fc2.weight, fc2.bias))


class CpuSimpleMLPAdaLN(FastModule, lite_cnn.SimpleMLPAdaLN):
    fast_backend = BACKEND
    fast_reason = "silu of the per-pixel modulation input computed once for all ResBlocks"

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.cond_embed(c).reshape(c.shape[0], self.patch_size ** 2, -1)
        y_silu = F.silu(y)
        for block in self.res_blocks:
            if isinstance(block, CpuLiteResBlock):
                x = block(x, y, y_silu)
            else:
                x = block(x, y)
        return x


class CpuResnetBlock(FastModule, cod_layers.ResnetBlock):
    fast_backend = BACKEND
    fast_reason = "in-place Swish after GroupNorm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


# ---- SODEC UNet and SD-VAE decoder: channels-last activations ----


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """x itself when already channels-last (or not 4-D), else a channels-last copy (same values)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _activation_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` written into x (a fresh temporary) for SiLU and ReLU; other activations allocate."""
    if type(act) is nn.SiLU:
        return F.silu(x, inplace=True)
    if type(act) is nn.ReLU:
        return F.relu(x, inplace=True)
    return act(x)


def _tensor_key(t: torch.Tensor) -> tuple:
    """Identity and in-place-update counter of a tensor. Inference tensors carry no version
    counter (and can only be changed in place inside ``inference_mode``): their key is the
    storage address alone."""
    return (t.data_ptr(), -1 if t.is_inference() else t._version)


def _shortcut(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A ResNet block's 1x1 ``conv_shortcut`` on channels-last x, as one GEMM over the (B, H, W, C)
    view (oneDNN takes a slow path for these 1x1 convs); other convs run as they are."""
    plain_1x1 = (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
                 and conv.groups == 1 and conv.dilation == (1, 1))
    if not plain_1x1 or not x.is_contiguous(memory_format=torch.channels_last):
        return conv(x)
    return F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)


class _TimestepEmbeddingCacheMixin(FastModule):
    """The timestep MLP's output reused while its input and weights are unchanged.

    A one-step decoder always runs at t = 999, so the embedding is the same on every call. The
    cache holds one entry: a copy of the input features [N, c0], the weights' (address, version)
    and whether inference mode was on; any difference recomputes. Outputs that need a gradient
    are never cached. The cached [N, time_embed_dim] tensor is returned as is: callers read it,
    as the UNet's ResNet blocks do, and must not write into it.
    """

    def fast_prepare(self) -> None:
        self._fast_cache: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(_tensor_key(p) for p in self.parameters()), torch.is_inference_mode_enabled(),
               x.shape, x.dtype, x.device)
        cache = self._fast_cache
        if cache is not None and cache[0] == key and torch.equal(cache[1], x):
            return cache[2]
        out = sodec_unet.TimestepEmbedding.forward(self, x)
        self._fast_cache = None if out.requires_grad else (key, x.clone(), out)
        return out


class CpuTimestepEmbedding(_TimestepEmbeddingCacheMixin, sodec_unet.TimestepEmbedding):
    fast_backend = BACKEND
    fast_reason = "timestep embedding cached while t and the weights are unchanged (one-step t=999)"


class CpuSodecUNet(FastModule, sodec_unet.UNet2DConditionModel):
    fast_backend = BACKEND
    fast_reason = "channels-last activations end to end (converted once at entry, contiguous output)"

    def forward(self, sample: torch.Tensor, timestep: int | float | torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Same contract as the reference: [B, in, h, w] -> [B, out, h, w] (contiguous NCHW)."""
        if isinstance(sample, torch.Tensor):
            sample = _channels_last(sample)
        out = sodec_unet.UNet2DConditionModel.forward(self, sample, timestep, encoder_hidden_states)
        return out.contiguous()


class CpuUNetResnetBlock2D(FastModule, sodec_unet.ResnetBlock2D):
    fast_backend = BACKEND
    fast_reason = ("channels-last convs, 1x1 shortcut as a GEMM, in-place SiLU, timestep bias and residual "
                   "added in place")

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x [B, cin, H, W] (any layout), temb [B, temb_dim] -> [B, cout, H, W] channels-last."""
        x = _channels_last(x)
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h.add_(self.time_emb_proj(F.silu(temb))[:, :, None, None])
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        if self.conv_shortcut is not None:
            x = _shortcut(x, self.conv_shortcut)
        return h.add_(x)


class CpuTransformer2DModel(FastModule, sodec_unet.Transformer2DModel):
    fast_backend = BACKEND
    fast_reason = "tokens as a free view of channels-last activations (no permute copies), residual in place"

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] (any layout), context [B, L, ctx] -> [B, C, H, W] channels-last."""
        x = _channels_last(x)
        b, c, h, w = x.shape
        t = self.norm(x)
        if not self.linear_proj:
            t = self.proj_in(t)
        # Invariant: t is channels-last here, so (B, H, W, C) is its memory order and the reshape
        # to tokens is a view; the reverse reshape/permute at the end is a view too.
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
        return t.add_(x)  # t is a fresh output of proj_out (or a view of one)


class CpuBasicTransformerBlock(FastModule, sodec_unet.BasicTransformerBlock):
    fast_backend = BACKEND
    fast_reason = "residual adds in place on one buffer"

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))  # a new buffer: the caller's x is not written
        x.add_(self.attn2(self.norm2(x), context))
        return x.add_(self.ff(self.norm3(x)))


class CpuGEGLU(FastModule, sodec_unet.GEGLU):
    fast_backend = BACKEND
    fast_reason = "value * GELU(gate) multiplied in place into the GELU output"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return F.gelu(gate).mul_(value)


def _is_plain_conv3x3(conv: nn.Conv2d) -> bool:
    """A 3x3, stride-1, zero-padding-1, undilated, ungrouped conv (what the sub-pixel form assumes)."""
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def _fold_taps(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 2-tap kernels along ``dim`` (of size 3) that a 3-tap kernel becomes on a 2x
    nearest-upsampled axis: even outputs see input rows (i-1, i) with taps (w0, w1 + w2), odd
    outputs rows (i, i+1) with taps (w0 + w1, w2)."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def _upsample2x_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(interpolate(x, scale_factor=2, mode="nearest"))`` without the upsampled tensor.

    Output pixel (2i + a, 2j + b) reads upsampled rows 2i + a - 1 .. 2i + a + 1, i.e. input rows
    i - 1 + a .. i + a, so each of the four phases (a, b) is a 2x2 conv of the input padded by
    one (16 instead of 36 multiply-adds per output and input channel, 2.25x fewer FLOPs). The
    phase kernels are sums of the 3x3 taps, formed on every call (no copy of the weights is kept).
    x [B, C, H, W] -> [B, O, 2H, 2W] channels-last.
    """
    b, _, h, w = x.shape
    rows = _fold_taps(conv.weight, 2)  # each (O, C, 2, 3)
    xp = F.pad(_channels_last(x), (1, 1, 1, 1))
    out = torch.empty((b, conv.out_channels, 2 * h, 2 * w), dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    for a in range(2):
        for bb, k in enumerate(_fold_taps(rows[a], 3)):  # k: (O, C, 2, 2)
            out[:, :, a::2, bb::2] = F.conv2d(xp[:, :, a:a + h + 1, bb:bb + w + 1], k, conv.bias)
    return out


class CpuUNetUpsample2D(FastModule, sodec_unet.Upsample2D):
    fast_backend = BACKEND
    fast_reason = "nearest-2x + conv3x3 as four 2x2 sub-pixel convs (2.25x fewer FLOPs, no upsampled copy)"

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        exact_2x = size is None or tuple(size) == (2 * x.shape[-2], 2 * x.shape[-1])
        if x.dim() != 4 or not exact_2x or not _is_plain_conv3x3(self.conv):
            return sodec_unet.Upsample2D.forward(self, x, size)
        return _upsample2x_conv3x3(x, self.conv)


class CpuVaeUpsample2D(FastModule, vae_kl.Upsample2D):
    fast_backend = BACKEND
    fast_reason = "nearest-2x + conv3x3 as four 2x2 sub-pixel convs (2.25x fewer FLOPs, no upsampled copy)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or not _is_plain_conv3x3(self.conv):
            return vae_kl.Upsample2D.forward(self, x)
        return _upsample2x_conv3x3(x, self.conv)


class CpuVaeDecoder(FastModule, vae_kl.Decoder):
    fast_backend = BACKEND
    fast_reason = "channels-last activations end to end (converted once at entry, contiguous output)"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Same contract as the reference: latent [B, latent, h, w] -> image (contiguous NCHW)."""
        return vae_kl.Decoder.forward(self, _channels_last(z)).contiguous()


class CpuVaeEncoder(FastModule, vae_kl.Encoder):
    fast_backend = BACKEND
    fast_reason = "channels-last activations end to end (converted once at entry, contiguous output)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same contract as the reference: image [B, in, H, W] -> moments (contiguous NCHW)."""
        return vae_kl.Encoder.forward(self, _channels_last(x)).contiguous()


class CpuVaeResnetBlock2D(FastModule, vae_kl.ResnetBlock2D):
    fast_backend = BACKEND
    fast_reason = "channels-last convs, 1x1 shortcut as a GEMM, in-place SiLU, residual added in place"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, cin, H, W] (any layout) -> [B, cout, H, W] channels-last."""
        x = _channels_last(x)
        act = self.nonlinearity
        h = self.conv1(_activation_(act, self.norm1(x)))
        h = self.conv2(self.dropout(_activation_(act, self.norm2(h))))
        if self.conv_shortcut is not None:
            x = _shortcut(x, self.conv_shortcut)
        return h.add_(x)


class CpuVaeAttention(FastModule, vae_kl.Attention):
    fast_backend = BACKEND
    fast_reason = "tokens as a free view of channels-last activations (no transpose copies), residual in place"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] (any layout) -> [B, C, H, W] channels-last."""
        x = _channels_last(x)
        b, c, h, w = x.shape
        # Invariant: the GroupNorm output is channels-last, so the (B, H*W, C) tokens are a view.
        tokens = self.group_norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        q = self.to_q(tokens).unsqueeze(1)  # (B, 1 head, HW, C)
        k = self.to_k(tokens).unsqueeze(1)
        v = self.to_v(tokens).unsqueeze(1)
        out = self.to_out[1](self.to_out[0](F.scaled_dot_product_attention(q, k, v).squeeze(1)))
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2).add_(x)


TABLE: SwapTable = {
    cod_layers.FlattenDiTBlock: CpuFlattenDiTBlock,
    cod_layers.RMSNorm: CpuRMSNorm,
    cod_layers.ResnetBlock: CpuResnetBlock,
    cod_pixel.NerfBlock: CpuNerfBlock,
    lite_cnn.LayerNorm2d: CpuLayerNorm2d,
    lite_cnn.DiCoBlock: CpuDiCoBlock,
    lite_cnn.ResBlock: CpuLiteResBlock,
    lite_cnn.SimpleMLPAdaLN: CpuSimpleMLPAdaLN,
    cod_pixel.NerfEmbedder: CpuNerfEmbedder,
    lite_common.NerfEmbedder: CpuLiteNerfEmbedder,
    sodec_unet.UNet2DConditionModel: CpuSodecUNet,
    sodec_unet.TimestepEmbedding: CpuTimestepEmbedding,
    sodec_unet.ResnetBlock2D: CpuUNetResnetBlock2D,
    sodec_unet.Transformer2DModel: CpuTransformer2DModel,
    sodec_unet.BasicTransformerBlock: CpuBasicTransformerBlock,
    sodec_unet.GEGLU: CpuGEGLU,
    vae_kl.Decoder: CpuVaeDecoder,
    vae_kl.Encoder: CpuVaeEncoder,
    vae_kl.ResnetBlock2D: CpuVaeResnetBlock2D,
    vae_kl.Attention: CpuVaeAttention,
    sodec_unet.Upsample2D: CpuUNetUpsample2D,
    vae_kl.Upsample2D: CpuVaeUpsample2D,
}
