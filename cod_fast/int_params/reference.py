"""SODEC's entropy parameters in fixed-point arithmetic: the spec and its torch reference.

Everything that decides how the y bitstream is parsed (the scale-table index of every symbol) and
how y is reconstructed (the quantized mean) is computed here from integers only, so that every
backend (this torch reference, the C++ of ``csrc/sodec``, the Triton kernels in
``cod_fast.kernels.int_entropy_params``; dispatched by ``cod_fast.int_params.api``) and every
device give the same bits. This module imports only torch: it is the layer the kernels' own
references call. The float hyper synthesis is turned into these integers once, at
export time (``SodecHyperprior.export_integer_params``); the exported integers are the model.

Spec (also in ``docs/sodec_integer_params.md``)
-----------------------------------------------
Input: ``z_hat`` integer symbols [N, Cz, h, w], clamped to ``[-32767, 32767]`` (int16 range).

Layers l = 0..L-1, each an ``IntegerConv``:

* ``up`` in {1, 2}: nearest-neighbour upsampling of the input by ``up`` (pure index arithmetic:
  ``a_up[i, y, x] = a[i, y // up, x // up]``).
* stride-1 "same" convolution (odd kernel k, zero padding k // 2), weights ``w`` int8 range
  ``[-127, 127]`` (per output channel), bias ``b`` int64 in the accumulator domain:
  ``acc[o, p] = b[o] + sum_{i, ky, kx} w[o, i, ky, kx] * a_up[i, p + (ky - k//2, kx - k//2)]``.
* requantization per output channel with an integer multiplier ``m[o]`` in ``[1, 2**15)`` and a
  shift ``s[o]`` in ``[1, 62]``: ``q = (acc * m[o] + 2**(s[o] - 1)) >> s[o]`` where ``>>`` is the
  arithmetic shift, i.e. ``floor((acc * m + 2**(s-1)) / 2**s)``: round half up (towards +inf).
* clamp to ``[lo, hi]``: hidden layers use ``[0, 32767]`` (ReLU fused with the int16 clamp), the
  last layer ``[-2**31, 2**31 - 1]`` (int32).

Overflow (proof, for the limits ``validate`` enforces): activations entering a layer are in
int16 range (|a| <= 2**15 - 1; the input is clamped, hidden layers clamp to [0, 32767]), weights
|w| <= 127 < 2**7, reduction length K = Cin * k * k <= 2**20, |b| <= 2**40. Hence
|acc| <= 2**7 * 2**15 * 2**20 + 2**40 < 2**43, and |acc * m| < 2**43 * 2**15 = 2**58, plus the
rounding term 2**61 at most: < 2**63. Every backend accumulates in int64, so nothing overflows.

Head: the last layer has 2M channels. Channels [0, M) are the scale code ``s_q`` on the grid
``2**-scale_frac_bits``; channels [M, 2M) are the mean code ``m_q`` on the grid
``2**-mean_frac_bits``. The table index of a y symbol is
``idx = #{k : s_q > T[k]}`` for the integer thresholds ``T`` [n_scales - 1] (non-decreasing),
``T[k] = floor(t_k * 2**scale_frac_bits)`` for the table scales t_k, fixed at export. It is
CompressAI's "first table scale >= sigma" rule on the scale grid, with no float ``log`` or
comparison; scales at or below T[0] (including the lower bound 0.11) get index 0.

Symbols of y (``quantize_y``): the encoder first puts y on the mean grid,
``y_q = round_half_away_from_zero(y * 2**mean_frac_bits)`` clamped to ``[-2**40, 2**40]`` -- the
only float step, encoder-only, it never affects parsing -- then
``symbol = (y_q - m_q + 2**(F-1)) >> F`` with F = mean_frac_bits (round half up); the decoder
reconstructs ``y_hat = symbol + m_q * 2**-F`` (``dequantize_y``; exact in float32 while
|symbol| < 2**19). Symbols are clamped to int32 range minus a margin (``[-2**30, 2**30]``).

Checkerboard context (optional, ``IntegerEntropyParams.context``): two passes. Anchors (positions
with row + col even) are coded with the head above. Then the context input is
``c = clamp(symbol * 2**F + m_q, -32767, 32767)`` at anchors and 0 elsewhere (``context_input``),
one more ``IntegerConv`` (up 1, weights [2M, M, k, k] that are zero except at the taps with
ky + kx odd, so that a non-anchor reads only anchors; output on the head's grids, clamp int32)
gives ``ctx``, and ``head2 = clamp(head + ctx, -2**31, 2**31 - 1)`` (int64 sum) gives the table
index and mean of the non-anchor symbols by the same head rule. The overflow proof above covers
the context layer (its input is int16-range by the clamp). Every backend runs it
(``context_parameters``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "ACT_MAX",
    "INT32_MAX",
    "INT32_MIN",
    "IntegerConv",
    "IntegerEntropyParams",
    "anchor_mask",
    "check_z",
    "checkerboard_taps",
    "context_input",
    "dequantize_y",
    "entropy_parameters_reference",
    "integer_conv_reference",
    "quantize_y",
    "round_shift",
    "scale_index_reference",
    "thresholds_from_table",
    "validate_z",
]

#: Largest |activation| entering a layer (int16 range without -32768).
ACT_MAX = (1 << 15) - 1
#: Bounds the overflow proof relies on.
MAX_REDUCTION = 1 << 20
MAX_ABS_BIAS = 1 << 40
MAX_MULT = 1 << 15
MAX_SHIFT = 62
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
#: Symbols of y are clamped to this magnitude (fits int32 with room for the rANS escape code).
MAX_ABS_SYMBOL = 1 << 30
#: y on the mean grid is clamped to this magnitude before subtracting the mean.
MAX_ABS_YQ = 1 << 40


def round_shift(v: torch.Tensor, s: torch.Tensor | int) -> torch.Tensor:
    """``floor((v + 2**(s-1)) / 2**s)`` in int64 (round half towards +inf); v int64, s >= 1."""
    if v.dtype != torch.int64:
        raise TypeError(f"round_shift needs int64, got {v.dtype}")
    s = torch.as_tensor(s, dtype=torch.int64)
    # torch's >> on signed int64 is the arithmetic shift (floor division by 2**s).
    return (v + (torch.ones_like(s) << (s - 1))) >> s


@dataclass(frozen=True)
class IntegerConv:
    """One fixed-point layer: optional nearest upsampling, conv, requantization, clamp.

    weight: int32 [CO, CI, k, k] with values in [-127, 127], k odd; bias: int64 [CO];
    mult: int64 [CO] in [1, 2**15); shift: int64 [CO] in [1, 62]; up: 1 or 2; lo <= hi: clamp.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mult: torch.Tensor
    shift: torch.Tensor
    up: int
    lo: int
    hi: int

    def validate(self) -> None:
        """Raise ValueError/TypeError unless the layer is within the spec's proven bounds."""
        w, b, m, s = self.weight, self.bias, self.mult, self.shift
        for name, t, dt in (("weight", w, torch.int32), ("bias", b, torch.int64),
                            ("mult", m, torch.int64), ("shift", s, torch.int64)):
            if not isinstance(t, torch.Tensor) or t.dtype != dt:
                raise TypeError(f"IntegerConv.{name} must be a {dt} tensor")
            if t.device.type != "cpu":
                raise ValueError(f"IntegerConv.{name} must live on the CPU (backends copy it)")
        if w.dim() != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
            raise ValueError(f"weight must be [CO, CI, k, k] with odd k, got {tuple(w.shape)}")
        co, ci, k, _ = w.shape
        if ci * k * k > MAX_REDUCTION or co < 1 or ci < 1:
            raise ValueError(f"reduction length {ci * k * k} outside [1, {MAX_REDUCTION}]")
        if int(w.abs().max()) > 127:
            raise ValueError("weights must lie in [-127, 127]")
        for name, t in (("bias", b), ("mult", m), ("shift", s)):
            if t.shape != (co,):
                raise ValueError(f"{name} must be [{co}], got {tuple(t.shape)}")
        if int(b.abs().max()) > MAX_ABS_BIAS:
            raise ValueError("|bias| must be <= 2**40")
        if int(m.min()) < 1 or int(m.max()) >= MAX_MULT:
            raise ValueError("mult must lie in [1, 2**15)")
        if int(s.min()) < 1 or int(s.max()) > MAX_SHIFT:
            raise ValueError("shift must lie in [1, 62]")
        if self.up not in (1, 2):
            raise ValueError(f"up must be 1 or 2, got {self.up}")
        if not (INT32_MIN <= self.lo <= self.hi <= INT32_MAX):
            raise ValueError(f"clamp [{self.lo}, {self.hi}] must be an int32 interval")


