"""Differentiable likelihood models of the default codec, and their discrete tables.

* ``FactorizedDensity``: a per-channel learned cumulative density c(v) for the hyper latent z
  (the "non-parametric" density of Balle et al. 2018, appendix 6.1: a chain of small monotone
  affine maps with tanh gates, ending in a sigmoid). The probability of an integer symbol k is
  c(k + 1/2) - c(k - 1/2).
* ``gaussian_likelihood``: the probability of the unit interval around y under N(mean, scale^2),
  used for the analysis latent y.
* ``quantize``: additive uniform noise (training proxy), straight-through rounding, or rounding.

Entropy coding itself lives in ``cod_fast.entropy``; ``FactorizedDensity.pmf_table`` turns the
learned density into the integer-symbol probability tables that engine takes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Smallest Gaussian scale used by the model; equals the first entry of the standard scale table
#: (CompressAI's 64 log-spaced scales in [0.11, 256]) so every scale maps to a table entry.
SCALE_MIN = 0.11

#: Probability mass left outside the coded range of every table (escaped symbols beyond it).
TAIL_MASS = 1e-9

#: Floor on likelihoods before taking logs (keeps the rate finite for far-out symbols).
LIKELIHOOD_MIN = 1e-9


def quantize(x: torch.Tensor, mode: str, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize ``x`` around ``offset`` (same shape or broadcastable; default 0).

    mode "noise": x + U(-1/2, 1/2) (the training proxy for the rate term);
    "ste": round(x - offset) + offset in the forward pass with an identity gradient;
    "round": round(x - offset) + offset, no gradient path needed (inference).
    Output has the shape and dtype of ``x``.
    """
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    centred = x if offset is None else x - offset
    if mode == "ste":
        q = centred + (torch.round(centred) - centred).detach()
    elif mode == "round":
        q = torch.round(centred)
    else:
        raise ValueError(f"unknown quantization mode {mode!r} (expected noise, ste or round)")
    return q if offset is None else q + offset


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows where x < bound if it would raise x.

    A plain clamp has zero gradient below the bound, so a badly mispredicted symbol (likelihood
    at the floor) would give the entropy model no signal to widen its scale.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad < 0)
        return grad * pass_through.to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """max(x, bound) elementwise, with the gradient rule of ``_LowerBound``."""
    return _LowerBound.apply(x, bound)


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(x * (-1.0 / math.sqrt(2.0)))


def gaussian_likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """P(y - 1/2 < Y < y + 1/2) for Y ~ N(mean, scale^2), elementwise, floored at 1e-9.

    Uses the symmetric form Phi((1/2 - |v|)/s) - Phi((-1/2 - |v|)/s), v = y - mean, which keeps
    precision in the tails. All tensors broadcastable, float; returns float of the same shape.
    """
    v = (y - mean).abs()
    s = scale.clamp_min(SCALE_MIN)
    upper = _std_normal_cdf((0.5 - v) / s)
    lower = _std_normal_cdf((-0.5 - v) / s)
    return lower_bound(upper - lower, LIKELIHOOD_MIN)


class FactorizedDensity(nn.Module):
    """Learned per-channel density of a latent with ``channels`` channels.

    The cumulative c(v) = sigmoid(f_K(...f_1(v))) where each f_k maps R^{d_{k-1}} -> R^{d_k}
    per channel: h -> A_k h + b_k with A_k = softplus(matrices.k) (non-negative, so c is
    monotone), followed (except for the last) by h + tanh(factors.k) * tanh(h). Widths
    d = (1, *filters, 1). Parameters: ``matrices.k`` (C, d_k, d_{k-1}), ``biases.k`` (C, d_k, 1),
    ``factors.k`` (C, d_k, 1), all float32.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError("channels must be positive")
        self.channels = int(channels)
        widths = (1, *filters, 1)
        # Initial slope chosen so that the composed map spreads the unit density over
        # roughly [-init_scale, init_scale] (the usual initialisation of this density).
        scale = init_scale ** (1.0 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(widths) - 1):
            d_in, d_out = widths[k], widths[k + 1]
            init = math.log(math.expm1(1.0 / scale / d_out))
            self.matrices.append(nn.Parameter(torch.full((channels, d_out, d_in), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, d_out, 1).uniform_(-0.5, 0.5)))
            if k < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, d_out, 1)))

    def logits_cumulative(self, v: torch.Tensor) -> torch.Tensor:
        """Logit of c(v) for v (C, 1, N) float32 -> (C, 1, N)."""
        h = v
        for k in range(len(self.matrices)):
            h = torch.matmul(F.softplus(self.matrices[k]), h) + self.biases[k]
            if k < len(self.factors):
                h = h + torch.tanh(self.factors[k]) * torch.tanh(h)
        return h

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """P(z - 1/2 < Z < z + 1/2) per element of z (B, C, H, W) float32, floored at 1e-9."""
        if z.dim() != 4 or z.shape[1] != self.channels:
            raise ValueError(f"expected z of shape (B, {self.channels}, H, W), got {tuple(z.shape)}")
        b, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cumulative(v - 0.5)
        upper = self.logits_cumulative(v + 0.5)
        # Subtract in the tail where the sigmoids are far from 1: sigma(u) - sigma(l) ==
        # sigma(-l) - sigma(-u), and evaluating on the side where both are small keeps precision.
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        p = p.reshape(c, b, h, w).permute(1, 0, 2, 3)
        return lower_bound(p, LIKELIHOOD_MIN)

    @torch.no_grad()
    def pmf_table(self, tail_mass: float = 1e-9, max_support: int = 2048) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Integer-symbol probabilities for every channel.

        Returns ``(pmfs, offsets)``: pmfs a list of C float64 tensors, pmfs[c][i] =
        P(symbol = offsets[c] + i); offsets int32 (C,). Each channel's support is the smallest
        integer interval holding all but ``tail_mass`` of its mass within
        [-max_support, max_support]; the rANS tables escape symbols outside it.
        """
        grid = torch.arange(-max_support, max_support + 1, dtype=torch.float32)
        v = grid.view(1, 1, -1).expand(self.channels, 1, -1)
        cdf_lo = torch.sigmoid(self.logits_cumulative(v - 0.5).double()).squeeze(1)
        cdf_hi = torch.sigmoid(self.logits_cumulative(v + 0.5).double()).squeeze(1)
        pmf = (cdf_hi - cdf_lo).clamp_min(0.0)
        offsets = torch.empty(self.channels, dtype=torch.int32)
        pmfs: list[torch.Tensor] = []
        for c in range(self.channels):
            # Last grid point with less than tail_mass / 2 below it, first with less above it.
            below = cdf_lo[c] < tail_mass / 2
            above = cdf_hi[c] > 1.0 - tail_mass / 2
            lo = int(below.nonzero().max()) if bool(below.any()) else 0
            hi = int(above.nonzero().min()) if bool(above.any()) else grid.numel() - 1
            hi = max(hi, lo)
            offsets[c] = int(grid[lo])
            pmfs.append(pmf[c, lo : hi + 1].clone())
        return pmfs, offsets
