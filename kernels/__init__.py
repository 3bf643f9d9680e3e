"""Triton kernels of cod_fast, installed as ``cod_fast.kernels``.

One kernel family per module, each with its plain-torch reference function beside it.
Importing this package never requires Triton; kernel modules import it themselves.

Each kernel function has the same signature as its ``*_reference`` function, so a model can swap
one for the other. ``KERNELS`` maps a name to ``(kernel, reference, description)`` and imports the
kernel module (and Triton) only when an entry is read. Under the CPU interpreter set
``TRITON_INTERPRET=1`` before the first read. ``python -m cod_fast.kernels --compile-check``
compiles every kernel for sm_80, sm_86, sm_89 and sm_90 without a GPU.

Modules: rms_norm_modulate, qk_norm_rope, attention, swiglu, group_norm, layer_norm2d_modulate,
masked_conv, int_entropy_params.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping

__all__ = ["KERNELS", "KernelEntry"]

#: (kernel function, reference function, description)
KernelEntry = tuple[Callable[..., object], Callable[..., object], str]

# name -> (module, kernel function, reference function, description)
_SPECS: dict[str, tuple[str, str, str, str]] = {
    "rms_norm_modulate": (
        "rms_norm_modulate", "rms_norm_modulate", "rms_norm_modulate_reference",
        "RMSNorm(weight, eps) + adaLN modulate x*(1+scale)+shift; [B,T,C]"),
    "gated_residual_rms_norm_modulate": (
        "rms_norm_modulate", "gated_residual_rms_norm_modulate",
        "gated_residual_rms_norm_modulate_reference",
        "x = residual + gate*y, then RMSNorm + modulate of x; returns (x, h)"),
    "qk_norm_rope": (
        "qk_norm_rope", "qk_norm_rope", "qk_norm_rope_reference",
        "per-head RMSNorm + interleaved 2-D RoPE of q and k from qkv [B,N,3,H,D] -> [B,H,N,D]"),
    "attention": (
        "attention", "attention", "attention_reference",
        "FlashAttention-2 style non-causal attention [B,H,N,D], any head dim up to 2048"),
    "spatial_attention": (
        "attention", "spatial_attention", "spatial_attention_reference",
        "condition codec AttnBlock single-head attention on NCHW q/k/v maps"),
    "swiglu": ("swiglu", "swiglu", "swiglu_reference", "silu(a) * b"),
    "swiglu_packed": (
        "swiglu", "swiglu_packed", "swiglu_packed_reference", "silu(h1) * h3 for h = [h1 | h3]"),
    "group_norm": (
        "group_norm", "group_norm", "group_norm_reference",
        "GroupNorm (+ SiLU), NCHW or channels-last, two launches"),
    "layer_norm2d_modulate": (
        "layer_norm2d_modulate", "layer_norm2d_modulate", "layer_norm2d_modulate_reference",
        "channel LayerNorm on NCHW (no affine) + modulate"),
    "gated_residual_layer_norm2d_modulate": (
        "layer_norm2d_modulate", "gated_residual_layer_norm2d_modulate",
        "gated_residual_layer_norm2d_modulate_reference",
        "x = residual + gate*y, then LayerNorm2d + modulate of x; returns (x, h)"),
    "masked_conv2d": (
        "masked_conv", "masked_conv2d", "masked_conv2d_reference",
        "masked 'same' conv (raster A/B, checkerboard), implicit GEMM without masked taps"),
    "int_conv_requant": (
        "int_entropy_params", "int_conv_requant", "int_conv_requant_reference",
        "SODEC fixed-point layer: nearest up, int conv, int64 acc, (acc*m + 2^(s-1)) >> s, clamp"),
    "int_scale_index": (
        "int_entropy_params", "scale_index", "scale_index_reference",
        "SODEC scale-table index #{k : s_q > T[k]} of integer scale codes"),
    "int_entropy_params": (
        "int_entropy_params", "entropy_parameters", "entropy_parameters_reference",
        "SODEC integer hyper synthesis z -> (table indexes, mean codes), all layers"),
}


class _LazyRegistry(Mapping[str, KernelEntry]):
    """Read-only mapping that imports a kernel module on first access to one of its entries."""

    def __getitem__(self, name: str) -> KernelEntry:
        module, fn, ref, desc = _SPECS[name]
        mod = importlib.import_module(f"{__name__}.{module}")
        return getattr(mod, fn), getattr(mod, ref), desc

    def __iter__(self) -> Iterator[str]:
        return iter(_SPECS)

    def __len__(self) -> int:
        return len(_SPECS)


KERNELS: Mapping[str, KernelEntry] = _LazyRegistry()
