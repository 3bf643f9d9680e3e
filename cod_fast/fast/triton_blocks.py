"""Triton variants of the reference blocks: the same maths through the fused kernels of
``cod_fast.kernels``.

Each class subclasses the reference block, so weights and state-dict keys are untouched. The fused
kernels replace the memory-bound glue (norms, modulation, RoPE, gated residuals, SwiGLU, attention);
matmuls and convolutions stay with cuBLAS/cuDNN through the original ``nn.Linear``/``nn.Conv2d``.
Configurations a kernel does not cover (an attention mask, a non-RMSNorm QK norm) fall back to the
reference ``forward``.

SODEC's UNet and the SD-VAE: their ResNet blocks run GroupNorm+SiLU as one kernel (twice), every
other GroupNorm (spatial transformers, VAE attention, output norms) goes through the GroupNorm
kernel, and the one-step (t = 999) timestep embedding is cached as on the CPU route.

The kernels run on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (slow, for tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cod_fast.kernels.attention import attention, spatial_attention
from cod_fast.kernels.group_norm import group_norm
from cod_fast.kernels.layer_norm2d_modulate import gated_residual_layer_norm2d_modulate, layer_norm2d_modulate
from cod_fast.kernels.qk_norm_rope import qk_norm_rope
from cod_fast.kernels.rms_norm_modulate import gated_residual_rms_norm_modulate, rms_norm_modulate
from cod_fast.kernels.swiglu import swiglu

from ..models.cod import layers as cod_layers
from ..models.cod import pixel_dit as cod_pixel
from ..models.cod_lite import pixel_cnn as lite_cnn
from ..models.sodec import unet as sodec_unet
from ..models.vae import autoencoder_kl as vae_kl
from .cpu_blocks import _TimestepEmbeddingCacheMixin
from .swap import FastModule, SwapTable

BACKEND = "triton"


class TritonRMSNorm(FastModule, cod_layers.RMSNorm):
    fast_backend = BACKEND
    fast_reason = "RMSNorm in one kernel"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dtype != self.weight.dtype:  # promoted-dtype semantics: keep the reference
            return cod_layers.RMSNorm.forward(self, hidden_states)
        shape = hidden_states.shape
        x = hidden_states.reshape(1, -1, shape[-1])
        return rms_norm_modulate(x, self.weight, None, None, self.variance_epsilon).reshape(shape)




class TritonFlattenDiTBlock(FastModule, cod_layers.FlattenDiTBlock):
    fast_backend = BACKEND
    fast_reason = ("RMSNorm+modulate, QK-RMSNorm+RoPE, flash attention, gated residual+RMSNorm+modulate "
                   "and SwiGLU fused")

    def forward(self, x: torch.Tensor, c: torch.Tensor | None, pos: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        attn = self.attn
        if mask is not None or not isinstance(attn.q_norm, cod_layers.RMSNorm):
            return cod_layers.FlattenDiTBlock.forward(self, x, c, pos, mask)
        mod = self.cached_modulation if self.cached_modulation is not None else self.adaLN_modulation(c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = rms_norm_modulate(x, self.norm1.weight, shift_msa, scale_msa, self.norm1.variance_epsilon)
        b, n, c_dim = h.shape
        qkv = attn.qkv(h).view(b, n, 3, attn.num_heads, attn.head_dim)
        q, k = qk_norm_rope(qkv, attn.q_norm.weight, attn.k_norm.weight, pos, attn.q_norm.variance_epsilon)
        o = attention(q, k, qkv[:, :, 2].transpose(1, 2))
        y = attn.proj(o.transpose(1, 2).reshape(b, n, c_dim))
        x, h = gated_residual_rms_norm_modulate(x, y, gate_msa, self.norm2.weight, shift_mlp, scale_mlp,
                                                self.norm2.variance_epsilon)
        mlp = self.mlp
        return x + gate_mlp * mlp.w2(swiglu(mlp.w1(h), mlp.w3(h)))


class TritonNerfBlock(FastModule, cod_pixel.NerfBlock):
    fast_backend = BACKEND
    fast_reason = "RMSNorm in one kernel (the per-token MLP stays two batched matmuls)"

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        m, _, hx = x.shape
        fc1, fc2 = self.param_generator1(s).chunk(2, dim=-1)
        fc1 = F.normalize(fc1.view(m, hx, hx * self.mlp_ratio), dim=-2)
        fc2 = F.normalize(fc2.view(m, hx * self.mlp_ratio, hx), dim=-2)
        h = rms_norm_modulate(x, self.norm.weight, None, None, self.norm.variance_epsilon)
        return torch.baddbmm(x, F.silu(torch.bmm(h, fc1)), fc2)


class TritonAttnBlock(FastModule, cod_layers.AttnBlock):
    fast_backend = BACKEND
    fast_reason = "GroupNorm kernel + single-head flash attention read through strides (no HWxHW matrix)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        hn = group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        return x + self.proj_out(spatial_attention(self.q(hn), self.k(hn), self.v(hn)))


class TritonResnetBlock(FastModule, cod_layers.ResnetBlock):
    fast_backend = BACKEND
    fast_reason = "GroupNorm+Swish fused (twice)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n1, n2 = self.norm1, self.norm2
        h = self.conv1(group_norm(x, n1.num_groups, n1.weight, n1.bias, n1.eps, silu=True))
        h = self.conv2(self.dropout(group_norm(h, n2.num_groups, n2.weight, n2.bias, n2.eps, silu=True)))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class TritonGroupNorm(FastModule, nn.GroupNorm):
    fast_backend = BACKEND
    fast_reason = "GroupNorm in one kernel"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return nn.GroupNorm.forward(self, x)
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class TritonLayerNorm2d(FastModule, lite_cnn.LayerNorm2d):
    fast_backend = BACKEND
    fast_reason = "channel LayerNorm on NCHW without the two permutes"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:  # the kernel has no affine; CoD-Lite uses affine=False
            return lite_cnn.LayerNorm2d.forward(self, x)
        return layer_norm2d_modulate(x, None, None, self.eps)


class TritonDiCoBlock(FastModule, lite_cnn.DiCoBlock):
    fast_backend = BACKEND
    fast_reason = "LayerNorm2d+modulate and gated residual+LayerNorm2d+modulate fused"

    def forward(self, inp: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        mod = self.cached_modulation if self.cached_modulation is not None else self.adaLN_modulation(c)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        b = inp.shape[0]
        if mod.shape[0] != b:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
                t.expand(b, -1) for t in (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp))
        x = layer_norm2d_modulate(inp, shift_msa, scale_msa, self.norm1.eps)
        x = F.gelu(self.conv2(self.conv1(x)))
        x = x * self.ca(x)
        x, y = gated_residual_layer_norm2d_modulate(inp, self.conv3(x), gate_msa.contiguous(), shift_mlp,
                                                    scale_mlp, self.norm2.eps)
        return x + gate_mlp[:, :, None, None] * self.conv5(F.gelu(self.conv4(y)))


class TritonTimestepEmbedding(_TimestepEmbeddingCacheMixin, sodec_unet.TimestepEmbedding):
    fast_backend = BACKEND
    fast_reason = "timestep embedding cached while t and the weights are unchanged (one-step t=999)"


class TritonUNetResnetBlock2D(FastModule, sodec_unet.ResnetBlock2D):
    fast_backend = BACKEND
    fast_reason = "GroupNorm+SiLU fused (twice), timestep bias and residual added in place"

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x [B, cin, H, W] (NCHW or channels-last), temb [B, temb_dim] -> [B, cout, H, W]."""
        n1, n2 = self.norm1, self.norm2
        h = self.conv1(group_norm(x, n1.num_groups, n1.weight, n1.bias, n1.eps, silu=True))
        h.add_(self.time_emb_proj(F.silu(temb))[:, :, None, None])
        h = self.conv2(group_norm(h, n2.num_groups, n2.weight, n2.bias, n2.eps, silu=True))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h.add_(x)


