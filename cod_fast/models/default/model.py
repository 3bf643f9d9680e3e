"""The default codec: a small variable-rate mean-scale hyperprior with a DiCo-block decoder.

Data flow for an image x (B, 3, H, W) float32 in [0, 1], H and W multiples of 64:

* ``g_a`` (analysis): x -> y (B, M, H/16, W/16): a fixed orthonormal 16x16 block transform
  (opponent colours x DCT, M = 768, ``dct_base``) plus a learned nonlinear conv branch;
* gain unit: y is multiplied by a positive per-channel gain for the rate level q (``gain``
  (Q, M)); the synthesis side divides by ``inv_gain`` (Q, M). Fractional q interpolates the
  gains geometrically, so one model covers a continuous range of rates;
* ``h_a``: y -> z (B, Nz, H/64, W/64); z is rounded and coded with the learned factorized
  density ``density_z``;
* ``h_s``: z_hat -> (scales, means) of y, each (B, M, H/16, W/16); y is coded as
  round(y - means) under N(0, scales^2) and reconstructed as y_hat = symbols + means;
* ``unit_hyper`` (config): the hyperprior works in the gain-free domain: h_a sees y / gain
  (so z does not depend on the rate level) and h_s's outputs are multiplied by the level's
  gain, scales = gain * softplus(.) + 0.11, means = gain * (.). The level dependence of the
  entropy model is then exact instead of learned, which is what makes a briefly trained model
  code y better than a per-channel global scale would;
* ``context`` (config, ``"checkerboard"``; default ``"none"``): a spatial context, two passes
  (He et al. 2021, "Checkerboard context model"). Anchors (row + col even) are coded with h_s's
  parameters alone; the non-anchors' raw (scale, mean) outputs of h_s get an offset from
  ``CheckerboardContext`` applied to the decoded anchors' y_hat (in the gain-free domain, y_hat /
  gain, zero at non-anchors). Its output layer starts at zero, so a model given a fresh context
  codes exactly as without one (``add_checkerboard_context``);
* ``g_s`` (synthesis, a one-step decoder): y_hat -> x_hat (B, 3, H, W): the inverse block
  transform plus a learned refinement branch whose blocks are
  CoD-Lite ``DiCoBlock``s (channel LayerNorm2d, 1x1 + depthwise 3x3 convs, channel attention,
  conv FFN) modulated by a learned per-rate-level embedding instead of a timestep embedding, so
  the fast path written for CoD-Lite (norm kernels, cached modulation) applies unchanged.

Padding policy of ``compress``: the image is padded at the bottom and right by replicating its
last row/column up to a multiple of 64; ``decompress`` crops back to the recorded size.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cod_fast.entropy import CdfTables, GaussianConditionalTables
from cod_fast.errors import EntropyParameterMismatchError
from cod_fast.int_params.reference import anchor_mask, checkerboard_taps
from cod_fast.models.cod_lite.pixel_cnn import DiCoBlock

from . import lowmem
from .entropy_models import SCALE_MIN, TAIL_MASS, FactorizedDensity, gaussian_likelihood, quantize
from .integer_params import (
    checkerboard_merge,
    checkerboard_split,
    context_input,
    dequantize_y,
    entropy_parameters,
    head_codes,
    hyper_features,
    quantize_y,
)

#: Values of ``DefaultConfig.context``.
CONTEXTS = ("none", "checkerboard")

#: Total downsampling of the model (analysis 16 x hyper-analysis 4): images are padded to it.
STRIDE = 64

#: Positions of y per row band in the banded quantization / RDOQ / dequantization (bounds their
#: float64 temporaries: M = 768 channels x 8 bytes x this many positions each).
SYMBOL_BAND_POSITIONS = 1024

#: Largest z grid ``decompress`` accepts (2^16 positions, e.g. a 16384 x 16384 image), so a
#: corrupt shape cannot ask for a giant allocation.
MAX_Z_POSITIONS = 1 << 16


@dataclass(frozen=True)
class DefaultConfig:
    """Architecture of the default codec (all widths are channel counts).

    enc: widths of the analysis stages at 1/2, 1/4, 1/8; latent: M (channels of y);
    hyper: width inside h_a/h_s; hyper_latent: Nz (channels of z); dec: widths of the synthesis
    stages at 1/16, 1/8, 1/4, 1/2; dec_blocks: DiCoBlocks per synthesis stage; enc_blocks:
    DiCoBlocks after each analysis stage at 1/4 and 1/8; mlp_ratio: DiCoBlock FFN expansion;
    lambdas: the rate-distortion weights of the rate levels, lowest rate first;
    dct_base: add a linear path to both transforms, initialised as an orthonormal colour
    transform + 16x16 DCT (then latent must be 768 = 3 * 16 * 16): the untrained model is then
    already a transform codec with uniform quantizers, and the nonlinear branches (whose last
    layers start at zero) learn corrections on top; step0: quantizer step of that linear codec
    at the highest rate level (image scaled to [-1, 1]); lower levels start with steps growing
    as 1/sqrt(lambda); unit_hyper: hyperprior in the gain-free domain (module docstring);
    context: "none" or "checkerboard" (module docstring), with ``context_kernel`` (odd side of
    the masked conv; 3 keeps the 4 nearest anchors: with the released transforms and the context
    alone trained it coded Kodak as well as 5 at 40 % of the weights and time, MODEL_CARD.md)
    and ``context_hidden`` (its width).
    """

    enc: tuple[int, int, int] = (48, 96, 128)
    latent: int = 768
    hyper: int = 128
    hyper_latent: int = 96
    dec: tuple[int, int, int, int] = (160, 128, 96, 48)
    dec_blocks: tuple[int, int, int, int] = (2, 2, 1, 1)
    enc_blocks: tuple[int, int] = (1, 1)
    mlp_ratio: float = 2.0
    lambdas: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.013, 0.025)
    dct_base: bool = True
    step0: float = 0.4
    unit_hyper: bool = False
    context: str = "none"
    context_kernel: int = 3
    context_hidden: int = 128

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if not (isinstance(self.context_kernel, int) and 3 <= self.context_kernel <= 11 and self.context_kernel % 2):
            raise ValueError(f"context_kernel must be odd in [3, 11], got {self.context_kernel!r}")
        if not (isinstance(self.context_hidden, int) and 1 <= self.context_hidden <= 4096):
            raise ValueError(f"context_hidden must be in [1, 4096], got {self.context_hidden!r}")

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists). Without a context the ``context*`` keys are left out, so
        the configs of models without one (release 2's ``default.json``) stay as they were."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if self.context == "none":
            for k in ("context", "context_kernel", "context_hidden"):
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DefaultConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown default-model config keys: {sorted(unknown)}")
        cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        if cfg.dct_base and cfg.latent != 3 * BASE_BLOCK * BASE_BLOCK:
            raise ValueError(f"dct_base needs latent == {3 * BASE_BLOCK * BASE_BLOCK}, got {cfg.latent}")
        return cfg


#: Block size of the linear base transform (= the analysis stride).
BASE_BLOCK = 16


def orthonormal_block_transform(block: int = BASE_BLOCK) -> torch.Tensor:
    """Weights (3 * block^2, 3, block, block) float32 of an orthonormal per-block transform.

    Output channel c * block^2 + k is colour component c of an orthonormal opponent-colour
    transform (rows (1,1,1)/sqrt3, (1,0,-1)/sqrt2, (1,-2,1)/sqrt6) times the k-th 2D DCT-II basis
    function, frequencies ordered by u + v then u. As a stride-``block`` convolution it is an
    orthogonal map of each block, so a ConvTranspose2d with the same weights inverts it.
    """
    n = torch.arange(block, dtype=torch.float64)
    basis_1d = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * block))
    basis_1d[0] *= 1.0 / math.sqrt(2.0)
    basis_1d *= math.sqrt(2.0 / block)
    freqs = sorted(((u, v) for u in range(block) for v in range(block)), key=lambda f: (f[0] + f[1], f[0]))
    dct = torch.stack([torch.outer(basis_1d[u], basis_1d[v]) for u, v in freqs])
    colour = torch.tensor(
        [[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]], dtype=torch.float64
    )
    colour = colour / colour.norm(dim=1, keepdim=True)
    w = colour[:, None, :, None, None] * dct[None, :, None, :, :]
    return w.reshape(3 * block * block, 3, block, block).to(torch.float32)


class ConditionedStage(nn.Module):
    """A chain of DiCoBlocks of width ``width`` sharing one conditioning vector.

    ``embedding`` (levels, width): the vector fed to every block's adaLN for rate level q
    (interpolated linearly for fractional q). forward(x (B, width, h, w), q (B,) float) -> same.
    """

    def __init__(self, width: int, blocks: int, levels: int, mlp_ratio: float) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(levels, width) * 0.02)
        self.blocks = nn.ModuleList(DiCoBlock(width, mlp_ratio=mlp_ratio) for _ in range(blocks))
        for blk in self.blocks:
            # Start each block close to identity with a small residual gate, so the untrained
            # stack passes its input through.
            lin = blk.adaLN_modulation[1]
            nn.init.zeros_(lin.weight)
            with torch.no_grad():
                lin.bias.zero_()
                lin.bias.view(6, width)[2].fill_(0.1)
                lin.bias.view(6, width)[5].fill_(0.1)

    def condition(self, q: torch.Tensor) -> torch.Tensor:
        """Embedding for rate levels q (B,) float in [0, levels-1] -> (B, width)."""
        lo = q.floor().clamp(0, self.embedding.shape[0] - 1)
        hi = (lo + 1).clamp(max=self.embedding.shape[0] - 1)
        t = (q - lo).unsqueeze(1)
        return self.embedding[lo.long()] * (1 - t) + self.embedding[hi.long()] * t

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        if len(self.blocks) == 0:
            return x
        c = self.condition(q).to(x.dtype)
        for blk in self.blocks:
            x = blk(x, c)
        return x


class Upsample2x(nn.Module):
    """1x1 conv to 4*c_out channels then PixelShuffle(2): (B, c_in, h, w) -> (B, c_out, 2h, 2w)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, 4 * c_out, kernel_size=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.proj(x))