@dataclass(frozen=True)
class IntegerEntropyParams:
    """The exported integer hyper synthesis: layers, head formats and scale thresholds.

    layers: IntegerConv, the last with 2 * n_channels outputs; thresholds: int64 [n_scales - 1],
    non-decreasing; scale_frac_bits / mean_frac_bits: the grids 2**-F of the scale and mean codes.
    Hidden layers must clamp into [0, 32767] or [-32767, 32767] (they feed the next layer).
    """

    layers: tuple[IntegerConv, ...]
    thresholds: torch.Tensor
    n_channels: int
    scale_frac_bits: int = 8
    mean_frac_bits: int = 4
    #: Optional checkerboard context layer (see "Checkerboard context" in the module docstring):
    #: weights [2M, M, k, k] zero outside the checkerboard taps, up = 1.
    context: IntegerConv | None = None

    def __post_init__(self) -> None:
        if len(self.layers) == 0:
            raise ValueError("at least one layer is needed")
        for i, layer in enumerate(self.layers):
            layer.validate()
            if i + 1 < len(self.layers):
                if layer.lo < -ACT_MAX or layer.hi > ACT_MAX:
                    raise ValueError(f"hidden layer {i} must clamp into int16 range")
                if self.layers[i + 1].weight.shape[1] != layer.weight.shape[0]:
                    raise ValueError(f"layer {i + 1} input channels do not match layer {i} outputs")
        if self.layers[-1].weight.shape[0] != 2 * self.n_channels:
            raise ValueError("the last layer must output 2 * n_channels channels (scales, means)")
        t = self.thresholds
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 1:
            raise TypeError("thresholds must be a 1-D int64 tensor")
        if t.numel() > 1 and bool((t[1:] < t[:-1]).any()):
            raise ValueError("thresholds must be non-decreasing")
        if not (0 <= self.scale_frac_bits <= 16 and 0 <= self.mean_frac_bits <= 16):
            raise ValueError("frac bits must lie in [0, 16]")
        if self.context is not None:
            ctx = self.context
            ctx.validate()
            m = self.n_channels
            if ctx.up != 1 or tuple(ctx.weight.shape[:2]) != (2 * m, m):
                raise ValueError(f"the context layer must map {m} to {2 * m} channels with up = 1")
            k = ctx.weight.shape[2]
            if bool((ctx.weight[:, :, _checkerboard_zero(k)] != 0).any()):
                raise ValueError("the context layer has weights outside the checkerboard taps")

    @property
    def in_channels(self) -> int:
        return int(self.layers[0].weight.shape[1])

    @property
    def upsampling(self) -> int:
        """Total spatial upsampling factor z -> y."""
        f = 1
        for layer in self.layers:
            f *= layer.up
        return f

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat dict of int64/int32 tensors (for safetensors and the model fingerprint)."""
        out: dict[str, torch.Tensor] = {
            "thresholds": self.thresholds,
            "meta": torch.tensor([len(self.layers), self.n_channels, self.scale_frac_bits,
                                  self.mean_frac_bits], dtype=torch.int64),
        }
        for i, layer in enumerate(self.layers):
            out[f"layers.{i}.weight"] = layer.weight
            out[f"layers.{i}.bias"] = layer.bias
            out[f"layers.{i}.mult"] = layer.mult
            out[f"layers.{i}.shift"] = layer.shift
            out[f"layers.{i}.meta"] = torch.tensor([layer.up, layer.lo, layer.hi], dtype=torch.int64)
        if self.context is not None:
            c = self.context
            out.update({"context.weight": c.weight, "context.bias": c.bias, "context.mult": c.mult,
                        "context.shift": c.shift,
                        "context.meta": torch.tensor([c.up, c.lo, c.hi], dtype=torch.int64)})
        return out

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "IntegerEntropyParams":
        """Inverse of ``state_dict``; raises ValueError/TypeError on a malformed dict."""
        try:
            n_layers, n_ch, fs, fm = (int(v) for v in sd["meta"].tolist())
            layers = []
            for i in range(n_layers):
                up, lo, hi = (int(v) for v in sd[f"layers.{i}.meta"].tolist())
                layers.append(IntegerConv(sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"],
                                          sd[f"layers.{i}.mult"], sd[f"layers.{i}.shift"], up, lo, hi))
            thresholds = sd["thresholds"]
            context = None
            if "context.meta" in sd:
                up, lo, hi = (int(v) for v in sd["context.meta"].tolist())
                context = IntegerConv(sd["context.weight"], sd["context.bias"], sd["context.mult"],
                                      sd["context.shift"], up, lo, hi)
        except KeyError as exc:
            raise ValueError(f"integer entropy parameters lack entry {exc}") from None
        return cls(tuple(layers), thresholds, n_ch, fs, fm, context)


def check_z(z_hat: torch.Tensor, params: IntegerEntropyParams) -> torch.Tensor:
    """Validate integer z symbols [N, Cz, h, w]; returns them clamped to int16 range, int64 CPU."""
    validate_z(z_hat, params)
    return z_hat.to(torch.int64).clamp(-ACT_MAX, ACT_MAX)


def validate_z(z_hat: torch.Tensor, params: IntegerEntropyParams) -> None:
    """Raise TypeError/ValueError unless z_hat is an integer tensor [N, Cz, h, w] of an accepted size
    (``check_z`` without the clamp: backends that clamp while reading z skip the int64 copy)."""
    if not isinstance(z_hat, torch.Tensor):
        raise TypeError(f"z_hat must be a torch.Tensor, got {type(z_hat).__name__}")
    if z_hat.dtype.is_floating_point or z_hat.dtype.is_complex or z_hat.dtype == torch.bool:
        raise TypeError(f"z_hat must hold integers (int32/int64), got {z_hat.dtype}")
    if z_hat.dim() != 4 or z_hat.shape[1] != params.in_channels:
        raise ValueError(f"z_hat must be [N, {params.in_channels}, h, w], got {tuple(z_hat.shape)}")
    if z_hat.shape[2] * z_hat.shape[3] * params.upsampling**2 > 1 << 26:
        raise ValueError(f"z_hat of shape {tuple(z_hat.shape)} is too large")


def integer_conv_reference(a: torch.Tensor, layer: IntegerConv) -> torch.Tensor:
    """One ``IntegerConv`` on int64 activations [N, CI, h, w] -> int64 [N, CO, h*up, w*up].

    The gather of the conv windows (``F.unfold``) runs on float64 holding integers with
    |a| <= 2**15 (exact: pure data movement of exactly representable values); the products and
    sums run in int64 (``torch.matmul`` on int64 tensors is exact integer arithmetic).
    """
    if layer.up > 1:
        a = a.repeat_interleave(layer.up, dim=2).repeat_interleave(layer.up, dim=3)
    n, ci, h, w = a.shape
    co, _, k, _ = layer.weight.shape
    cols = F.unfold(a.to(torch.float64), kernel_size=k, padding=k // 2).to(torch.int64)  # [N, CI*k*k, h*w]
    wmat = layer.weight.reshape(co, ci * k * k).to(torch.int64)
    acc = torch.matmul(wmat, cols) + layer.bias.view(1, co, 1)
    q = round_shift(acc * layer.mult.view(1, co, 1), layer.shift.view(1, co, 1))
    return q.clamp(layer.lo, layer.hi).reshape(n, co, h, w)


def scale_index_reference(s_q: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Table index of integer scale codes: ``#{k : s_q > T[k]}`` (int32, shape of s_q)."""
    # searchsorted(right=False) counts the sorted thresholds strictly below each value.
    return torch.searchsorted(thresholds, s_q.to(torch.int64).contiguous(), right=False).to(torch.int32)


