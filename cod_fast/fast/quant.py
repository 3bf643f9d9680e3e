"""Opt-in int8 route for CPU: dynamic int8 quantization of the large Linears (fbgemm/x86 engine).

``quantize_int8(model)`` swaps, in place, every ``nn.Linear`` with at least ``min_features``
inputs and outputs for :class:`Int8Linear` (and the 1x1 convs of token-major ``CpuDiCoBlock``s
for :class:`Int8Conv1x1`), which keeps the fp32 parameters (state-dict keys and
weights unchanged) and adds a non-persistent pre-packed int8 copy:

* weights: symmetric per-output-channel int8 (scale = max|w_row| / 127), packed once;
* activations: quantized on the fly per call by ``torch.ops.quantized.linear_dynamic`` with one
  affine uint8 scale per tensor (min/max of that input), int32 accumulation, fp32 output + bias.
  Nothing is calibrated: the only input dependence is that per-tensor scale.

Tolerance (measured, not guaranteed; see BENCHMARKS.md "Optimized path (CPU)"): about 1.5-2.5 %
relative L2 error per Linear on Gaussian activations, more when a few activation channels are
outliers (the per-tensor activation scale is set by them). At model level the error compounds over
the layers; the tests bound it on tiny models (relative L2 < 0.1) and the benchmark prints it at
full size. This is why "cpu" stays fp32 by default and int8 is an explicit opt-in.

Only the x86/fbgemm quantized engines are supported; elsewhere ``quantize_int8`` raises
``NotImplementedError`` (documented and tested).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .swap import FastModule, swap_modules

__all__ = ["Int8Linear", "Int8Conv1x1", "quantize_int8", "int8_available"]

_ENGINES = ("x86", "fbgemm")


def int8_available() -> bool:
    """True when this torch build has an x86/fbgemm quantized engine (dynamic int8 linear)."""
    return any(e in torch.backends.quantized.supported_engines for e in _ENGINES)


def _pack(weight: torch.Tensor, bias: torch.Tensor | None) -> object:
    """Per-output-channel symmetric qint8 copy of ``weight`` (out, in), packed for fbgemm."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks quantized tensor constructors as deprecated
        qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
        b = None if bias is None else bias.detach().float()
        return torch.ops.quantized.linear_prepack(qw, b)


class Int8Linear(FastModule, nn.Linear):
    """``nn.Linear`` computed as an int8 x int8 GEMM with int32 accumulation (see module docstring).

    x (..., in_features) fp32 -> (..., out_features) fp32. Other dtypes or devices fall back to
    the fp32 Linear. The packed weights are rebuilt if the fp32 weight is modified in place.
    """

    fast_backend = "cpu"
    fast_reason = "int8 dynamic quantization (per-channel weights, per-tensor activations)"
    # uint8 activations x int8 weights: with 8-bit activations the AVX2 vpmaddubsw pair sum can
    # saturate int16; measured on the benchmark models the error is lower with the full range.
    reduce_range: bool = False

    def fast_prepare(self) -> None:
        self._int8_packed = _pack(self.weight, self.bias)
        self._int8_version = (self.weight._version, None if self.bias is None else self.bias._version)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or self.weight.dtype != torch.float32:
            return F.linear(x, self.weight, self.bias)
        version = (self.weight._version, None if self.bias is None else self.bias._version)
        if version != self._int8_version:
            self.fast_prepare()
        lead = x.shape[:-1]
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, x.shape[-1]).contiguous(),
                                               self._int8_packed, self.reduce_range)
        return y.reshape(*lead, self.out_features)


class Int8Conv1x1(FastModule, nn.Conv2d):
    """A 1x1, ungrouped ``nn.Conv2d`` with an int8 packed copy of its (out, in) weight matrix.

    ``linear_tokens(x (..., in) fp32) -> (..., out)`` is the int8 GEMM that the token-major
    ``CpuDiCoBlock`` calls; ``forward`` on an NCHW tensor stays the exact fp32 convolution.
    """

    fast_backend = "cpu"
    fast_reason = "int8 dynamic quantization of the 1x1 conv as a token-major GEMM"
    reduce_range: bool = False

    def fast_prepare(self) -> None:
        self._int8_packed = _pack(self.weight.flatten(1), self.bias)
        self._int8_version = (self.weight._version, None if self.bias is None else self.bias._version)

    def linear_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or self.weight.dtype != torch.float32:
            return F.linear(x, self.weight.flatten(1), self.bias)
        version = (self.weight._version, None if self.bias is None else self.bias._version)
        if version != self._int8_version:
            self.fast_prepare()
        lead = x.shape[:-1]
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, x.shape[-1]).contiguous(),
                                               self._int8_packed, self.reduce_range)
        return y.reshape(*lead, self.out_channels)


def _is_pointwise(m: nn.Conv2d) -> bool:
    return (m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
            and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros")


def quantize_int8(model: nn.Module, min_features: int = 256) -> nn.Module:
    """Swap, in place, the Linears of ``model`` with ``in_features`` and ``out_features`` both
    >= ``min_features`` for :class:`Int8Linear`; returns ``model``.

    Apply it to a copy (e.g. the result of ``optimize(model, "cpu")``): the swap changes the
    module classes of the tree it is given (parameters are shared, not changed).
    Raises ``NotImplementedError`` when no x86/fbgemm quantized engine is available.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_int8 takes an nn.Module, got {type(model).__name__}")
    if min_features < 1:
        raise ValueError(f"min_features must be >= 1, got {min_features}")
    if not int8_available():
        raise NotImplementedError(
            f"int8 route needs an x86/fbgemm quantized engine; this build has {torch.backends.quantized.supported_engines}")
    if torch.backends.quantized.engine not in _ENGINES:
        torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"

    def big(m: nn.Module) -> bool:
        return m.in_features >= min_features and m.out_features >= min_features  # type: ignore[operator]

    swap_modules(model, {nn.Linear: Int8Linear}, accept=big)
    # 1x1 convs only where a token-major fast block will call ``linear_tokens`` (elsewhere the
    # swap would change nothing): the GEMM convs of CoD-Lite's CpuDiCoBlock.
    from .cpu_blocks import CpuDiCoBlock  # local: import time (cpu_blocks imports every model package)

    for block in model.modules():
        if isinstance(block, CpuDiCoBlock):
            for conv in (block.conv1, block.conv3, block.conv4, block.conv5):
                if (type(conv) is nn.Conv2d and _is_pointwise(conv)
                        and conv.in_channels >= min_features and conv.out_channels >= min_features):
                    conv.__class__ = Int8Conv1x1
                    conv.fast_prepare()
    return model