class Analysis(nn.Module):
    """g_a: x (B, 3, H, W) in [0, 1] -> y (B, M, H/16, W/16)."""

    def __init__(self, cfg: DefaultConfig) -> None:
        super().__init__()
        c0, c1, c2 = cfg.enc
        self.stem = nn.Conv2d(3, c0, kernel_size=5, stride=2, padding=2)
        self.down1 = nn.Conv2d(c0, c1, kernel_size=3, stride=2, padding=1)
        self.stage1 = ConditionedStage(c1, cfg.enc_blocks[0], 1, cfg.mlp_ratio)
        self.down2 = nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1)
        self.stage2 = ConditionedStage(c2, cfg.enc_blocks[1], 1, cfg.mlp_ratio)
        self.down3 = nn.Conv2d(c2, cfg.latent, kernel_size=3, stride=2, padding=1)
        self.base: nn.Conv2d | None = None
        if cfg.dct_base:
            self.base = nn.Conv2d(3, cfg.latent, kernel_size=BASE_BLOCK, stride=BASE_BLOCK, bias=False)
            # Fixed (not trained): Adam's per-weight steps would soon swamp the ~1/16-sized
            # basis weights; the nonlinear branch learns the corrections instead.
            self.base.weight.requires_grad_(False)
            with torch.no_grad():
                self.base.weight.copy_(orthonormal_block_transform())
                # The nonlinear branch starts silent: y is the linear transform alone.
                self.down3.weight.zero_()
                self.down3.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q0 = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        xs = x * 2.0 - 1.0
        h = F.gelu(self.stem(xs))
        h = self.stage1(self.down1(h), q0)
        h = self.stage2(self.down2(h), q0)
        y = self.down3(h)
        return y if self.base is None else y + self.base(xs)


class Synthesis(nn.Module):
    """g_s: y_hat (B, M, h, w) and rate levels q (B,) -> x_hat (B, 3, 16h, 16w), roughly in [0, 1]."""

    def __init__(self, cfg: DefaultConfig) -> None:
        super().__init__()
        d0, d1, d2, d3 = cfg.dec
        n0, n1, n2, n3 = cfg.dec_blocks
        self.proj_in = nn.Conv2d(cfg.latent, d0, kernel_size=1)
        self.stage0 = ConditionedStage(d0, n0, cfg.levels, cfg.mlp_ratio)
        self.up1 = Upsample2x(d0, d1)
        self.stage1 = ConditionedStage(d1, n1, cfg.levels, cfg.mlp_ratio)
        self.up2 = Upsample2x(d1, d2)
        self.stage2 = ConditionedStage(d2, n2, cfg.levels, cfg.mlp_ratio)
        self.up3 = Upsample2x(d2, d3)
        self.stage3 = ConditionedStage(d3, n3, cfg.levels, cfg.mlp_ratio)
        self.proj_out = nn.ConvTranspose2d(d3, 3, kernel_size=5, stride=2, padding=2, output_padding=1)
        self.base: nn.ConvTranspose2d | None = None
        if cfg.dct_base:
            self.base = nn.ConvTranspose2d(cfg.latent, 3, kernel_size=BASE_BLOCK, stride=BASE_BLOCK, bias=False)
            self.base.weight.requires_grad_(False)  # fixed, as in Analysis
            with torch.no_grad():
                self.base.weight.copy_(orthonormal_block_transform())
                self.proj_out.weight.zero_()
                self.proj_out.bias.zero_()

    def forward(self, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        h = self.stage0(self.proj_in(y), q)
        h = self.stage1(self.up1(h), q)
        h = self.stage2(self.up2(h), q)
        h = self.stage3(self.up3(h), q)
        out = self.proj_out(h)
        if self.base is not None:
            out = out + self.base(y)
        return out * 0.5 + 0.5


class HyperAnalysis(nn.Module):
    """h_a: y (B, M, h, w) -> z (B, Nz, h/4, w/4)."""

    def __init__(self, cfg: DefaultConfig) -> None:
        super().__init__()
        n = cfg.hyper
        self.conv1 = nn.Conv2d(cfg.latent, n, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(n, n, kernel_size=5, stride=2, padding=2)
        self.conv3 = nn.Conv2d(n, cfg.hyper_latent, kernel_size=5, stride=2, padding=2)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(y)))))