def entropy_parameters_reference(
    params: IntegerEntropyParams, z_hat: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes int32 [N, M, H, W], means int32 [N, M, H, W] on the grid 2**-mean_frac_bits).

    z_hat: integer z symbols [N, Cz, h, w] (any device; computed on the CPU), H = h * upsampling.
    """
    a = check_z(z_hat, params).cpu()
    for layer in params.layers:
        a = integer_conv_reference(a, layer)
    m = params.n_channels
    indexes = scale_index_reference(a[:, :m], params.thresholds)
    return indexes, a[:, m:].to(torch.int32)


def quantize_y(y: torch.Tensor, means: torch.Tensor, mean_frac_bits: int) -> torch.Tensor:
    """Encoder side: int32 symbols ``(y_q - m_q + 2**(F-1)) >> F`` (see the module spec).

    y: float [N, M, H, W]; means: int32 mean codes, same shape.
    """
    if y.shape != means.shape:
        raise ValueError(f"y {tuple(y.shape)} and means {tuple(means.shape)} differ in shape")
    if not y.is_floating_point():
        raise TypeError("y must be a float tensor")
    scaled = y.detach().cpu().to(torch.float64) * float(1 << mean_frac_bits)
    if not bool(torch.isfinite(scaled).all()):
        raise ValueError("y must be finite")
    # Round half away from zero: sign(v) * floor(|v| + 1/2).
    y_q = (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)).clamp(-MAX_ABS_YQ, MAX_ABS_YQ)
    v = y_q.to(torch.int64) - means.cpu().to(torch.int64)
    sym = round_shift(v, mean_frac_bits) if mean_frac_bits > 0 else v
    return sym.clamp(-MAX_ABS_SYMBOL, MAX_ABS_SYMBOL).to(torch.int32)


def dequantize_y(symbols: torch.Tensor, means: torch.Tensor, mean_frac_bits: int) -> torch.Tensor:
    """Decoder side: ``y_hat = symbol + m_q * 2**-F`` as float32 [N, M, H, W]."""
    if symbols.shape != means.shape:
        raise ValueError("symbols and means differ in shape")
    v = symbols.to(torch.float64) + means.to(torch.float64) / float(1 << mean_frac_bits)
    return v.to(torch.float32)


def thresholds_from_table(scale_table: Sequence[float] | torch.Tensor, scale_frac_bits: int) -> torch.Tensor:
    """``T[k] = floor(t_k * 2**F)`` for every table scale but the last (int64 [n - 1]).

    Computed once at export from the float32 table (float64 product of a float32 by a power of
    two is exact); the result is stored with the model, so its float origin never reaches a
    decoder.
    """
    t = torch.as_tensor(scale_table, dtype=torch.float32).reshape(-1).to(torch.float64)
    if t.numel() < 1:
        raise ValueError("scale table must not be empty")
    return torch.floor(t[:-1] * float(1 << scale_frac_bits)).to(torch.int64)


# ---- checkerboard context (two-pass coding) ----------------------------------------------------

def checkerboard_taps(k: int) -> torch.Tensor:
    """bool [k, k]: the taps a checkerboard context conv keeps, ``(ky + kx)`` odd (He et al. 2021;
    ``kernels.masked_conv.conv_mask("checkerboard_A", k, k)``). k odd. The centre is never kept."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {k}")
    r = torch.arange(k)
    return (r.view(-1, 1) + r.view(1, -1)) % 2 == 1