class TritonVaeResnetBlock2D(FastModule, vae_kl.ResnetBlock2D):
    fast_backend = BACKEND
    fast_reason = "GroupNorm+SiLU fused (twice; other activations keep the reference), residual in place"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, cin, H, W] (NCHW or channels-last) -> [B, cout, H, W]."""
        if type(self.nonlinearity) is not nn.SiLU:  # the kernel fuses SiLU only
            return vae_kl.ResnetBlock2D.forward(self, x)
        n1, n2 = self.norm1, self.norm2
        h = self.conv1(group_norm(x, n1.num_groups, n1.weight, n1.bias, n1.eps, silu=True))
        h = self.conv2(self.dropout(group_norm(h, n2.num_groups, n2.weight, n2.bias, n2.eps, silu=True)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h.add_(x)


TABLE: SwapTable = {
    cod_layers.FlattenDiTBlock: TritonFlattenDiTBlock,
    cod_layers.AttnBlock: TritonAttnBlock,
    cod_layers.ResnetBlock: TritonResnetBlock,
    cod_layers.RMSNorm: TritonRMSNorm,
    cod_pixel.NerfBlock: TritonNerfBlock,
    lite_cnn.LayerNorm2d: TritonLayerNorm2d,
    lite_cnn.DiCoBlock: TritonDiCoBlock,
    nn.GroupNorm: TritonGroupNorm,
    sodec_unet.TimestepEmbedding: TritonTimestepEmbedding,
    sodec_unet.ResnetBlock2D: TritonUNetResnetBlock2D,
    vae_kl.ResnetBlock2D: TritonVaeResnetBlock2D,
}