class HyperSynthesis(nn.Module):
    """h_s: z_hat (B, Nz, h, w) -> (scales, means), each (B, M, 4h, 4w); scales >= 0.11."""

    def __init__(self, cfg: DefaultConfig) -> None:
        super().__init__()
        n = cfg.hyper
        self.latent = cfg.latent
        self.conv1 = nn.ConvTranspose2d(cfg.hyper_latent, n, kernel_size=5, stride=2, padding=2, output_padding=1)
        self.conv2 = nn.ConvTranspose2d(n, n * 3 // 2, kernel_size=5, stride=2, padding=2, output_padding=1)
        # With the 768-channel DCT latent a 3x3 output layer would hold most of the weights.
        k = 1 if cfg.dct_base else 3
        self.conv3 = nn.Conv2d(n * 3 // 2, 2 * cfg.latent, kernel_size=k, padding=k // 2)
        with torch.no_grad():
            # Start with broad scales (softplus(4) + 0.11 ~ 4.1) so the first rates are finite.
            self.conv3.bias[: cfg.latent].fill_(4.0)
            if cfg.unit_hyper:
                # Means start at zero: a random mean shifts the quantization grid of every
                # near-zero coefficient and turns its zero into an error of |mean|.
                self.conv3.weight[cfg.latent :].zero_()
                self.conv3.bias[cfg.latent :].zero_()

    def forward(self, z_hat: torch.Tensor, gain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Without ``gain``: scales = softplus(.) + 0.11, means. With ``gain`` (B, M, 1, 1) (the
        ``unit_hyper`` models): scales = gain * softplus(.) + 0.11, means = gain * (.)."""
        return self.params(*self.raw(z_hat), gain)

    def raw(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer's (raw scales, raw means), each (B, M, 4h, 4w), before softplus/gain."""
        h = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(z_hat)))))
        raw_scales, raw_means = h.split(self.latent, dim=1)
        return raw_scales, raw_means

    @staticmethod
    def params(raw_scales: torch.Tensor, raw_means: torch.Tensor,
               gain: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scales, means) from raw outputs (see ``forward``)."""
        if gain is None:
            return F.softplus(raw_scales) + SCALE_MIN, raw_means
        return F.softplus(raw_scales) * gain + SCALE_MIN, raw_means * gain


class CheckerboardContext(nn.Module):
    """Checkerboard context: anchors' y_hat (B, M, h, w) (gain-free domain, 0 at non-anchors) ->
    offsets (B, 2M, h, w) of h_s's raw (scales, means), used at non-anchor positions only.

    ``conv1``: k x k, M -> hidden, its weights masked to the checkerboard taps (ky + kx odd, the
    centre never), so that a non-anchor reads only anchors; GELU; ``conv2``: 1x1, hidden -> 2M,
    starting at zero (a fresh context changes nothing). The weight of ``conv1`` is stored unmasked;
    every use multiplies it by the mask (a non-persistent buffer).
    """

    def __init__(self, latent: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(latent, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(hidden, 2 * latent, 1)
        self.register_buffer("mask", checkerboard_taps(kernel).to(torch.float32), persistent=False)
        with torch.no_grad():
            self.conv1.weight.mul_(self.mask)
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()

    def forward(self, y_anchor: torch.Tensor) -> torch.Tensor:
        w = self.conv1.weight * self.mask.to(self.conv1.weight.dtype)
        h = F.gelu(F.conv2d(y_anchor, w, self.conv1.bias, padding=self.conv1.padding))
        return self.conv2(h)


class DefaultCodecModel(nn.Module):
    """Variable-rate mean-scale hyperprior (see the module docstring).

    Parameters worth naming: ``gain`` and ``inv_gain`` (levels, M), stored as logs
    (``log_gain``, ``log_inv_gain``) so they stay positive.
    """

    def __init__(self, cfg: DefaultConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DefaultConfig()
        c = self.cfg
        self.g_a = Analysis(c)
        self.g_s = Synthesis(c)
        self.h_a = HyperAnalysis(c)
        self.h_s = HyperSynthesis(c)
        self.density_z = FactorizedDensity(c.hyper_latent)
        self.context: CheckerboardContext | None = None
        if c.context == "checkerboard":
            self.context = CheckerboardContext(c.latent, c.context_hidden, c.context_kernel)
        # Initial gains spread the rate levels apart: doubling lambda roughly scales the
        # optimal step by 2^(-1/2), so the gains start at sqrt(lambda / lambda_max).
        lam = torch.tensor(c.lambdas, dtype=torch.float32)
        log_g = 0.5 * torch.log(lam / lam.max())
        if c.dct_base:
            # Gain = 1 / quantizer step of the linear codec: step0 at the top level.
            log_g = log_g - math.log(c.step0)
        self.log_gain = nn.Parameter(log_g.view(-1, 1).repeat(1, c.latent))
        self.log_inv_gain = nn.Parameter((-log_g).view(-1, 1).repeat(1, c.latent))
        self._tables_z: Any = None
        self._tables_y: Any = None

    # -- rate levels -----------------------------------------------------------------------
    def _check_levels(self, q: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        q = torch.as_tensor(q, dtype=torch.float32, device=device)
        if q.dim() == 0:
            q = q.expand(batch)
        if q.shape != (batch,):
            raise ValueError(f"quality must be a scalar or a ({batch},) tensor, got shape {tuple(q.shape)}")
        if not bool(torch.isfinite(q).all()) or bool((q < 0).any()) or bool((q > self.cfg.levels - 1).any()):
            raise ValueError(f"quality must lie in [0, {self.cfg.levels - 1}]")
        return q

    def _gain(self, table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Geometric interpolation of a log-gain table (levels, M) at q (B,) -> (B, M, 1, 1)."""
        lo = q.floor().clamp(0, self.cfg.levels - 1)
        hi = (lo + 1).clamp(max=self.cfg.levels - 1)
        t = (q - lo).unsqueeze(1)
        log_g = table[lo.long()] * (1 - t) + table[hi.long()] * t
        return torch.exp(log_g)[:, :, None, None]

    @torch.no_grad()
    def calibrate_scales(self, x: torch.Tensor) -> None:
        """Data-dependent start of the entropy model: set h_s's scale biases from the data.

        For a batch x (B, 3, H, W) in [0, 1], computes the per-channel RMS of y at the middle
        rate level and sets the scale half of ``h_s.conv3.bias`` so that every channel's
        predicted scale starts near it (the bias would otherwise need thousands of small
        optimizer steps to get there: DC-like channels need scales of tens, most others ~0.1).
        """
        self._check_image(x)
        q = torch.full((x.shape[0],), (self.cfg.levels - 1) / 2.0, device=x.device)
        y = self.g_a(x)
        if not self.cfg.unit_hyper:
            y = y * self._gain(self.log_gain, q)
        rms = y.pow(2).mean(dim=(0, 2, 3)).sqrt()
        target = (rms - (0.0 if self.cfg.unit_hyper else SCALE_MIN)).clamp_min(0.02 if not self.cfg.unit_hyper else 1e-3)
        bias = target + torch.log(-torch.expm1(-target))  # softplus^-1(target)
        self.h_s.conv3.bias[: self.cfg.latent].copy_(bias)

    # -- training --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, q: torch.Tensor | float | int) -> dict[str, torch.Tensor]:
        """Training/evaluation pass with the noise proxy for the rates.

        x (B, 3, H, W) float32 in [0, 1], H, W multiples of 64; q rate levels (scalar or (B,)).
        Returns x_hat (B, 3, H, W), likelihoods_y (B, M, H/16, W/16) and likelihoods_z
        (B, Nz, H/64, W/64) (floats in (0, 1]). The decoder sees y rounded around the predicted
        means with a straight-through gradient; the rate uses additive uniform noise.
        """
        self._check_image(x)
        q = self._check_levels(q, x.shape[0], x.device)
        y, z, gain = self._analyse(self.g_a(x), q)
        z_tilde = quantize(z, "noise") if self.training else quantize(z, "round")
        lik_z = self.density_z.likelihood(z_tilde)
        scales, means = self._y_params(y, z_tilde, gain)
        y_rate = quantize(y, "noise") if self.training else quantize(y, "round", means)
        lik_y = gaussian_likelihood(y_rate, means, scales)
        y_hat = quantize(y, "ste", means) if self.training else y_rate
        x_hat = self.g_s(y_hat * self._gain(self.log_inv_gain, q), q)
        return {"x_hat": x_hat, "likelihoods_y": lik_y, "likelihoods_z": lik_z}

    def _analyse(
        self, y_unit: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(y, z, gain for h_s) from the gain-free analysis output y_unit and levels q (B,)."""
        gain = self._gain(self.log_gain, q)
        y = y_unit * gain
        if self.cfg.unit_hyper:
            return y, self.h_a(y_unit), gain
        return y, self.h_a(y), None

    def _y_params(self, y: torch.Tensor, z_tilde: torch.Tensor,
                  gain: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scales, means) of every y symbol (B, M, h, w): h_s's, and with the checkerboard
        context the second pass's at non-anchors. The anchors' y_hat the context sees is y rounded
        around h_s's means (straight-through in training): what the decoder has after pass one.
        One masked conv over the whole grid (He et al. 2021's single-pass training)."""
        raw_s, raw_m = self.h_s.raw(z_tilde)
        if self.context is None:
            return self.h_s.params(raw_s, raw_m, gain)
        _, means1 = self.h_s.params(raw_s, raw_m, gain)
        anchors = anchor_mask(int(y.shape[2]), int(y.shape[3])).to(y.device)
        y_anchor = quantize(y, "ste" if self.training else "round", means1) * anchors
        d_s, d_m = self.context(y_anchor if gain is None else y_anchor / gain).split(self.cfg.latent, dim=1)
        raw_s = torch.where(anchors, raw_s, raw_s + d_s)
        raw_m = torch.where(anchors, raw_m, raw_m + d_m)
        return self.h_s.params(raw_s, raw_m, gain)

    def rd_lambda(self, q: float) -> float:
        """The rate-distortion weight of (fractional) level q: the lambdas interpolated
        geometrically, as the gains are."""
        lams = self.cfg.lambdas
        lo = min(int(math.floor(q)), len(lams) - 1)
        hi = min(lo + 1, len(lams) - 1)
        t = q - lo
        return math.exp(math.log(lams[lo]) * (1 - t) + math.log(lams[hi]) * t)

    def entropy_parameters(self) -> list[nn.Parameter]:
        """The parameters of the entropy model alone: h_a, h_s, the context (if any), the z density."""
        ctx = [] if self.context is None else [*self.context.parameters()]
        return [*self.h_a.parameters(), *self.h_s.parameters(), *ctx, *self.density_z.parameters()]

    def rate_forward(self, x: torch.Tensor, q: torch.Tensor | float | int) -> dict[str, torch.Tensor]:
        """Likelihoods of y and z for the current analysis, without the synthesis.

        The entropy warm-up of training (``python -m cod_fast.train --entropy-steps``) fits the
        entropy model to the analysis before the joint rate-distortion phase: the analysis runs
        without gradient, y and z get the uniform-noise proxy (training) or rounding (eval).
        x (B, 3, H, W) in [0, 1]; returns likelihoods_y (B, M, H/16, W/16) and likelihoods_z.
        """
        self._check_image(x)
        q = self._check_levels(q, x.shape[0], x.device)
        with torch.no_grad():
            y_unit = self.g_a(x)
        y, z, gain = self._analyse(y_unit, q)
        z_tilde = quantize(z, "noise") if self.training else quantize(z, "round")
        scales, means = self._y_params(y, z_tilde, gain)
        y_rate = quantize(y, "noise") if self.training else quantize(y, "round", means)
        return {
            "likelihoods_y": gaussian_likelihood(y_rate, means, scales),
            "likelihoods_z": self.density_z.likelihood(z_tilde),
        }

    @staticmethod
    def _check_image(x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor image, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image tensor of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[2] % STRIDE or x.shape[3] % STRIDE:
            raise ValueError(f"height and width must be multiples of {STRIDE}, got {tuple(x.shape[2:])}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point image in [0, 1], got {x.dtype}")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- entropy coding (inference) ----------------------------------------------------------
    def _hyper_params_cpu(self, z_hat: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h_s on the CPU in float32 whatever device the model is on.

        The scales decide how y's stream is parsed, so encoder and decoder must compute them
        identically: both run this same CPU float32 path (a CPU copy of h_s when the model
        lives elsewhere).
        """
        h_s = self.h_s
        p = next(h_s.parameters())
        if p.device.type != "cpu" or p.dtype != torch.float32:
            h_s = copy.deepcopy(h_s).to(device="cpu", dtype=torch.float32)
        gain = None
        if self.cfg.unit_hyper:
            gain = self._gain(self.log_gain.detach().to(device="cpu", dtype=torch.float32), q.to("cpu"))
        return h_s(z_hat.to(device="cpu", dtype=torch.float32).contiguous(), gain)

    def _z_tables(self) -> Any:
        """rANS tables of z's factorized density (built once per weights; see ``reset_tables``)."""
        if self._tables_z is None:
            pmfs, offsets = self.density_z.pmf_table(tail_mass=TAIL_MASS)
            self._tables_z = CdfTables.from_pmfs(pmfs, offsets, tail_mass=TAIL_MASS)
        return self._tables_z

    def _y_tables(self) -> Any:
        if self._tables_y is None:
            self._tables_y = GaussianConditionalTables(tail_mass=TAIL_MASS)
        return self._tables_y

    def _rans_tables(self, integer: Any) -> tuple[Any, Any]:
        """(y tables, z tables): release 2's stored integer tables, or release 1's built ones."""
        if integer is not None:
            return integer.y_tables, integer.z_tables
        return self._y_tables(), self._z_tables()

    def reset_tables(self) -> None:
        """Forget the cached entropy tables (call after changing the weights)."""
        self._tables_z = None
        self._tables_y = None

    @property
    def _n_strings(self) -> int:
        """Byte strings of a compressed image: [y, z], or [y anchors, z, y non-anchors]."""
        return 2 if self.context is None else 3

    @property
    def _strings_names(self) -> str:
        return "[y, z]" if self.context is None else "[y anchors, z, y non-anchors]"

    def _check_release(self, integer: Any) -> None:
        """ValueError unless the entropy parameters fit the model: a model with a context codes
        only through integer parameters that have its context, and one without through none."""
        has = integer is not None and getattr(integer.params, "context", None) is not None
        if (self.context is not None) != has:
            raise ValueError("a model with a checkerboard context codes only with integer parameters that have it "
                             "(export_integer_params of that model), and a model without one only without")

    def _z_indexes(self, shape: tuple[int, int]) -> torch.Tensor:
        c = self.cfg.hyper_latent
        return torch.arange(c, dtype=torch.int32).view(c, 1).expand(c, shape[0] * shape[1]).reshape(-1)

    @torch.no_grad()
    def compress(
        self, x: torch.Tensor, quality: float = 3.0, threads: int | None = None, rdoq: bool = False,
        integer: Any = None, backend: str = "reference", y_unit: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Entropy-code one image.

        x: (1, 3, H, W) float in [0, 1] (any H, W >= 1; padded bottom/right by replication to
        multiples of 64 and cropped back by ``decompress``); quality: rate level in
        [0, levels - 1] (fractional values interpolate); rdoq: choose each y symbol by
        rate-distortion cost (``rdo_symbols``) instead of plain rounding -- an encoder-only
        decision, the stream format and decoder are the same. ``integer``: release 2's
        ``integer_params.IntegerEntropyModel`` (entropy parameters and tables in fixed point,
        computed on ``backend``: "reference", "cpp" or "triton", identical integers); None:
        release 1's float32 hyper synthesis. ``y_unit``: the gain-free analysis output to code
        instead of ``g_a``'s, float32 (1, M, H'/16, W'/16) of the padded image (e.g.
        ``refine.refine_latents``'); x then only gives the size. Returns ``{"strings": [y_bytes,
        z_bytes], "shape": (H/64, W/64) of z (padded), "image_size": (H, W), "quality": q}``.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"compress expects one image of shape (1, 3, H, W), got {getattr(x, 'shape', type(x))}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point image in [0, 1], got {x.dtype}")
        h, w = int(x.shape[2]), int(x.shape[3])
        if h < 1 or w < 1:
            raise ValueError("image must be at least 1x1")
        self._check_release(integer)
        dev = next(self.parameters()).device
        q = self._check_levels(quality, 1, dev)
        xp = pad_to_stride(x.to(device=dev, dtype=next(self.g_a.parameters()).dtype))
        if y_unit is not None:
            grid = (1, self.cfg.latent, int(xp.shape[2]) // 16, int(xp.shape[3]) // 16)
            if tuple(y_unit.shape) != grid:
                raise ValueError(f"y_unit must be {grid} for a {h}x{w} image, got {tuple(y_unit.shape)}")
            if not bool(torch.isfinite(y_unit).all()):
                raise ValueError("y_unit must be finite")
            y_given = y_unit.to(device=dev, dtype=torch.float32)
        elif lowmem.usable(self.g_a, xp) and integer is not None:
            # Bounded memory (``lowmem``): bitwise the same y, z and symbols as below.
            y_unit = lowmem.analysis(self.g_a, xp)
            del xp
            return self._compress_banded(y_unit, q, (h, w), threads, rdoq, integer, backend)
        y, z, _ = self._analyse(self.g_a(xp) if y_unit is None else y_given, q)
        z_sym = torch.round(z).to("cpu", torch.float32)
        y_cpu = y.to("cpu", torch.float32)
        z_shape = (int(z.shape[2]), int(z.shape[3]))
        if self.context is not None:  # release 3: checkerboard context
            return self._compress_context(y_cpu, z_sym, z_shape, q, (h, w), threads, rdoq, integer, backend)
        y_tables, z_tables = self._rans_tables(integer)
        if integer is None:  # release 1: float32 hyper synthesis
            scales, means = self._hyper_params_cpu(z_sym, q)
            y_sym = torch.round(y_cpu - means).to(torch.int32)
            y_idx = self._y_tables().build_indexes(scales.reshape(-1))
            if rdoq:
                table_scales = self._y_tables().scale_table[y_idx.long()].reshape(y_sym.shape)
                inv_gain = self._gain(self.log_inv_gain.detach().to("cpu", torch.float32), q.to("cpu"))
                y_sym = rdo_symbols(y_cpu, means, table_scales, inv_gain, self.rd_lambda(float(q[0])))
        else:  # release 2: fixed point (integer_params), on row bands as the banded path
            p = integer.params
            idx4, m_q = entropy_parameters(p, z_sym.to(torch.int32), float(q[0]), backend)
            y_sym = self._integer_symbols(y_cpu, idx4, m_q, p.mean_frac_bits, q, rdoq)
            y_idx = idx4.reshape(-1)
        return self._pack(y_tables, z_tables, [(y_sym, y_idx)], index_checksum(y_idx), z_sym, z_shape, (h, w),
                          float(q[0]), threads)

    def _compress_banded(
        self, y_unit: torch.Tensor, q: torch.Tensor, image_size: tuple[int, int], threads: int | None,
        rdoq: bool, integer: Any, backend: str,
    ) -> dict[str, Any]:
        """``compress`` from the gain-free analysis output y_unit (1, M, h, w) CPU float32, release 2,
        with every per-coefficient step (quantization, RDOQ, their float64 temporaries) on row
        bands of y: the same operations per element as ``compress``'s whole-tensor path, so the
        same symbols and stream bytes in a fraction of the memory."""
        gain = self._gain(self.log_gain, q)
        if self.cfg.unit_hyper:
            z = self.h_a(y_unit)
            y = y_unit.mul_(gain)  # y_unit * gain, in place (y_unit is not needed any more)
        else:
            y = y_unit.mul_(gain)
            z = self.h_a(y)
        del y_unit
        z_sym = torch.round(z).to("cpu", torch.float32)
        z_shape = (int(z.shape[2]), int(z.shape[3]))
        if self.context is not None:  # release 3: checkerboard context (whole-tensor symbols)
            return self._compress_context(y, z_sym, z_shape, q, image_size, threads, rdoq, integer, backend)
        y_tables, z_tables = self._rans_tables(integer)
        p = integer.params
        idx4, m_q = entropy_parameters(p, z_sym.to(torch.int32), float(q[0]), backend)
        y_sym = self._integer_symbols(y, idx4, m_q, p.mean_frac_bits, q, rdoq)
        del m_q, y
        y_idx = idx4.reshape(-1)
        return self._pack(y_tables, z_tables, [(y_sym, y_idx)], index_checksum(y_idx), z_sym, z_shape, image_size,
                          float(q[0]), threads)

    def _compress_context(
        self, y: torch.Tensor, z_sym: torch.Tensor, z_shape: tuple[int, int], q: torch.Tensor,
        image_size: tuple[int, int], threads: int | None, rdoq: bool, integer: Any, backend: str,
    ) -> dict[str, Any]:
        """``compress`` of a model with the checkerboard context, from y (1, M, h, w) CPU float32 and
        the rounded z: pass one's integer parameters give the anchors' symbols, whose y_hat feeds
        the context (``integer_params.context_input``), then pass two's give the non-anchors'.
        Anchors and non-anchors are handled packed (``checkerboard_split``). Returns ``_pack``'s
        dict with three strings [y anchors, z, y non-anchors]."""
        p, qf = integer.params, float(q[0])
        feats = hyper_features(p, z_sym.to(torch.int32), backend)
        y_a, y_n = checkerboard_split(y)
        idx_a, m_a = head_codes(p, feats, qf, backend, part="anchors")
        sym_a = self._integer_symbols(y_a, idx_a, m_a, p.mean_frac_bits, q, rdoq)
        idx_n, m_n = head_codes(p, feats, qf, backend, context_input(p, sym_a, m_a, qf), part="non_anchors")
        del feats
        sym_n = self._integer_symbols(y_n, idx_n, m_n, p.mean_frac_bits, q, rdoq)
        y_tables, z_tables = self._rans_tables(integer)
        # (all the indexes in raster order, the anchors' alone): the decoder checks the second before
        # it parses the anchors, the first before the non-anchors
        crc = (index_checksum(checkerboard_merge(idx_a, idx_n)), index_checksum(idx_a))
        return self._pack(y_tables, z_tables, [(sym_a, idx_a), (sym_n, idx_n)], crc, z_sym, z_shape, image_size,
                          qf, threads)

    def _integer_symbols(self, y: torch.Tensor, idx: torch.Tensor, m_q: torch.Tensor, mean_frac_bits: int,
                         q: torch.Tensor, rdoq: bool) -> torch.Tensor:
        """int32 symbols of y (1, M, h, w') CPU float32 around the mean codes ``m_q`` (same shape):
        rounded (``quantize_y``) or, with ``rdoq``, chosen by ``rdo_symbols`` under the table scales
        ``idx``. Per element, so a packed half of the grid gives the half of the whole grid's, and
        computed on row bands of ``SYMBOL_BAND_POSITIONS`` (RDOQ's float64 temporaries are several
        times y's size): the same symbols as one whole-tensor call."""
        out = torch.empty(y.shape, dtype=torch.int32)
        if rdoq:
            inv_gain = self._gain(self.log_inv_gain.detach().to("cpu", torch.float32), q.to("cpu"))
            scale_table = self._y_tables().scale_table
            lam = self.rd_lambda(float(q[0]))
        rows = max(1, SYMBOL_BAND_POSITIONS // max(1, int(y.shape[3])))
        for r0 in range(0, int(y.shape[2]), rows):
            band = (slice(None), slice(None), slice(r0, r0 + rows))
            yb, mb = y[band], m_q[band]
            if not rdoq:
                out[band] = quantize_y(yb, mb, mean_frac_bits)
                continue
            if not bool(torch.isfinite(yb).all()):  # quantize_y's check, which the RDOQ path skips
                raise ValueError("y must be finite")
            means = dequantize_y(torch.zeros_like(mb), mb, mean_frac_bits)
            out[band] = rdo_symbols(yb, means, scale_table[idx[band].long()], inv_gain, lam)
        return out

    @staticmethod
    def _dequantize_means(m_q: torch.Tensor, mean_frac_bits: int) -> torch.Tensor:
        """The float32 means of the mean codes ``m_q`` (1, M, h, w) int32: ``dequantize_y(0, m_q)``
        on row bands (its float64 temporaries are 4x y's size), the same values."""
        means = torch.empty(m_q.shape, dtype=torch.float32)
        rows = max(1, SYMBOL_BAND_POSITIONS // max(1, int(m_q.shape[3])))
        for r0 in range(0, int(m_q.shape[2]), rows):
            mb = m_q[:, :, r0: r0 + rows]
            means[:, :, r0: r0 + rows] = dequantize_y(torch.zeros_like(mb), mb, mean_frac_bits)
        return means

    def _pack(self, y_tables: Any, z_tables: Any, y_parts: list[tuple[torch.Tensor, torch.Tensor]],
              index_crc: int | tuple[int, int],
              z_sym: torch.Tensor, z_shape: tuple[int, int], image_size: tuple[int, int], quality: float,
              threads: int | None) -> dict[str, Any]:
        """The rANS streams of y and z, and the fields ``compress`` returns; shared by the
        whole-tensor, banded and context paths. ``y_parts``: (symbols, table indexes) of each y
        stream, one (every position) or, with the checkerboard context, two (anchors, non-anchors,
        packed; each stream in raster order); the strings are then [y, z] or [y anchors, z, y
        non-anchors]. ``index_crc``: the CRC of all the y table indexes in raster order, or with the
        context the pair (that CRC, the CRC of the anchors' indexes in their packed raster order)."""
        z_bytes = z_tables.encode(z_sym.to(torch.int32).reshape(-1), self._z_indexes(z_shape), threads=threads)
        y_bytes = [bytes(y_tables.encode(sym.reshape(-1), idx.reshape(-1), threads=threads)) for sym, idx in y_parts]
        return {"strings": [y_bytes[0], bytes(z_bytes), *y_bytes[1:]], "shape": z_shape, "image_size": image_size,
                "quality": quality, "index_crc": index_crc}

    @torch.no_grad()
    def decode_symbols(
        self,
        strings: list[bytes],
        z_shape: tuple[int, int],
        quality: float = 3.0,
        threads: int | None = None,
        index_crc: int | tuple[int, int] | None = None,
        integer: Any = None,
        backend: str = "reference",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The entropy-decoded integers of a stream, without the synthesis: ``(y symbols int32
        (1, M, 4 zh, 4 zw), z symbols int32 (1, Nz, zh, zw))`` on the CPU (arguments as in
        ``decompress``). ``y_hat = y symbols + means`` is what the synthesis sees."""
        if not isinstance(strings, (list, tuple)) or len(strings) != self._n_strings:
            raise TypeError(f"strings must be a list of {self._n_strings} byte strings {self._strings_names}")
        zh, zw = int(z_shape[0]), int(z_shape[1])
        if zh < 1 or zw < 1 or zh * zw > MAX_Z_POSITIONS:
            raise ValueError(f"z_shape {z_shape} must be positive with at most {MAX_Z_POSITIONS} positions")
        q = self._check_levels(quality, 1, next(self.parameters()).device)
        y_sym, z_sym, _ = self._decode_symbols(strings, (zh, zw), q, threads, index_crc, integer, backend)
        return y_sym, z_sym

    def _decode_symbols(
        self, strings: list[bytes], z_shape: tuple[int, int], q: torch.Tensor, threads: int | None,
        index_crc: int | tuple[int, int] | None, integer: Any = None, backend: str = "reference",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(y symbols int32 (1, M, h, w), z symbols int32 (1, Nz, zh, zw), means float32 (1, M, h, w))."""
        self._check_release(integer)
        zh, zw = z_shape
        c = self.cfg.hyper_latent
        y_tables, z_tables = self._rans_tables(integer)
        z_sym = z_tables.decode(bytes(strings[1]), self._z_indexes((zh, zw)), threads=threads)
        if self.context is not None:
            return self._decode_context(strings, z_sym.to(torch.int32).reshape(1, c, zh, zw), q, threads,
                                        index_crc, integer, backend)
        if integer is None:  # release 1: float32 hyper synthesis
            z_hat = z_sym.to(torch.float32).reshape(1, c, zh, zw)
            scales, means = self._hyper_params_cpu(z_hat, q)
            y_idx = self._y_tables().build_indexes(scales.reshape(-1))
        else:  # release 2: fixed point
            p = integer.params
            idx4, m_q = entropy_parameters(p, z_sym.to(torch.int32).reshape(1, c, zh, zw), float(q[0]), backend)
            means = self._dequantize_means(m_q, p.mean_frac_bits)
            del m_q
            y_idx = idx4.reshape(-1)
        self._check_index_crc(y_idx, index_crc, integer)
        y_sym = y_tables.decode(bytes(strings[0]), y_idx, threads=threads)
        return y_sym.to(torch.int32).reshape(means.shape), z_sym.to(torch.int32).reshape(1, c, zh, zw), means

    def _decode_context(
        self, strings: list[bytes], z_sym: torch.Tensor, q: torch.Tensor, threads: int | None,
        index_crc: int | tuple[int, int] | None, integer: Any, backend: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_decode_symbols`` of the checkerboard context: the anchors (pass one's integer
        parameters), then the context on their y_hat, then the non-anchors (pass two's). The index
        CRC is checked before the non-anchors' stream is parsed."""
        p, qf = integer.params, float(q[0])
        feats = hyper_features(p, z_sym, backend)
        idx_a, m_a = head_codes(p, feats, qf, backend, part="anchors")
        crc_all, crc_anchors = index_crc if isinstance(index_crc, tuple) else (index_crc, None)
        self._check_index_crc(idx_a, crc_anchors, integer, "the anchors' ")
        sym_a = integer.y_tables.decode(bytes(strings[0]), idx_a.reshape(-1), threads=threads)
        sym_a = sym_a.to(torch.int32).reshape(idx_a.shape)
        idx_n, m_n = head_codes(p, feats, qf, backend, context_input(p, sym_a, m_a, qf), part="non_anchors")
        del feats
        self._check_index_crc(checkerboard_merge(idx_a, idx_n), crc_all, integer)
        sym_n = integer.y_tables.decode(bytes(strings[2]), idx_n.reshape(-1), threads=threads)
        y_sym = checkerboard_merge(sym_a, sym_n.to(torch.int32).reshape(idx_n.shape))
        del sym_a, sym_n, idx_a, idx_n
        m_q = checkerboard_merge(m_a, m_n)
        del m_a, m_n
        return y_sym, z_sym, self._dequantize_means(m_q, p.mean_frac_bits)

    def _check_index_crc(self, y_idx: torch.Tensor, index_crc: int | None, integer: Any, which: str = "") -> None:
        """EntropyParameterMismatchError when the y table indexes' CRC differs from the encoder's
        (``which``: "anchors' " for the anchors' CRC of a model with the context)."""
        if index_crc is not None and index_checksum(y_idx) != int(index_crc):
            how = ("they come from a float32 hyper synthesis (release 1) whose rounding depends on the torch thread "
                   "count, the CPU's kernels and the BLAS, so they differ where that maths rounds otherwise than "
                   "the encoder's did (or where the stream was altered)"
                   if integer is None else
                   "they come from integers only (releases 2 and 3), so the stream was altered or written by another "
                   "implementation of the fixed-point spec")
            exc = EntropyParameterMismatchError(
                f"the {which}y table indexes computed here (CRC32 {index_checksum(y_idx):08x}) differ from the "
                f"encoder's ({int(index_crc):08x}): {how}; the y stream cannot be parsed")
            exc.computed_crc, exc.stream_crc = index_checksum(y_idx), int(index_crc)
            raise exc

    @torch.no_grad()
    def decompress(
        self,
        strings: list[bytes],
        z_shape: tuple[int, int],
        quality: float = 3.0,
        image_size: tuple[int, int] | None = None,
        threads: int | None = None,
        index_crc: int | tuple[int, int] | None = None,
        integer: Any = None,
        backend: str = "reference",
        as_uint8: bool = False,
    ) -> torch.Tensor:
        """Inverse of ``compress``: returns x_hat (1, 3, H, W) float32 in [0, 1] on the model's
        device, cropped to ``image_size`` when given (else the padded size 64 * z_shape).
        ``as_uint8``: return instead the pixels ``round(255 * x_hat[0])`` as uint8 (3, H, W) on the
        CPU; on a CPU float32 model computed on row bands (``lowmem``: bounded memory, the same
        bits).

        ``index_crc``: the encoder's ``index_checksum`` of the y table indexes (``compress``
        returns it; with the checkerboard context the pair (all indexes, the anchors' alone));
        when given, the decoder's indexes must match it before y is parsed (with the context: the
        anchors' before the anchors, all before the non-anchors), else
        ``EntropyParameterMismatchError``. ``integer``/``backend``: as in ``compress`` (the stream's
        release decides which)."""
        if not isinstance(strings, (list, tuple)) or len(strings) != self._n_strings or not all(
            isinstance(s, (bytes, bytearray, memoryview)) for s in strings
        ):
            raise TypeError(f"strings must be a list of {self._n_strings} byte strings {self._strings_names}")
        if len(z_shape) != 2 or any(int(v) < 1 for v in z_shape):
            raise ValueError(f"z_shape must be two positive integers, got {z_shape!r}")
        zh, zw = int(z_shape[0]), int(z_shape[1])
        if zh * zw > MAX_Z_POSITIONS:
            raise ValueError(f"z_shape {z_shape} exceeds the largest supported image ({MAX_Z_POSITIONS} z positions)")
        if image_size is not None:
            ih, iw = int(image_size[0]), int(image_size[1])
            if not (0 < ih <= zh * STRIDE and 0 < iw <= zw * STRIDE and ih > (zh - 1) * STRIDE and iw > (zw - 1) * STRIDE):
                raise ValueError(f"image_size {image_size} does not match z_shape {z_shape}")
        dev = next(self.parameters()).device
        q = self._check_levels(quality, 1, dev)
        y_sym, _, means = self._decode_symbols(strings, (zh, zw), q, threads, index_crc, integer, backend)
        y_hat = means.add_(y_sym.to(torch.float32))  # y_sym + means, in place
        del y_sym, means
        return self.synthesize(y_hat, q, image_size, as_uint8)

    @torch.no_grad()
    def synthesize(
        self, y_hat: torch.Tensor, q: torch.Tensor, image_size: tuple[int, int] | None = None,
        as_uint8: bool = False, g_s: nn.Module | None = None,
    ) -> torch.Tensor:
        """The second half of ``decompress``: x_hat from the decoded latent ``y_hat`` = y symbols +
        means (float32 (1, M, h, w) CPU, still in the gain domain; consumed: scaled in place) at
        rate level ``q`` (a float or a (1,) tensor, checked as in ``decompress``); ``image_size`` and ``as_uint8`` and the result as
        in ``decompress`` (``decompress`` is ``_decode_symbols`` then this, so a caller that splits
        the two halves, e.g. ``cod_fast.decode_many``, gets the same pixels bit for bit). ``g_s``: a
        copy of ``self.g_s`` to run instead (``copy.deepcopy``: same pixels; parallel callers give
        each thread its own copy)."""
        if not isinstance(y_hat, torch.Tensor) or y_hat.dim() != 4 or y_hat.shape[:2] != (1, self.cfg.latent):
            raise ValueError(f"y_hat must be (1, {self.cfg.latent}, h, w), got {getattr(y_hat, 'shape', type(y_hat))}")
        dev = next(self.parameters()).device
        q = self._check_levels(q, 1, dev)
        inv_gain = self._gain(self.log_inv_gain, q)
        g_s = self.g_s if g_s is None else g_s
        if as_uint8 and lowmem.usable(g_s, y_hat) and dev.type == "cpu":
            # then * inv_gain, in place: the same float32 operations per element as below
            y_hat = y_hat.mul_(inv_gain)
            return lowmem.synthesis_uint8(g_s, y_hat, q, None if image_size is None else
                                          (int(image_size[0]), int(image_size[1])))
        dtype = next(g_s.parameters()).dtype  # float32, or bfloat16/float16 for a cast model
        x_hat = g_s((y_hat.to(dev) * inv_gain).to(dtype), q).clamp_(0.0, 1.0)
        if image_size is not None:
            x_hat = x_hat[:, :, : int(image_size[0]), : int(image_size[1])]
        if as_uint8:
            return (x_hat[0].float() * 255.0).round_().clamp_(0, 255).to(torch.uint8).to("cpu").contiguous()
        return x_hat


def add_checkerboard_context(net: DefaultCodecModel, kernel: int = 3, hidden: int = 128,
                             seed: int = 0) -> DefaultCodecModel:
    """A copy of ``net`` (no context) with a fresh checkerboard context: same weights, config
    ``context="checkerboard"``; the context's output layer is zero, so its likelihoods, symbols
    and decoded pixels equal ``net``'s until the context is trained. ``seed`` draws conv1's
    initial weights (torch's default init under ``torch.manual_seed(seed)``, the global RNG
    restored). Returned on ``net``'s device, in ``net``'s train/eval mode."""
    if net.context is not None:
        raise ValueError("the model already has a context")
    cfg = dataclasses.replace(net.cfg, context="checkerboard", context_kernel=kernel, context_hidden=hidden)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = DefaultCodecModel(cfg)
    missing, unexpected = out.load_state_dict(net.state_dict(), strict=False)
    if unexpected or any(not k.startswith("context.") for k in missing):
        raise RuntimeError(f"state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    p = next(net.parameters())
    return out.to(device=p.device).train(net.training)


def remove_checkerboard_context(net: DefaultCodecModel) -> DefaultCodecModel:
    """A copy of ``net`` (with a context) without it: the same transforms and hyperprior, config
    ``context="none"``, so every y symbol is coded with the hyperprior alone (the inverse of
    ``add_checkerboard_context`` up to the context's weights). Returned on ``net``'s device, in
    ``net``'s train/eval mode."""
    if net.context is None:
        raise ValueError("the model has no context")
    cfg = dataclasses.replace(net.cfg, context="none")
    out = DefaultCodecModel(cfg)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("context.")}
    out.load_state_dict(state, strict=True)
    p = next(net.parameters())
    return out.to(device=p.device).train(net.training)


#: How much more a y symbol change costs in distortion than the linear synthesis path alone says
#: (``rdo_symbols``): the learned refinement branch also carries the change, and the greedy
#: per-coefficient errors add up. Chosen by measurement on images that are not Kodak (the held-out
#: wallpaper, the demo photo and 12 training crops, levels 0-4, real bytes): BD-rate against the
#: unscaled model (1.0) -1.5 % at 2, -1.6 % at 3, -1.5 % at 4, -1.1 % at 6, +1.0 % for plain
#: rounding. (On 6 Kodak images, checked afterwards: -3.7 % at 3.)
RDOQ_DISTORTION_SCALE = 3.0


def rdo_symbols(
    y: torch.Tensor, means: torch.Tensor, scales: torch.Tensor, inv_gain: torch.Tensor, lam: float,
    distortion_scale: float = RDOQ_DISTORTION_SCALE,
) -> torch.Tensor:
    """Rate-distortion optimised y symbols: for each coefficient, round(y - mean) or the next
    integer towards zero, whichever has the lower cost ``lam * 255^2 * MSE + bits`` per pixel.

    y, means, scales (1, M, h, w) float32 (scales: the table scale each symbol is coded with);
    inv_gain (1, M, 1, 1). The distortion of a change e in channel c is modelled on the linear
    synthesis path, which is orthonormal up to its 0.5 * inv_gain[c] factor: per image pixel
    count, 255^2 * lam * (0.5 * inv_gain[c] * e)^2 / 3 (three colour channels), times
    ``distortion_scale`` (``RDOQ_DISTORTION_SCALE``; 1.0: the linear path alone, large values
    approach plain rounding); the rate is the Gaussian bits of the symbol under its scale (escapes
    ignored). Greedy and per coefficient (the hyperprior's z is fixed), so it never raises the
    modelled cost of any single coefficient. Returns int32 symbols of y's shape.
    """
    r = y - means
    k0 = torch.round(r)
    k1 = k0 - torch.sign(k0)  # towards zero; equals k0 where k0 == 0
    weight = distortion_scale * lam * 255.0**2 * (0.5 * inv_gain) ** 2 / 3.0

    def cost(k: torch.Tensor) -> torch.Tensor:
        a = k.abs()
        p = _std_normal_cdf_f64((a + 0.5) / scales) - _std_normal_cdf_f64((a - 0.5) / scales)
        bits = -torch.log2(p.clamp_min(1e-9))
        return weight * (k - r) ** 2 + bits

    choose = cost(k1) < cost(k0)
    return torch.where(choose, k1, k0).to(torch.int32)


def _std_normal_cdf_f64(v: torch.Tensor) -> torch.Tensor:
    """Phi(v) in float64 (tail precision for the bit costs of unlikely symbols)."""
    return 0.5 * torch.erfc(v.double() * (-1.0 / math.sqrt(2.0)))


def index_checksum(indexes: torch.Tensor) -> int:
    """CRC32 of table indexes (any integer tensor with values in [0, 255]) as uint8 bytes."""
    return zlib.crc32(indexes.to(device="cpu", dtype=torch.uint8).contiguous().numpy().tobytes())


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Replicate-pad x (B, C, H, W) at the bottom/right up to multiples of ``stride``."""
    h, w = x.shape[-2:]
    ph = (-h) % stride
    pw = (-w) % stride
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def bits_of(likelihoods: torch.Tensor) -> torch.Tensor:
    """Information content in bits, summed per batch element: (B, ...) -> (B,)."""
    return -torch.log2(likelihoods).flatten(1).sum(1)


__all__ = ["DefaultConfig", "DefaultCodecModel", "CheckerboardContext", "add_checkerboard_context", "STRIDE", "pad_to_stride", "bits_of", "index_checksum"]