def _checkerboard_zero(k: int) -> torch.Tensor:
    return ~checkerboard_taps(k)


def anchor_mask(height: int, width: int) -> torch.Tensor:
    """bool [height, width]: the anchor positions of the first pass, ``(row + col)`` even.

    A checkerboard context conv at a non-anchor position reads only positions of the other parity,
    i.e. anchors: it sees exactly what the first pass decoded.
    """
    r, c = torch.arange(height).view(-1, 1), torch.arange(width).view(1, -1)
    return (r + c) % 2 == 0


def context_input(symbols: torch.Tensor, means: torch.Tensor, mean_frac_bits: int) -> torch.Tensor:
    """The context conv's input from the decoded anchors: int32 [N, M, H, W].

    ``y_q = symbol * 2**F + m_q`` (y_hat on the mean grid, exact integers) at anchor positions,
    clamped to [-32767, 32767]; 0 at non-anchor positions. symbols, means: int [N, M, H, W].
    """
    if symbols.shape != means.shape or symbols.dim() != 4:
        raise ValueError("symbols and means must be [N, M, H, W] of one shape")
    y_q = symbols.cpu().to(torch.int64) * (1 << mean_frac_bits) + means.cpu().to(torch.int64)
    anchors = anchor_mask(symbols.shape[2], symbols.shape[3])
    return torch.where(anchors, y_q.clamp(-ACT_MAX, ACT_MAX), torch.zeros_like(y_q)).to(torch.int32)

