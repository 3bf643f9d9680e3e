"""Release 2 of the default model: its entropy parameters in fixed-point arithmetic.

Everything that decides how a default-model stream is parsed -- the z and y rANS tables, the
scale-table index of every y symbol -- and the mean every y symbol is coded around is computed
here from integers only, so that encoder and decoder agree bit for bit whatever the torch thread
count, process (DataLoader workers), CPU kind, BLAS or backend. Release 1 computed the same
quantities with the float32 hyper synthesis, whose last bits change with the thread count; its
``HYPERPRIOR_CHECK`` section then refused the stream (``docs/bitstream.md``, "Determinism").

This is SODEC's spec (``cod_fast.models.sodec.integer_params``, ``docs/sodec_integer_params.md``)
reused, not a second one: the layers are SODEC ``IntegerConv``s run by SODEC's ``backend_conv``
("reference" torch int64, "cpp", "triton": identical integers), the table index is SODEC's
``#{k : s_q > T[k]}`` (``backend_scale_index``) and the y symbols are SODEC's ``quantize_y`` /
``dequantize_y``. The default model's hyper synthesis needs four extensions, all pure integer
steps done in torch int64 for every backend:

* **transposed convolutions as polyphase convolutions**: ``ConvTranspose2d(k=5, stride=2,
  padding=2, output_padding=1)`` equals a stride-1 3x3 "same" convolution with ``4 * CO``
  outputs (one per output phase (ry, rx), taps ``W[ci, co, ry + 2 - 2 dy, rx + 2 - 2 dx]`` for
  dy, dx in {-1, 0, 1}, zero where out of range) followed by depth-to-space by 2 (output channel
  ``co * 4 + ry * 2 + rx`` goes to ``(co, 2 i + ry, 2 j + rx)``; ``depth_to_space``, pure data
  movement). So the layer is an ``IntegerConv`` with ``up = 1`` and ``shuffle = 2``;
* **GELU by table**: hidden layers clamp to ``[-32767, 32767]`` (allowed by the spec) and the
  activation is ``a = lut[q + 32767]``, an int32 table of 65535 entries per layer,
  ``round(gelu(v * 2**-f) * 2**f)`` computed once at export (float64) and stored: ``|gelu(x)|
  <= |x|`` keeps ``a`` in int16 range, so SODEC's overflow proof holds unchanged;
* **the head**: the last layer (1x1, 2M outputs, clamp ``[-32767, 32767]``) gives the raw scale
  code ``r_s`` (grid ``2**-f_s``) and the raw mean code ``r_m`` (grid ``2**-f_m``). Then
  ``sp = softplus_lut[r_s + 32767]`` (grid ``2**-softplus_frac_bits``), and with the rate level's
  integer gain ``G[c]`` (grid ``2**-gain_frac_bits``, below):
  ``s_q = round_shift(sp * G + c_min, softplus_frac_bits + gain_frac_bits - scale_frac_bits)``
  (``c_min = round(0.11 * 2**(softplus_frac_bits + gain_frac_bits))``, the float model's
  ``+ 0.11`` on the product's fine grid, so that a scale just above 0.11 gets table 1 as in the
  float model; ``scale_frac_bits`` = 16), clamped to int32,
  and ``m_q = round_shift(r_m * G, f_m + gain_frac_bits - mean_frac_bits)``, clamped to int32.
  Bounds: ``|sp| < 2**31``, ``G < 2**21`` (``validate``), so ``|sp * G| < 2**52``;
  ``|r_m * G| < 2**15 * 2**21``: int64 throughout;
* **the gain of a (fractional) rate level, in integers**: ``log2_gain`` int64 [levels, M] is
  ``round(log2(gain) * 2**16)`` for the integer levels. For a stream's float32 quality q (checked
  finite, in [0, levels - 1]): ``lo = floor(q)``, ``t16 = floor((q - lo) * 2**16 + 1/2)`` (exact
  in IEEE double: q - lo and the power-of-two product are exact), ``L = L[lo] + round_shift((L[lo
  + 1] - L[lo]) * t16, 16)`` (the model's geometric interpolation, in the log domain), and
  ``G = exp2_fixed(L)``: with ``n = L >> 16`` and ``f = L & 0xffff``,
  ``mant = round_shift(exp2_hi[f >> 8] * exp2_lo[f & 255], 30)`` (two stored int64 tables of
  ``round(2**(j * 256 / 65536) * 2**30)`` and ``round(2**(j / 65536) * 2**30)``), then ``mant``
  moved from the grid ``2**-30`` to ``2**-gain_frac_bits`` by ``2**n`` (``round_shift`` or a left
  shift).

**Checkerboard context** (release 3, optional: ``DefaultIntegerParams.context``; the float
model's ``CheckerboardContext``). Two passes over the y grid. Pass one: the indexes and means
above, used at the anchors (row + col even). Then the context input, at anchors only (0
elsewhere), is the anchors' y_hat in the gain-free domain on the grid ``2**-context_frac_bits``:
``u = clamp(round_shift((symbol * 2**F + m_q) * Ginv, F + gain_frac_bits - context_frac_bits),
-32767, 32767)`` with F = mean_frac_bits and ``Ginv = exp2_fixed(-L)`` (the inverse gain code:
the same exp2 tables and grid as ``G``, for the negated interpolated log2 gain). Two more
``IntegerConv``s run on it: ``c0`` (k x k, M -> C, weights zero outside the checkerboard taps ky
+ kx odd, so that a non-anchor reads only anchors; clamp [-32767, 32767]) then ``a =
context_lut[q + 32767]`` (GELU by table, as above), then ``c1`` (1x1, C -> 2M, clamp [-32767,
32767], on the head's raw grids ``2**-f_s`` / ``2**-f_m``). The non-anchors' raw head is
``clamp(head + c1, -32767, 32767)`` (int64 sum), and their indexes and means follow from it by the
head rule above (pass two). Bounds: ``|symbol * 2**F + m_q| < 2**39`` and ``Ginv < 2**21``, so
the product stays below 2**60; the two layers are within SODEC's proof (int16-range inputs).
A zero ``c1`` (a fresh context) gives pass two = pass one: the symbols of release 2.

The z tables (the factorized prior) and the y tables (CompressAI's 64 Gaussian scales) are stored
as the integers the rANS coder uses, not rebuilt from float maths at load.

Export (``export_integer_params``, run once by ``tools/export_default_int.py``; the integers are
committed in ``cod_fast/weights/default_int.safetensors`` and are the model): per layer in
float64, per output channel weight scale ``s_o = max|w_o| / 127``, ``w_q = round(w / s_o)``, the
layer's output grid the largest power of two with ``max|pre-activation| * headroom <= 32767`` on
a calibration set of z, requantization ``m = round(r * 2**s)``, ``s = 14 - floor(log2 r)`` for
``r = s_o * 2**(f_out - f_in)`` -- SODEC's rule (``docs/sodec_integer_params.md``, "Export").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from cod_fast.entropy import CdfTables, GaussianConditionalTables
from cod_fast.int_params.reference import anchor_mask, checkerboard_taps
from cod_fast.models.sodec.integer_params import (
    ACT_MAX,
    BACKENDS,
    INT32_MAX,
    INT32_MIN,
    IntegerConv,
    backend_conv,
    backend_scale_index,
    dequantize_y,
    quantize_y,
    round_shift,
    thresholds_from_table,
)

from .entropy_models import TAIL_MASS

__all__ = [
    "BACKENDS",
    "DefaultIntegerParams",
    "checkerboard_merge",
    "checkerboard_split",
    "context_input",
    "head_codes",
    "hyper_features",
    "inverse_gain_codes",
    "IntegerEntropyModel",
    "depth_to_space",
    "dequantize_y",
    "entropy_parameters",
    "export_integer_params",
    "gain_codes",
    "polyphase_weights",
    "quality_code",
    "quantize_y",
]

#: Size of the activation tables: every int16 value but -32768.
LUT_SIZE = 2 * ACT_MAX + 1
#: Grid of the stored log2 gains and of the interpolation weight.
LOG2_FRAC_BITS = 16
#: Grid of the exp2 tables.
EXP2_FRAC_BITS = 30
#: Largest gain code (bound used by the overflow argument).
MAX_GAIN_CODE = 1 << 21
#: The float model's lower bound on the scales (``entropy_models.SCALE_MIN``), as float32.
SCALE_MIN_F32 = float(torch.tensor(0.11, dtype=torch.float32))


def depth_to_space(a: torch.Tensor, r: int) -> torch.Tensor:
    """[N, C * r * r, h, w] -> [N, C, h * r, w * r], channel ``c * r * r + ry * r + rx`` to
    position ``(r * i + ry, r * j + rx)`` (``F.pixel_shuffle``'s order), any dtype (data movement)."""
    if r == 1:
        return a
    n, c4, h, w = a.shape
    if c4 % (r * r):
        raise ValueError(f"{c4} channels do not split into {r}x{r} phases")
    c = c4 // (r * r)
    return a.reshape(n, c, r, r, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, h * r, w * r)


def polyphase_weights(w: torch.Tensor) -> torch.Tensor:
    """Weights [CI, CO, 5, 5] of ``ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1)``
    -> weights [4 * CO, CI, 3, 3] of the equivalent 3x3 "same" convolution whose output, through
    ``depth_to_space(., 2)``, is the transposed convolution's (module docstring). Any float dtype."""
    ci, co, k, k2 = w.shape
    if (k, k2) != (5, 5):
        raise ValueError(f"expected a 5x5 transposed-convolution kernel, got {tuple(w.shape)}")
    out = torch.zeros(co, 2, 2, ci, 3, 3, dtype=w.dtype)
    for ry in range(2):
        for rx in range(2):
            for ty in range(3):
                for tx in range(3):
                    ky, kx = ry + 2 - 2 * (ty - 1), rx + 2 - 2 * (tx - 1)
                    if 0 <= ky < 5 and 0 <= kx < 5:
                        out[:, ry, rx, :, ty, tx] = w[:, :, ky, kx].t()
    return out.reshape(4 * co, ci, 3, 3)


@dataclass(frozen=True)
class DefaultIntegerParams:
    """Release 2's integer entropy model (module docstring for the spec).

    layers: SODEC ``IntegerConv``s (all clamp into [-32767, 32767]); shuffle: depth-to-space
    factor after each layer (1 or 2); act_luts: int32 [65535] activation table after each hidden
    layer; softplus_lut: int32 [65535]; raw_mean_frac_bits: f_m; log2_gain: int64 [levels, M];
    exp2_hi, exp2_lo: int64 [256]; thresholds: int64 [n_scales - 1]; scale_min_code: c_min
    (grid 2**-(softplus_frac_bits + gain_frac_bits), below 2**40);
    z_cdf/z_cdf_length/z_offset, y_cdf/y_cdf_length/y_offset: the rANS tables (int32).
    """

    layers: tuple[IntegerConv, ...]
    shuffle: tuple[int, ...]
    act_luts: tuple[torch.Tensor, ...]
    softplus_lut: torch.Tensor
    log2_gain: torch.Tensor
    exp2_hi: torch.Tensor
    exp2_lo: torch.Tensor
    thresholds: torch.Tensor
    tables: tuple[torch.Tensor, ...]  # z_cdf, z_cdf_length, z_offset, y_cdf, y_cdf_length, y_offset
    n_channels: int
    raw_mean_frac_bits: int
    softplus_frac_bits: int
    scale_min_code: int
    scale_frac_bits: int = 16
    mean_frac_bits: int = 8
    gain_frac_bits: int = 16
    #: Release 3's checkerboard context (module docstring): layers (c0, c1), the GELU table after
    #: c0 (int32 [65535]) and the grid 2**-context_frac_bits of its input. None: no context.
    context: tuple[IntegerConv, IntegerConv] | None = None
    context_lut: torch.Tensor | None = None
    context_frac_bits: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError/TypeError unless every bound the overflow argument uses holds."""
        n = len(self.layers)
        if n < 1 or len(self.shuffle) != n or len(self.act_luts) != n - 1:
            raise ValueError("need one shuffle per layer and one activation table per hidden layer")
        ch = None
        for i, (layer, r) in enumerate(zip(self.layers, self.shuffle)):
            layer.validate()
            if layer.lo < -ACT_MAX or layer.hi > ACT_MAX:
                raise ValueError(f"layer {i} must clamp into [-32767, 32767]")
            if r not in (1, 2) or layer.weight.shape[0] % (r * r):
                raise ValueError(f"layer {i}: shuffle must be 1 or 2 and divide the outputs")
            if ch is not None and layer.weight.shape[1] != ch:
                raise ValueError(f"layer {i} input channels do not match the previous layer")
            ch = layer.weight.shape[0] // (r * r)
        if ch != 2 * self.n_channels or self.shuffle[-1] != 1:
            raise ValueError("the last layer must output 2 * n_channels channels, unshuffled")
        for name, t, dt, shape in (
            *((f"act_luts[{i}]", t, torch.int32, (LUT_SIZE,)) for i, t in enumerate(self.act_luts)),
            ("softplus_lut", self.softplus_lut, torch.int32, (LUT_SIZE,)),
            ("exp2_hi", self.exp2_hi, torch.int64, (256,)),
            ("exp2_lo", self.exp2_lo, torch.int64, (256,)),
        ):
            if not isinstance(t, torch.Tensor) or t.dtype != dt or tuple(t.shape) != shape:
                raise TypeError(f"{name} must be a {dt} tensor of shape {shape}")
        for t in self.act_luts:
            if int(t.abs().max()) > ACT_MAX:
                raise ValueError("activation tables must map into [-32767, 32767]")
        if int(self.softplus_lut.min()) < 0:
            raise ValueError("softplus table must be non-negative")
        e = torch.cat([self.exp2_hi, self.exp2_lo])
        if int(e.min()) < (1 << EXP2_FRAC_BITS) or int(e.max()) >= (1 << (EXP2_FRAC_BITS + 1)):
            raise ValueError("exp2 tables must lie in [2**30, 2**31)")
        g = self.log2_gain
        if g.dtype != torch.int64 or g.dim() != 2 or g.shape[1] != self.n_channels or g.shape[0] < 1:
            raise TypeError(f"log2_gain must be int64 [levels, {self.n_channels}]")
        # gain codes G = 2**(L / 2**16) * 2**gain_frac_bits must lie in [1, MAX_GAIN_CODE)
        top = (MAX_GAIN_CODE.bit_length() - 2 - self.gain_frac_bits) << LOG2_FRAC_BITS
        if int(g.max()) > top or int(g.min()) < -(self.gain_frac_bits << LOG2_FRAC_BITS):
            raise ValueError("log2 gains out of the range the gain codes allow")
        t = self.thresholds
        if t.dtype != torch.int64 or t.dim() != 1 or (t.numel() > 1 and bool((t[1:] < t[:-1]).any())):
            raise ValueError("thresholds must be a non-decreasing 1-D int64 tensor")
        if not (0 <= self.scale_frac_bits <= 16 and 0 <= self.mean_frac_bits <= 16 and 1 <= self.gain_frac_bits <= 20):
            raise ValueError("frac bits out of range")
        if not (0 <= self.softplus_frac_bits <= 24 and -8 <= self.raw_mean_frac_bits <= 24):
            raise ValueError("head frac bits out of range")
        if self.softplus_frac_bits + self.gain_frac_bits - self.scale_frac_bits < 1 or \
                self.raw_mean_frac_bits + self.gain_frac_bits - self.mean_frac_bits < 1:
            raise ValueError("head shifts must be >= 1")
        if not (0 <= self.scale_min_code < (1 << 40)):
            raise ValueError("scale_min_code out of range")
        if int(self.softplus_lut.max()) >= (1 << 31):
            raise ValueError("softplus table exceeds int32")
        if len(self.tables) != 6:
            raise ValueError("tables must be (z_cdf, z_cdf_length, z_offset, y_cdf, y_cdf_length, y_offset)")
        if self.context is not None:
            self._validate_context()

    def _validate_context(self) -> None:
        m, head = self.n_channels, self.layers[-1]
        if head.weight.shape[-1] != 1 or head.up != 1 or self.shuffle[-1] != 1:
            raise ValueError("the checkerboard context needs a 1x1 head (per-position, banded)")
        if not isinstance(self.context, tuple) or len(self.context) != 2:
            raise TypeError("context must be a pair of IntegerConv (c0, c1)")
        c0, c1 = self.context
        for name, layer in (("c0", c0), ("c1", c1)):
            layer.validate()
            if layer.up != 1 or layer.lo < -ACT_MAX or layer.hi > ACT_MAX:
                raise ValueError(f"context layer {name} must have up = 1 and clamp into [-32767, 32767]")
        k = c0.weight.shape[-1]
        if c0.weight.shape[1] != m or bool((c0.weight[:, :, ~checkerboard_taps(k)] != 0).any()):
            raise ValueError(f"context layer c0 must read {m} channels through the checkerboard taps only")
        if tuple(c1.weight.shape) != (2 * m, c0.weight.shape[0], 1, 1):
            raise ValueError(f"context layer c1 must be 1x1 from {c0.weight.shape[0]} to {2 * m} channels")
        lut = self.context_lut
        if not isinstance(lut, torch.Tensor) or lut.dtype != torch.int32 or tuple(lut.shape) != (LUT_SIZE,):
            raise TypeError(f"context_lut must be an int32 tensor of shape ({LUT_SIZE},)")
        if int(lut.abs().max()) > ACT_MAX:
            raise ValueError("context_lut must map into [-32767, 32767]")
        if not (0 <= self.context_frac_bits <= 16 and
                self.mean_frac_bits + self.gain_frac_bits - self.context_frac_bits >= 1):
            raise ValueError("context_frac_bits out of range")
        # inverse gain codes 2**(-L / 2**16) must lie in the same range as the gain codes
        g = self.log2_gain
        top = (MAX_GAIN_CODE.bit_length() - 2 - self.gain_frac_bits) << LOG2_FRAC_BITS
        if int(-g.min()) > top or int(-g.max()) < -(self.gain_frac_bits << LOG2_FRAC_BITS):
            raise ValueError("log2 gains out of the range the inverse gain codes allow")

    @property
    def levels(self) -> int:
        return int(self.log2_gain.shape[0])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat dict of integer tensors (``default_int.safetensors``, the model fingerprint)."""
        out: dict[str, torch.Tensor] = {
            "meta": torch.tensor([len(self.layers), self.n_channels, self.raw_mean_frac_bits,
                                  self.softplus_frac_bits, self.scale_min_code, self.scale_frac_bits,
                                  self.mean_frac_bits, self.gain_frac_bits], dtype=torch.int64),
            "softplus_lut": self.softplus_lut, "log2_gain": self.log2_gain,
            "exp2_hi": self.exp2_hi, "exp2_lo": self.exp2_lo, "thresholds": self.thresholds,
        }
        for name, t in zip(("z_cdf", "z_cdf_length", "z_offset", "y_cdf", "y_cdf_length", "y_offset"), self.tables):
            out[f"tables.{name}"] = t
        for i, layer in enumerate(self.layers):
            out[f"layers.{i}.weight"] = layer.weight.to(torch.int8)  # [-127, 127]: stored as int8
            out[f"layers.{i}.bias"] = layer.bias
            out[f"layers.{i}.mult"] = layer.mult
            out[f"layers.{i}.shift"] = layer.shift
            out[f"layers.{i}.meta"] = torch.tensor([layer.up, layer.lo, layer.hi, self.shuffle[i]], dtype=torch.int64)
            if i < len(self.act_luts):
                out[f"layers.{i}.act_lut"] = self.act_luts[i].to(torch.int16)  # int16 range by validate
        if self.context is not None:  # release 3 only: release 2's dict is unchanged
            out["context.meta"] = torch.tensor([self.context_frac_bits], dtype=torch.int64)
            out["context.act_lut"] = self.context_lut.to(torch.int16)
            for i, layer in enumerate(self.context):
                out[f"context.{i}.weight"] = layer.weight.to(torch.int8)
                out[f"context.{i}.bias"] = layer.bias
                out[f"context.{i}.mult"] = layer.mult
                out[f"context.{i}.shift"] = layer.shift
                out[f"context.{i}.meta"] = torch.tensor([layer.up, layer.lo, layer.hi], dtype=torch.int64)
        return out

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> DefaultIntegerParams:
        """Inverse of ``state_dict``; ValueError/TypeError on a malformed dict."""
        try:
            n_layers, n_ch, fm, fsp, cmin, sfb, mfb, gfb = (int(v) for v in sd["meta"].tolist())
            layers, shuffle, luts = [], [], []
            for i in range(n_layers):
                up, lo, hi, r = (int(v) for v in sd[f"layers.{i}.meta"].tolist())
                layers.append(IntegerConv(_int(sd[f"layers.{i}.weight"], torch.int8), sd[f"layers.{i}.bias"],
                                          sd[f"layers.{i}.mult"], sd[f"layers.{i}.shift"], up, lo, hi))
                shuffle.append(r)
                if i + 1 < n_layers:
                    luts.append(_int(sd[f"layers.{i}.act_lut"], torch.int16))
            tables = tuple(sd[f"tables.{n}"] for n in ("z_cdf", "z_cdf_length", "z_offset", "y_cdf",
                                                         "y_cdf_length", "y_offset"))
            ctx: dict[str, Any] = {}
            if "context.meta" in sd:
                convs = []
                for i in range(2):
                    up, lo, hi = (int(v) for v in sd[f"context.{i}.meta"].tolist())
                    convs.append(IntegerConv(_int(sd[f"context.{i}.weight"], torch.int8), sd[f"context.{i}.bias"],
                                             sd[f"context.{i}.mult"], sd[f"context.{i}.shift"], up, lo, hi))
                ctx = {"context": tuple(convs), "context_lut": _int(sd["context.act_lut"], torch.int16),
                       "context_frac_bits": int(sd["context.meta"][0])}
            return cls(tuple(layers), tuple(shuffle), tuple(luts), sd["softplus_lut"], sd["log2_gain"],
                       sd["exp2_hi"], sd["exp2_lo"], sd["thresholds"], tables, n_ch, fm, fsp, cmin, sfb, mfb, gfb,
                       **ctx)
        except KeyError as exc:
            raise ValueError(f"default-model integer parameters lack entry {exc}") from None


def _int(t: torch.Tensor, stored: torch.dtype) -> torch.Tensor:
    """A stored narrow integer tensor widened to int32 (TypeError for any other dtype)."""
    if not isinstance(t, torch.Tensor) or t.dtype != stored:
        raise TypeError(f"expected a stored {stored} tensor, got {getattr(t, 'dtype', type(t))}")
    return t.to(torch.int32)


def quality_code(quality: float, levels: int) -> tuple[int, int]:
    """``(lo, t16)`` of a rate level: ``lo = floor(q)``, ``t16`` the interpolation weight on the
    grid 2**-16 (exact IEEE double arithmetic on the stream's float32 q); q == levels - 1 gives
    ``(levels - 1, 0)``. ValueError outside [0, levels - 1]."""
    q = float(quality)
    if not (math.isfinite(q) and 0.0 <= q <= levels - 1):
        raise ValueError(f"quality must lie in [0, {levels - 1}], got {quality}")
    lo = min(math.floor(q), levels - 1)
    t16 = math.floor((q - lo) * (1 << LOG2_FRAC_BITS) + 0.5)
    if t16 >= 1 << LOG2_FRAC_BITS:  # rounds up to the next level
        lo, t16 = lo + 1, 0
    return lo, t16


def gain_codes(params: DefaultIntegerParams, quality: float) -> torch.Tensor:
    """Integer gains ``G`` int64 [M] of rate level ``quality`` on the grid 2**-gain_frac_bits."""
    return _exp2_codes(params, _log2_gain(params, quality))


def inverse_gain_codes(params: DefaultIntegerParams, quality: float) -> torch.Tensor:
    """Integer inverse gains ``Ginv = exp2_fixed(-L)`` int64 [M] of rate level ``quality`` (grid
    2**-gain_frac_bits): the gain-free domain of the checkerboard context's input."""
    return _exp2_codes(params, -_log2_gain(params, quality))


def _log2_gain(params: DefaultIntegerParams, quality: float) -> torch.Tensor:
    """The interpolated log2 gain ``L`` int64 [M] (grid 2**-16) of rate level ``quality``."""
    lo, t16 = quality_code(quality, params.levels)
    g = params.log2_gain
    hi = min(lo + 1, params.levels - 1)
    return g[lo] + round_shift((g[hi] - g[lo]) * t16, LOG2_FRAC_BITS) if t16 else g[lo].clone()


def _exp2_codes(params: DefaultIntegerParams, log2: torch.Tensor) -> torch.Tensor:
    """``exp2_fixed(log2)``: int64 [M] on the grid 2**-gain_frac_bits (module docstring)."""
    n = log2 >> LOG2_FRAC_BITS  # floor
    f = log2 & ((1 << LOG2_FRAC_BITS) - 1)
    mant = round_shift(params.exp2_hi[f >> 8] * params.exp2_lo[f & 255], EXP2_FRAC_BITS)  # grid 2**-30
    down = EXP2_FRAC_BITS - params.gain_frac_bits - n  # >= 1 by validate's range of log2_gain
    return round_shift(mant, down)


def entropy_parameters(
    params: DefaultIntegerParams, z_sym: torch.Tensor, quality: float, backend: str = "reference"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indexes, means)`` int32 [N, M, 4h, 4w] CPU from integer z symbols [N, Nz, h, w] at rate
    level ``quality``: table index of every y symbol and its mean code (grid 2**-mean_frac_bits).

    ``backend``: "reference" (torch int64), "cpp" or "triton" for the convolutions (SODEC's
    ``backend_conv``); the rest runs in torch int64 for all. Every backend gives the same integers.
    With a checkerboard context these are pass one's (the anchors'): ``head_codes`` gives pass two's.
    """
    return head_codes(params, hyper_features(params, z_sym, backend), quality, backend)


def hyper_features(params: DefaultIntegerParams, z_sym: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """The hyper synthesis up to its head: int64 [N, C, 4h, 4w] CPU, the input of the 1x1 head
    (or, for a head of another shape, the head's raw output [N, 2M, 4h, 4w]). ``head_codes``
    turns it into indexes and means; both passes of the checkerboard share it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(z_sym, torch.Tensor) or z_sym.dtype.is_floating_point or z_sym.dtype == torch.bool:
        raise TypeError("z_sym must be an integer tensor")
    if z_sym.dim() != 4 or z_sym.shape[1] != params.layers[0].weight.shape[1]:
        raise ValueError(f"z_sym must be [N, {params.layers[0].weight.shape[1]}, h, w], got {tuple(z_sym.shape)}")
    a = z_sym.cpu().to(torch.int64).clamp(-ACT_MAX, ACT_MAX)
    n_layers = len(params.layers)
    stop = n_layers - 1 if _banded(params) else n_layers
    for i, (layer, r) in enumerate(zip(params.layers[:stop], params.shuffle)):
        a = depth_to_space(backend_conv(a, layer, backend), r).to(torch.int64)
        if i + 1 < n_layers:
            a = params.act_luts[i].to(torch.int64)[a + ACT_MAX]
    return a


def _banded(params: DefaultIntegerParams) -> bool:
    head = params.layers[-1]
    return head.weight.shape[-1] == 1 and params.shuffle[-1] == 1 and head.up == 1


#: The position sets of ``head_codes``: every position, the anchors, the non-anchors.
PARTS = ("all", "anchors", "non_anchors")


def checkerboard_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, C, H, W] (H, W even) -> (anchors, non-anchors), each [N, C, H, W / 2]: row r of each
    holds that row's positions of the set (anchors: row + col even) left to right, so a
    flattened half lists its set in raster order (channel, row, column). Data movement only."""
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"the checkerboard split needs an even grid, got {h}x{w}")
    x6 = x.reshape(n, c, h // 2, 2, w // 2, 2)
    anchors = torch.stack([x6[:, :, :, 0, :, 0], x6[:, :, :, 1, :, 1]], dim=3).reshape(n, c, h, w // 2)
    others = torch.stack([x6[:, :, :, 0, :, 1], x6[:, :, :, 1, :, 0]], dim=3).reshape(n, c, h, w // 2)
    return anchors, others


def checkerboard_merge(anchors: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Inverse of ``checkerboard_split``: two [N, C, H, W / 2] -> [N, C, H, W]."""
    n, c, h, w2 = anchors.shape
    a = anchors.reshape(n, c, h // 2, 2, w2)
    o = others.reshape(n, c, h // 2, 2, w2)
    out = torch.empty((n, c, h // 2, 2, w2, 2), dtype=anchors.dtype)
    out[:, :, :, 0, :, 0], out[:, :, :, 1, :, 1] = a[:, :, :, 0], a[:, :, :, 1]
    out[:, :, :, 0, :, 1], out[:, :, :, 1, :, 0] = o[:, :, :, 0], o[:, :, :, 1]
    return out.reshape(n, c, h, 2 * w2)


def head_codes(params: DefaultIntegerParams, features: torch.Tensor, quality: float, backend: str = "reference",
               y_ctx: torch.Tensor | None = None, part: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """``(indexes, means)`` int32 from ``hyper_features`` [N, C, H, W]: at every position
    ([N, M, H, W], ``part="all"``), or at the anchors / the non-anchors only, packed as
    ``checkerboard_split`` packs them ([N, M, H, W / 2]). ``y_ctx`` (``context_input``, int32
    [N, M, H, W]; only with ``part="non_anchors"``): pass two of the checkerboard context. The
    head (1x1) and the context run on row bands of the y grid (exact integers; bounds the int64
    temporaries, 2M channels wide); the context's k x k layer reads a halo of k // 2 rows around
    each band, and its 1x1 layer runs only where its output is used."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    g = gain_codes(params, quality).view(1, -1, 1, 1)
    n, _, h, w = features.shape
    if y_ctx is not None:
        if params.context is None or part != "non_anchors":
            raise ValueError("y_ctx is pass two's input: it needs a checkerboard context and part='non_anchors'")
        if tuple(y_ctx.shape) != (n, params.n_channels, h, w):
            raise ValueError(f"y_ctx must be [{n}, {params.n_channels}, {h}, {w}], got {tuple(y_ctx.shape)}")
    if not _banded(params):
        if part != "all":
            raise ValueError("the checkerboard parts need a 1x1 head")
        return _head_codes(params, features, g, backend)
    if part != "all":
        features = checkerboard_split(features)[part == "non_anchors"]
        w = w // 2
    head = params.layers[-1]
    m = params.n_channels
    idx = torch.empty((n, m, h, w), dtype=torch.int32)
    means = torch.empty((n, m, h, w), dtype=torch.int32)
    rows = max(2, HEAD_BAND_POSITIONS // max(1, n * w))
    rows += rows % 2  # bands start on even rows: the checkerboard split of a band is the band of the split
    for r0 in range(0, h, rows):
        r1 = min(r0 + rows, h)
        raw = backend_conv(features[:, :, r0:r1].contiguous(), head, backend).to(torch.int64)
        if y_ctx is not None:
            raw = (raw + _context_rows(params, y_ctx, r0, r1, backend)).clamp(-ACT_MAX, ACT_MAX)
        idx[:, :, r0:r1], means[:, :, r0:r1] = _head_codes(params, raw, g, backend)
    return idx, means


def _context_rows(params: DefaultIntegerParams, y_ctx: torch.Tensor, r0: int, r1: int,
                  backend: str) -> torch.Tensor:
    """The context's output (c1) int64 [N, 2M, r1 - r0, W / 2] at the non-anchors of rows [r0, r1)
    (r0 even) of the y grid, from the input rows [r0 - k//2, r1 + k//2) (clipped at the grid's
    edges, where the convolution's zero padding is the grid's)."""
    c0, c1 = params.context
    p = c0.weight.shape[-1] // 2
    s0, s1 = max(0, r0 - p), min(int(y_ctx.shape[2]), r1 + p)
    a = backend_conv(y_ctx[:, :, s0:s1].contiguous(), c0, backend).to(torch.int64)[:, :, r0 - s0: r1 - s0]
    a = params.context_lut.to(torch.int64)[checkerboard_split(a)[1] + ACT_MAX]
    return backend_conv(a.contiguous(), c1, backend).to(torch.int64)


def context_input(params: DefaultIntegerParams, symbols: torch.Tensor, means: torch.Tensor,
                  quality: float) -> torch.Tensor:
    """The checkerboard context's input int32 [N, M, H, W] from the anchors' symbols and mean codes
    (int [N, M, H, W / 2], packed as ``checkerboard_split`` packs them): the anchors' y_hat in the
    gain-free domain on the grid 2**-context_frac_bits, clamped to [-32767, 32767]; 0 at
    non-anchors (module docstring)."""
    if params.context is None:
        raise ValueError("these integer parameters have no checkerboard context")
    if symbols.shape != means.shape or symbols.dim() != 4 or symbols.shape[1] != params.n_channels:
        raise ValueError(f"symbols and means must be [N, {params.n_channels}, H, W / 2] of one shape")
    ginv = inverse_gain_codes(params, quality).view(1, -1, 1, 1)
    y_q = symbols.cpu().to(torch.int64) * (1 << params.mean_frac_bits) + means.cpu().to(torch.int64)
    shift = params.mean_frac_bits + params.gain_frac_bits - params.context_frac_bits
    u = round_shift(y_q * ginv, shift).clamp(-ACT_MAX, ACT_MAX).to(torch.int32)
    return checkerboard_merge(u, torch.zeros_like(u))


#: Positions of the y grid per band of the banded head (``entropy_parameters``): bounds its int64
#: temporaries (2M = 1536 channels x 8 bytes each) to a few tens of MB.
HEAD_BAND_POSITIONS = 512


def _head_codes(params: DefaultIntegerParams, a: torch.Tensor, g: torch.Tensor,
                backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes, means) int32 of the head's int64 output ``a`` [N, 2M, h, w] (per position)."""
    m = params.n_channels
    raw_s, raw_m = a[:, :m], a[:, m:]
    sp = params.softplus_lut.to(torch.int64)[raw_s + ACT_MAX]
    s_q = round_shift(sp * g + params.scale_min_code,
                      params.softplus_frac_bits + params.gain_frac_bits - params.scale_frac_bits)
    s_q = s_q.clamp(INT32_MIN, INT32_MAX).to(torch.int32)
    m_q = round_shift(raw_m * g, params.raw_mean_frac_bits + params.gain_frac_bits - params.mean_frac_bits)
    m_q = m_q.clamp(INT32_MIN, INT32_MAX).to(torch.int32)
    return backend_scale_index(s_q.contiguous(), params.thresholds, backend), m_q.contiguous()


# ---------------------------------------------------------------------------------- export

def _grid(max_abs: float, headroom: float) -> int:
    """Largest f with max_abs * headroom * 2**f <= 32767 (power-of-two grid 2**-f)."""
    return math.floor(math.log2(ACT_MAX / max(max_abs * headroom, 1e-12)))


def _quantize_layer(w: torch.Tensor, b: torch.Tensor, f_in: int, f_out: torch.Tensor) -> IntegerConv:
    """SODEC's export rule for one float64 layer w [CO, CI, k, k], b [CO]: int8-range weights per
    output channel, int64 bias on the accumulator grid, 15-bit multipliers; clamp int16."""
    co = w.shape[0]
    s_o = w.reshape(co, -1).abs().amax(1) / 127.0
    s_o = torch.where(s_o > 0, s_o, torch.ones_like(s_o))
    w_q = torch.round(w / s_o.view(-1, 1, 1, 1)).to(torch.int32)
    bias = torch.round(b / (s_o * 2.0 ** -f_in)).to(torch.int64)
    r = s_o * torch.pow(2.0, (f_out - f_in).to(torch.float64))
    s = 14 - torch.floor(torch.log2(r))
    mult = torch.round(r * torch.pow(2.0, s)).to(torch.int64)
    # round() can reach 2**15 exactly: halve it
    over = mult >= (1 << 15)
    mult = torch.where(over, (mult + 1) // 2, mult)
    s = torch.where(over, s - 1, s)
    return IntegerConv(w_q, bias, mult, s.to(torch.int64), 1, -ACT_MAX, ACT_MAX)


def _lut(fn: Any, f_in: int, f_out: int) -> torch.Tensor:
    v = torch.arange(-ACT_MAX, ACT_MAX + 1, dtype=torch.float64) * 2.0 ** -f_in
    return torch.round(fn(v) * 2.0 ** f_out).to(torch.int32)


def _gelu64(v: torch.Tensor) -> torch.Tensor:
    return 0.5 * v * (1.0 + torch.erf(v / math.sqrt(2.0)))


@torch.no_grad()
def export_integer_params(net: Any, z_calib: torch.Tensor, headroom: float = 2.0,
                          head_headroom: float = 4.0, y_calib: torch.Tensor | None = None) -> DefaultIntegerParams:
    """Turn a float ``DefaultCodecModel`` (``unit_hyper``, the shipped architecture) into release
    2's integers (release 3's with its checkerboard context). ``z_calib``: integer-valued z
    [N, Nz, h, w] of calibration images (grids only); ``y_calib`` (needed with a context): the
    gain-free y [N, M, H, W] of calibration images, which picks the grids of the context's input
    and hidden layer. Deterministic for given weights and calibration data (float64 on the CPU)."""


    cfg = net.cfg
    if not cfg.unit_hyper:
        raise ValueError("the integer export needs a unit_hyper model (gain-free hyper synthesis)")
    h_s = net.h_s
    m = cfg.latent
    w1 = polyphase_weights(h_s.conv1.weight.detach().double().cpu())
    b1 = h_s.conv1.bias.detach().double().cpu().repeat_interleave(4)
    w2 = polyphase_weights(h_s.conv2.weight.detach().double().cpu())
    b2 = h_s.conv2.bias.detach().double().cpu().repeat_interleave(4)
    w3 = h_s.conv3.weight.detach().double().cpu()
    b3 = h_s.conv3.bias.detach().double().cpu()
    if w3.shape[2] != 1:
        raise ValueError("the integer export expects the 1x1 output layer of the dct_base model")
    # calibration: float64 pre-activations of every layer
    z = z_calib.detach().double().cpu()
    pre1 = torch.nn.functional.conv_transpose2d(z, h_s.conv1.weight.double().cpu(), b1[::4], stride=2, padding=2,
                                                output_padding=1)
    pre2 = torch.nn.functional.conv_transpose2d(_gelu64(pre1), h_s.conv2.weight.double().cpu(), b2[::4], stride=2,
                                                padding=2, output_padding=1)
    out = torch.nn.functional.conv2d(_gelu64(pre2), w3, b3)
    f1 = _grid(float(pre1.abs().max()), headroom)
    f2 = _grid(float(pre2.abs().max()), headroom)
    f_s = _grid(float(out[:, :m].abs().max()), head_headroom)
    f_m = _grid(float(out[:, m:].abs().max()), head_headroom)
    l1 = _quantize_layer(w1, b1, 0, torch.full((w1.shape[0],), float(f1), dtype=torch.float64))
    l2 = _quantize_layer(w2, b2, f1, torch.full((w2.shape[0],), float(f2), dtype=torch.float64))
    f3 = torch.cat([torch.full((m,), float(f_s)), torch.full((m,), float(f_m))]).double()
    l3 = _quantize_layer(w3, b3, f2, f3)
    # softplus table: grid as fine as int32 allows (softplus(x) <= max(x, 0) + log 2), at most 2**-20
    sp_max = ACT_MAX * 2.0 ** -f_s + math.log(2.0)
    fsp = min(20, math.floor(math.log2((INT32_MAX - 1) / sp_max)))
    softplus = _lut(lambda v: torch.nn.functional.softplus(v), f_s, fsp)
    # gains
    log2_gain = torch.round(net.log_gain.detach().double().cpu() / math.log(2.0) * (1 << LOG2_FRAC_BITS)).to(torch.int64)
    j = torch.arange(256, dtype=torch.float64)
    exp2_hi = torch.round(torch.pow(2.0, j * 256 / 65536) * 2.0 ** EXP2_FRAC_BITS).to(torch.int64)
    exp2_lo = torch.round(torch.pow(2.0, j / 65536) * 2.0 ** EXP2_FRAC_BITS).to(torch.int64)
    context: dict[str, Any] = {}
    if getattr(net, "context", None) is not None:
        if y_calib is None:
            raise ValueError("a model with a checkerboard context needs y_calib to export")
        context = _export_context(net.context, y_calib, f_s, f_m, m, headroom)
    sfb = 16
    y_tables = GaussianConditionalTables(tail_mass=TAIL_MASS)
    z_tables = net._z_tables()
    tables = (z_tables.quantized_cdf.clone(), z_tables.cdf_length.clone(), z_tables.offset.clone(),
              y_tables.quantized_cdf.clone(), y_tables.cdf_length.clone(), y_tables.offset.clone())
    return DefaultIntegerParams(
        layers=(l1, l2, l3), shuffle=(2, 2, 1),
        act_luts=(_lut(_gelu64, f1, f1), _lut(_gelu64, f2, f2)),
        softplus_lut=softplus, log2_gain=log2_gain, exp2_hi=exp2_hi, exp2_lo=exp2_lo,
        thresholds=thresholds_from_table(y_tables.scale_table, sfb), tables=tables, n_channels=m,
        raw_mean_frac_bits=f_m, softplus_frac_bits=fsp,
        scale_min_code=round(SCALE_MIN_F32 * 2.0 ** (fsp + 16)), scale_frac_bits=sfb,
        mean_frac_bits=8, gain_frac_bits=16, **context,
    )


def _export_context(ctx: Any, y_calib: torch.Tensor, f_s: int, f_m: int, m: int, headroom: float) -> dict[str, Any]:
    """Release 3's context layers from a float ``CheckerboardContext``: the input grid from
    max |y_calib| (at most 2**-16), c0 (masked weights) onto the grid of its calibrated
    pre-activations, the GELU table, c1 onto the head's raw grids (a zero c1 stays exactly zero)."""
    y = y_calib.detach().double().cpu()
    f_c = max(0, min(16, _grid(float(y.abs().max()), headroom)))
    anchors = anchor_mask(int(y.shape[2]), int(y.shape[3]))
    w0 = ctx.conv1.weight.detach().double().cpu() * checkerboard_taps(ctx.conv1.weight.shape[-1]).double()
    b0 = ctx.conv1.bias.detach().double().cpu()
    pre = torch.nn.functional.conv2d(y * anchors, w0, b0, padding=w0.shape[-1] // 2)
    f_h = _grid(float(pre.abs().max()), headroom)
    c0 = _quantize_layer(w0, b0, f_c, torch.full((w0.shape[0],), float(f_h), dtype=torch.float64))
    w1 = ctx.conv2.weight.detach().double().cpu()
    b1 = ctx.conv2.bias.detach().double().cpu()
    f_out = torch.cat([torch.full((m,), float(f_s)), torch.full((m,), float(f_m))]).double()
    c1 = _quantize_layer(w1, b1, f_h, f_out)
    return {"context": (c0, c1), "context_lut": _lut(_gelu64, f_h, f_h), "context_frac_bits": f_c}


class IntegerEntropyModel:
    """Release 2's integer parameters with their rANS tables built once (immutable).

    Attributes: ``params`` (``DefaultIntegerParams``), ``z_tables`` and ``y_tables``
    (``cod_fast.entropy.CdfTables`` from the stored integer CDFs).
    """

    def __init__(self, params: DefaultIntegerParams) -> None:

        self.params = params
        self.z_tables = CdfTables(*params.tables[:3])
        self.y_tables = CdfTables(*params.tables[3:])

    def __deepcopy__(self, memo: dict) -> IntegerEntropyModel:
        return self  # immutable: copies of a model share it
