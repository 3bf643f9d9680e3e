"""SODEC's entropy-coded latent: analysis E, hyperprior, and the integer entropy-parameter path.

SODEC (arXiv 2508.04979, no code released) codes a VAE latent y with a plain hyperprior (the
paper shows no spatial or channel context): x -> E -> y -> hyper analysis -> z; z is coded with a
factorized prior, y with Gaussian tables whose scale index and mean come from the hyper synthesis
of z. ``HyperpriorConfig.checkerboard`` adds an optional checkerboard context (two passes, He et
al. 2021): anchors (row + col even) are coded with the hyperprior parameters, then the other half
with parameters that add a checkerboard-masked conv (``context``) of the decoded anchors; the
context conv runs in the integer spec too (``cod_fast.int_params``, identical on every backend).

* ``SodecHyperprior`` -- the float model (training, ``forward`` gives likelihoods for the rate).
  Layer sizes are ours (the paper gives none): E is ``n_down`` stride-2 5x5 convs with ReLU; the
  hyper analysis is conv3x3, 2 x stride-2 conv5x5 (ReLU between); the hyper synthesis is
  conv3x3 -> ReLU -> [nearest up 2, conv3x3] -> ReLU -> [nearest up 2, conv3x3] with 2M outputs
  (scales, means) -- nearest upsampling instead of transposed convs so that the integer path is
  pure index arithmetic.
* ``export_integer_params`` -- quantizes the float hyper synthesis into
  ``IntegerEntropyParams`` (the spec lives in ``cod_fast.int_params.reference``).
* ``update`` -- builds everything a parser needs as integers: the integer hyper synthesis, the
  factorized z tables (quantized once from the float pmfs) and the y Gaussian tables (copied as
  integers from ``GaussianConditionalTables``). ``integer_state_dict`` / ``load_integer_state``
  carry that state, so a decoder never re-runs the float export.
* ``compress`` / ``decompress`` (``decompress_latents`` also returns z) -- round trip through the
  rANS engine; both sides compute the entropy parameters with the integer path (backend
  "reference", "cpp" or "triton"; all give the same integers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...entropy import CdfTables, GaussianConditionalTables, default_scale_table
from ...errors import BitstreamError
from ...int_params.api import context_parameters, entropy_head, entropy_parameters, head_parameters
from ...int_params.reference import (
    ACT_MAX,
    INT32_MAX,
    INT32_MIN,
    IntegerConv,
    IntegerEntropyParams,
    anchor_mask,
    checkerboard_taps,
    context_input,
    dequantize_y,
    quantize_y,
    thresholds_from_table,
)
from ...kernels.masked_conv_reference import masked_conv2d_reference

__all__ = ["FactorizedPrior", "HyperpriorConfig", "SodecHyperprior", "TINY_HYPERPRIOR"]

#: Largest z grid a decoder accepts (N * h * w); bounds allocations made from a stream's shape.
MAX_Z_POSITIONS = 1 << 22


@dataclass(frozen=True)
class HyperpriorConfig:
    """Sizes of the hyperprior. y has ``m`` channels at 1/2**n_down resolution, z ``cz`` at 1/4 of y."""

    in_channels: int = 3
    n: int = 128             # width of E
    m: int = 192             # channels of y
    hidden: int = 128        # width of the hyper analysis / synthesis
    cz: int = 128            # channels of z
    n_down: int = 4          # stride-2 convs in E
    z_support: int = 32      # factorized prior support [-z_support, z_support]
    scale_frac_bits: int = 8
    mean_frac_bits: int = 4
    checkerboard: bool = False  # two-pass checkerboard context
    context_kernel: int = 5     # side of the checkerboard context conv (odd)

    def __post_init__(self) -> None:
        for name, lo, hi in (("in_channels", 1, 64), ("n", 1, 4096), ("m", 1, 4096), ("hidden", 1, 4096),
                             ("cz", 1, 4096), ("n_down", 1, 8), ("z_support", 1, 1 << 14),
                             ("scale_frac_bits", 0, 16), ("mean_frac_bits", 0, 16),
                             ("context_kernel", 1, 11)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"hyperprior field {name} must be an int in [{lo}, {hi}], got {v!r}")
        if self.context_kernel % 2 == 0:
            raise ValueError(f"context_kernel must be odd, got {self.context_kernel}")
        if not isinstance(self.checkerboard, bool):
            raise ValueError(f"checkerboard must be a bool, got {self.checkerboard!r}")


#: A few thousand parameters: tests and quick training.
TINY_HYPERPRIOR = HyperpriorConfig(in_channels=3, n=8, m=8, hidden=8, cz=4, n_down=2, z_support=8)


class FactorizedPrior(nn.Module):
    """Per-channel discrete prior of z over the integers [-R, R] (softmax of learned logits).

    ``likelihood(z_hat)``: float probabilities of integer-valued z_hat [N, C, h, w]; values
    outside the support get ``tail_mass`` (the rANS escape path codes them exactly). The
    likelihood is a table lookup: it trains the logits but passes no gradient to z (the hyper
    analysis learns through y's rate).
    """

    def __init__(self, channels: int, support: int, tail_mass: float = 1e-9) -> None:
        super().__init__()
        self.support = int(support)
        self.tail_mass = float(tail_mass)
        self.logits = nn.Parameter(-0.5 * torch.arange(-support, support + 1).abs().float().repeat(channels, 1))

    def pmf(self) -> torch.Tensor:
        """float32 [C, 2R + 1]."""
        return torch.softmax(self.logits.float(), dim=1) * (1.0 - self.tail_mass)

    def likelihood(self, z_hat: torch.Tensor) -> torch.Tensor:
        r = self.support
        idx = (z_hat.detach() + r).long()
        inside = (idx >= 0) & (idx <= 2 * r)
        n, c, h, w = z_hat.shape
        gathered = self.pmf().unsqueeze(0).expand(n, c, 2 * r + 1).gather(
            2, idx.clamp(0, 2 * r).reshape(n, c, h * w)).reshape(n, c, h, w)
        return torch.where(inside, gathered, torch.full_like(gathered, self.tail_mass))


class _Up(nn.Module):
    """Nearest-neighbour upsampling by 2 (the integer path repeats indices the same way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _gaussian_likelihood(y_hat: torch.Tensor, scales: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    s = scales.clamp_min(0.11)
    v = (y_hat - means).abs()
    upper = 0.5 * torch.erfc(-(0.5 - v) / (s * math.sqrt(2.0)))
    lower = 0.5 * torch.erfc(-(-0.5 - v) / (s * math.sqrt(2.0)))
    return (upper - lower).clamp_min(1e-9)


def _quantize_conv(w: torch.Tensor, b: torch.Tensor, fi: float, f_out: torch.Tensor, up: int,
                   lo: int, hi: int, what: str) -> IntegerConv:
    """float64 conv (w [CO, CI, k, k], b [CO]) with input grid 2**-fi and per-output grids
    2**-f_out -> IntegerConv: int8 weights per output channel, 15-bit multiplier and shift."""
    s_w = w.abs().amax(dim=(1, 2, 3)) / 127.0
    s_w = torch.where(s_w > 0, s_w, torch.ones_like(s_w))
    w_q = torch.round(w / s_w.view(-1, 1, 1, 1)).to(torch.int32)
    b_q = torch.round(b / (s_w * 2.0 ** (-fi))).to(torch.int64)
    mults, shifts = [], []
    for o in range(w.shape[0]):
        r = float(s_w[o]) * 2.0 ** (float(f_out[o]) - fi)
        s = min(62, 14 - math.floor(math.log2(r)))
        if s < 1:
            raise ValueError(f"{what} channel {o}: requantization factor {r} too large")
        mults.append(max(1, min((1 << 15) - 1, round(r * 2.0**s))))
        shifts.append(s)
    return IntegerConv(w_q, b_q, torch.tensor(mults, dtype=torch.int64),
                       torch.tensor(shifts, dtype=torch.int64), up, lo, hi)


class SodecHyperprior(nn.Module):
    """Float hyperprior model of SODEC's latent (see the module docstring).

    ``forward(x)`` (x float [N, C, H, W], H and W multiples of 2**(n_down + 2)) returns
    ``(y_hat, y_likelihoods, z_likelihoods)``; y is rounded around the means with a
    straight-through estimator, z rounded likewise.
    """

    def __init__(self, cfg: HyperpriorConfig = TINY_HYPERPRIOR) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        ch = cfg.in_channels
        for i in range(cfg.n_down):
            out = cfg.m if i == cfg.n_down - 1 else cfg.n
            layers.append(nn.Conv2d(ch, out, 5, stride=2, padding=2))
            if i < cfg.n_down - 1:
                layers.append(nn.ReLU())
            ch = out
        self.g_a = nn.Sequential(*layers)
        self.h_a = nn.Sequential(
            nn.Conv2d(cfg.m, cfg.hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(cfg.hidden, cfg.hidden, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(cfg.hidden, cfg.cz, 5, stride=2, padding=2),
        )
        self.h_s = nn.Sequential(
            nn.Conv2d(cfg.cz, cfg.hidden, 3, padding=1), nn.ReLU(),
            _Up(), nn.Conv2d(cfg.hidden, cfg.hidden, 3, padding=1), nn.ReLU(),
            _Up(), nn.Conv2d(cfg.hidden, 2 * cfg.m, 3, padding=1),
        )
        self.prior = FactorizedPrior(cfg.cz, cfg.z_support)
        k = cfg.context_kernel
        # Checkerboard context: y_hat of the anchors -> (scale, mean) offsets of the non-anchors.
        # The weight is stored unmasked; every use multiplies it by the checkerboard mask.
        self.context = nn.Conv2d(cfg.m, 2 * cfg.m, k, padding=k // 2) if cfg.checkerboard else None
        self.int_params: IntegerEntropyParams | None = None
        self.z_tables: CdfTables | None = None
        self.y_tables: CdfTables | None = None

    @property
    def downsample(self) -> int:
        """Image pixels per z position along each side."""
        return 2 ** (self.cfg.n_down + 2)

    def hyper_synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float (scales, means) [N, M, 4h, 4w] of z_hat [N, cz, h, w]."""
        p = self.h_s(z_hat)
        return p[:, : self.cfg.m], p[:, self.cfg.m:]

    def context_offsets(self, y_anchor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float (scale, mean) offsets [N, M, H, W] of the non-anchors from y_hat [N, M, H, W]
        (non-anchor positions must hold 0): the checkerboard-masked conv
        (``kernels.masked_conv_reference.masked_conv2d_reference``, mask ``checkerboard_A``)."""
        if self.context is None:
            raise ValueError("this hyperprior has no checkerboard context (config checkerboard=False)")
        p = masked_conv2d_reference(y_anchor, self.context.weight, self.context.bias, "checkerboard_A")
        return p[:, : self.cfg.m], p[:, self.cfg.m:]

    def quantized_latents(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Float path: (y_hat, z_hat, scales, means) of images x [N, C, H, W].

        y_hat [N, M, H/2**n_down, W/2**n_down] is y rounded around the means (straight-through),
        z_hat [N, cz, h, w] rounded z; scales/means are the Gaussian parameters of every y symbol
        (the second pass's at non-anchors when the checkerboard context is on).
        """
        y = self.g_a(x)
        z_hat = _round_ste(self.h_a(y))
        scales, means = self.hyper_synthesis(z_hat)
        y_hat = _round_ste(y - means) + means
        if self.context is not None:  # second pass: non-anchors see the anchors' y_hat
            anchors = anchor_mask(y.shape[2], y.shape[3]).to(y.device)
            ds, dm = self.context_offsets(y_hat * anchors)
            scales = torch.where(anchors, scales, scales + ds)
            means = torch.where(anchors, means, means + dm)
            y_hat = _round_ste(y - means) + means
        return y_hat, z_hat, scales, means

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y_hat, z_hat, scales, means = self.quantized_latents(x)
        return y_hat, _gaussian_likelihood(y_hat, scales, means), self.prior.likelihood(z_hat)

    # ---- export to the integer spec ----
    @torch.no_grad()
    def export_integer_params(self, z_calib: torch.Tensor | None = None,
                              headroom: float = 2.0) -> IntegerEntropyParams:
        """Quantize the float hyper synthesis into the integer spec (CPU, float64 maths).

        z_calib: integer-valued calibration z [N, cz, h, w] that sets each hidden layer's
        power-of-two activation grid (max |activation| * headroom fits int16); None: a fixed
        seeded uniform draw over the prior's support. Weights: int8 per output channel
        (``w_q = round(w / s_o)``, ``s_o = max|w_o| / 127``); multiplier m in [2**14, 2**15) with
        shift s so that ``m / 2**s ~ s_o * 2**(f_out - f_in)``; bias on the accumulator grid.
        """
        cfg = self.cfg
        if z_calib is None:
            gen = torch.Generator().manual_seed(0)
            z_calib = torch.randint(-cfg.z_support, cfg.z_support + 1, (4, cfg.cz, 8, 8), generator=gen)
        convs = [mod for mod in self.h_s if isinstance(mod, nn.Conv2d)]
        ups = [1, 2, 2]
        act = z_calib.detach().cpu().to(torch.float64)
        f_in = torch.zeros(cfg.cz, dtype=torch.float64)  # z is integer: grid 2**0
        layers = []
        for li, (conv, up) in enumerate(zip(convs, ups)):
            w = conv.weight.detach().cpu().to(torch.float64)
            b = conv.bias.detach().cpu().to(torch.float64)
            last = li == len(convs) - 1
            if up > 1:
                act = F.interpolate(act, scale_factor=up, mode="nearest")
            act = F.conv2d(act, w, b, padding=conv.padding)
            if last:
                f_out = torch.tensor([cfg.scale_frac_bits] * cfg.m + [cfg.mean_frac_bits] * cfg.m,
                                     dtype=torch.float64)
                lo, hi = INT32_MIN, INT32_MAX
            else:
                act = act.clamp_min(0)
                peak = max(float(act.abs().max()), 1e-6) * headroom
                f = max(-16, min(24, math.floor(math.log2(ACT_MAX / peak))))
                f_out = torch.full((w.shape[0],), float(f), dtype=torch.float64)
                lo, hi = 0, ACT_MAX
            # Input grid of this layer: the same for every input channel (power of two).
            layers.append(_quantize_conv(w, b, float(f_in[0]), f_out, up, lo, hi, f"layer {li}"))
            f_in = f_out
        context = None
        if self.context is not None:  # input: y_hat on the mean grid; output: the head's grids
            w = self.context.weight.detach().cpu().to(torch.float64)
            w = w * checkerboard_taps(w.shape[2]).to(torch.float64)
            b = self.context.bias.detach().cpu().to(torch.float64)
            f_out = torch.tensor([cfg.scale_frac_bits] * cfg.m + [cfg.mean_frac_bits] * cfg.m, dtype=torch.float64)
            context = _quantize_conv(w, b, float(cfg.mean_frac_bits), f_out, 1, INT32_MIN, INT32_MAX, "context")
        thresholds = thresholds_from_table(default_scale_table(), cfg.scale_frac_bits)
        return IntegerEntropyParams(tuple(layers), thresholds, cfg.m, cfg.scale_frac_bits,
                                    cfg.mean_frac_bits, context)

    @torch.no_grad()
    def update(self, z_calib: torch.Tensor | None = None) -> None:
        """Build the integer state every parser needs: int_params, z_tables, y_tables."""
        self.int_params = self.export_integer_params(z_calib)
        pmf = self.prior.pmf().detach().cpu()
        r = self.cfg.z_support
        self.z_tables = CdfTables.from_pmfs(list(pmf), [-r] * self.cfg.cz, tail_mass=self.prior.tail_mass)
        g = GaussianConditionalTables()
        self.y_tables = CdfTables(g.quantized_cdf, g.cdf_length, g.offset)

    def integer_state_dict(self) -> dict[str, torch.Tensor]:
        """The integer state of ``update()`` as a flat dict of int tensors (``int.*``, ``z_tables.*``,
        ``y_tables.*``): ship it with the model so that decoders load it instead of re-exporting."""
        params, z_tables, y_tables = self._require_update()
        out = {f"int.{k}": v for k, v in params.state_dict().items()}
        for name, tables in (("z_tables", z_tables), ("y_tables", y_tables)):
            out[f"{name}.quantized_cdf"] = tables.quantized_cdf
            out[f"{name}.cdf_length"] = tables.cdf_length
            out[f"{name}.offset"] = tables.offset
        return out

    def load_integer_state(self, sd: dict[str, torch.Tensor]) -> None:
        """Install a dict of ``integer_state_dict``; raises ValueError/TypeError if malformed."""
        params = IntegerEntropyParams.from_state_dict(
            {k[len("int."):]: v for k, v in sd.items() if k.startswith("int.")})
        if params.n_channels != self.cfg.m or params.in_channels != self.cfg.cz:
            raise ValueError("integer state was exported for a model of other sizes")
        if (params.context is not None) != self.cfg.checkerboard:
            raise ValueError("integer state and model disagree on the checkerboard context")
        try:
            z_tables, y_tables = (CdfTables(sd[f"{n}.quantized_cdf"], sd[f"{n}.cdf_length"], sd[f"{n}.offset"])
                                  for n in ("z_tables", "y_tables"))
        except KeyError as exc:
            raise ValueError(f"integer state lacks entry {exc}") from None
        if z_tables.n_tables != self.cfg.cz:
            raise ValueError(f"z tables must hold {self.cfg.cz} rows, got {z_tables.n_tables}")
        if y_tables.n_tables != params.thresholds.numel() + 1:
            raise ValueError("y tables must hold one row per threshold plus one")
        self.int_params, self.z_tables, self.y_tables = params, z_tables, y_tables

    # ---- coding ----
    def _require_update(self) -> tuple[IntegerEntropyParams, CdfTables, CdfTables]:
        if self.int_params is None or self.z_tables is None or self.y_tables is None:
            raise RuntimeError("call update() (or load the integer state) before compress/decompress")
        return self.int_params, self.z_tables, self.y_tables

    def _z_indexes(self, n: int, h: int, w: int) -> torch.Tensor:
        return torch.arange(self.cfg.cz, dtype=torch.int32).view(1, -1, 1, 1).expand(n, -1, h, w).contiguous()

    @torch.no_grad()
    def compress(self, x: torch.Tensor, backend: str = "reference") -> tuple[list[bytes], tuple[int, int, int]]:
        """Code images x float [N, C, H, W] (H, W multiples of ``downsample``).

        Returns ``(strings, (N, h, w))`` with (h, w) the z grid; ``strings`` is ``[z_bytes,
        y_bytes]``, or with the checkerboard context ``[z_bytes, y_anchor_bytes,
        y_non_anchor_bytes]``. The y symbols' table indexes and means come from the integer path on
        ``backend``.
        """
        params, z_tables, y_tables = self._require_update()
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
            raise TypeError("x must be a float tensor [N, C, H, W]")
        d = self.downsample
        if x.shape[1] != self.cfg.in_channels or x.shape[2] % d or x.shape[3] % d or x.numel() == 0:
            raise ValueError(f"x must be [N, {self.cfg.in_channels}, H, W] with H, W positive multiples of {d}")
        y = self.g_a(x)
        z_sym = torch.round(self.h_a(y)).clamp(-ACT_MAX, ACT_MAX).to(torch.int32).cpu()
        n, _, h, w = z_sym.shape
        z_bytes = z_tables.encode(z_sym, self._z_indexes(n, h, w))
        if params.context is None:  # no second pass: indexes and means in one call, no head kept
            indexes, means = entropy_parameters(params, z_sym, backend)
            symbols = quantize_y(y, means, params.mean_frac_bits)
            return [z_bytes, y_tables.encode(symbols, indexes)], (n, h, w)
        head = entropy_head(params, z_sym, backend)
        indexes, means = head_parameters(params, head, backend)
        symbols = quantize_y(y, means, params.mean_frac_bits)
        anchors = self._anchor_index(symbols)
        a_bytes = y_tables.encode(symbols[anchors], indexes[anchors])
        idx2, means2 = context_parameters(params, head, context_input(symbols, means, params.mean_frac_bits),
                                          backend)
        symbols2 = quantize_y(y, means2, params.mean_frac_bits)
        return [z_bytes, a_bytes, y_tables.encode(symbols2[~anchors], idx2[~anchors])], (n, h, w)

    @staticmethod
    def _anchor_index(symbols: torch.Tensor) -> torch.Tensor:
        """bool [N, M, H, W]: the anchor positions of every channel (first pass)."""
        return anchor_mask(symbols.shape[2], symbols.shape[3]).expand(symbols.shape)

    @torch.no_grad()
    def decompress_latents(self, strings: list[bytes], shape: tuple[int, int, int],
                           backend: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``compress``'s output: (y_hat float32 [N, M, 4h, 4w], z symbols int32
        [N, cz, h, w]), both on the CPU. Raises BitstreamError for corrupted streams, ValueError
        for a bad shape or a wrong number of strings."""
        params, z_tables, y_tables = self._require_update()
        n_strings = 2 if params.context is None else 3
        if not isinstance(strings, (list, tuple)) or len(strings) != n_strings:
            raise ValueError(f"strings must be {n_strings} byte strings (z, then y)")
        if len(shape) != 3 or any(not isinstance(v, int) or v < 1 for v in shape):
            raise ValueError(f"shape must be three positive ints (N, h, w), got {shape!r}")
        n, h, w = shape
        if n * h * w > MAX_Z_POSITIONS:
            raise ValueError(f"shape {shape} exceeds {MAX_Z_POSITIONS} z positions")
        z_sym = z_tables.decode(strings[0], self._z_indexes(n, h, w))
        if bool((z_sym.abs() > ACT_MAX).any()):
            raise BitstreamError("z symbol outside the int16 range the encoder writes")
        if params.context is None:  # no second pass: indexes and means in one call, no head kept
            indexes, means = entropy_parameters(params, z_sym, backend)
            symbols = y_tables.decode(strings[1], indexes)
            return dequantize_y(symbols, means, params.mean_frac_bits), z_sym
        head = entropy_head(params, z_sym, backend)
        indexes, means = head_parameters(params, head, backend)
        anchors = self._anchor_index(indexes)
        symbols = torch.zeros(indexes.shape, dtype=torch.int32)
        symbols[anchors] = y_tables.decode(strings[1], indexes[anchors])
        idx2, means2 = context_parameters(params, head, context_input(symbols, means, params.mean_frac_bits),
                                          backend)
        symbols[~anchors] = y_tables.decode(strings[2], idx2[~anchors])
        means = torch.where(anchors, means, means2)
        return dequantize_y(symbols, means, params.mean_frac_bits), z_sym

    @torch.no_grad()
    def decompress(self, strings: list[bytes], shape: tuple[int, int, int],
                   backend: str = "reference") -> torch.Tensor:
        """Decode ``compress``'s output: y_hat float32 [N, M, 4h, 4w] on the CPU.

        Raises BitstreamError for corrupted streams, ValueError for a bad shape.
        """
        return self.decompress_latents(strings, shape, backend)[0]
