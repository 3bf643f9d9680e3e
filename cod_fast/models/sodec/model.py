"""SODEC as one module: hyperprior latent -> one-step diffusion decoder with fidelity guidance.

SODEC (arXiv 2508.04979; no code or weights were released) decodes in one UNet step:

1. ``hyperprior`` (``SodecHyperprior``): image -> y -> z; the entropy-coded latents. The float
   hyper synthesis of z_hat also gives the features ``w`` = (scales, means) [N, 2M, h, w] at
   y's resolution.
2. ``transform`` (``TransformModule``): (y_hat, w) -> the diffusion latent [N, 4, H/8, W/8] (in
   the UNet's scaled latent space).
3. ``fidelity_decoder`` (``FidelityDecoder``): y_hat -> a coarse image x_f [N, 3, H, W] in [-1, 1].
4. ``guidance`` (``FidelityGuidance``): frozen ViT on x_f (resized to the ViT's input size) +
   trainable projection -> the UNet's ``encoder_hidden_states``.
5. ``unet`` (``UNet2DConditionModel``, diffusers keys; LoRA merged at load): one step at
   t = ``timestep`` (999) from the transformed latent, x0 by the DDPM schedule (``one_step``).
6. ``vae`` (the SD-VAE ``AutoencoderKL`` mirror, decoder half only): x0 / scaling_factor -> image.

State-dict prefixes: ``hyperprior.``, ``transform.``, ``fidelity_decoder.``, ``guidance.``
(``guidance.vit.*`` timm ViT names, ``guidance.projection.*``), ``unet.`` (diffusers
``UNet2DConditionModel`` keys), ``vae.`` (diffusers ``AutoencoderKL`` keys of ``decoder.*`` and
``post_quant_conv.*``; the VAE encoder is not part of SODEC's decoder and is left out).

Layer choices that are ours (the paper gives no sizes): the transformation module is conv3x3 on
concat(y_hat, w) -> ``transform_blocks`` residual blocks (SiLU, conv3x3, SiLU, conv3x3, + x) ->
per factor 2 of upsampling: conv3x3 to 4C, pixel shuffle x2, SiLU -> conv3x3 to the latent
channels. The fidelity decoder is conv3x3 -> per factor 2: conv3x3 to 4C', pixel shuffle, SiLU,
with C' halving each stage (not below 16) -> conv3x3 to 3 -> tanh.

Images are float in [-1, 1]. Sizes H, W must be multiples of ``stride`` (2**(n_down + 2), the z
grid); the codec pads and crops.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..vae import AutoencoderKL
from .configs import SD21_BASE_UNET, TINY_UNET, TINY_VIT, VIT_B16, ProjectionConfig, UNetConfig, ViTConfig
from .hyperprior import HyperpriorConfig, SodecHyperprior
from .one_step import PREDICTION_TYPES, DDPMSchedule, one_step_denoise
from .unet import UNet2DConditionModel
from .vit import FidelityGuidance

__all__ = [
    "FULL_SODEC",
    "TINY_SODEC",
    "FidelityDecoder",
    "SODEC",
    "SodecConfig",
    "TransformModule",
    "VAEConfig",
]

#: Value of the ``"model"`` field that marks a SODEC config (JSON files and dicts).
MODEL_TAG = "sodec"
_MAX_CHANNELS = 8192


def _check_int(name: str, v: Any, lo: int, hi: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"SODEC config field {name} must be an int in [{lo}, {hi}], got {v!r}")


@dataclass(frozen=True)
class VAEConfig:
    """The SD-VAE (diffusers ``AutoencoderKL``) sizes SODEC decodes with; 3-channel images,
    ``DownEncoderBlock2D``/``UpDecoderBlock2D`` blocks, downsampling 2**(len(block_out_channels)-1)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215

    def __post_init__(self) -> None:
        chans = self.block_out_channels
        if not isinstance(chans, (list, tuple)) or not 1 <= len(chans) <= 6:
            raise ValueError(f"VAE block_out_channels must be a list of 1..6 ints, got {chans!r}")
        object.__setattr__(self, "block_out_channels", tuple(chans))
        for i, c in enumerate(self.block_out_channels):
            _check_int(f"vae.block_out_channels[{i}]", c, 1, _MAX_CHANNELS)
        _check_int("vae.layers_per_block", self.layers_per_block, 1, 8)
        _check_int("vae.latent_channels", self.latent_channels, 1, 64)
        _check_int("vae.norm_num_groups", self.norm_num_groups, 1, _MAX_CHANNELS)
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("VAE block_out_channels must be multiples of norm_num_groups")
        if not (isinstance(self.scaling_factor, (int, float)) and 0 < self.scaling_factor <= 100):
            raise ValueError(f"VAE scaling_factor must be in (0, 100], got {self.scaling_factor!r}")

    @property
    def downsample(self) -> int:
        """Image pixels per latent position along a side."""
        return 2 ** (len(self.block_out_channels) - 1)

    def autoencoder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AutoencoderKL`` (diffusers config.json names)."""
        n = len(self.block_out_channels)
        return {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * n,
                "up_block_types": ("UpDecoderBlock2D",) * n, "block_out_channels": self.block_out_channels,
                "layers_per_block": self.layers_per_block, "latent_channels": self.latent_channels,
                "norm_num_groups": self.norm_num_groups, "scaling_factor": float(self.scaling_factor)}


SD_VAE = VAEConfig()
"""stabilityai/sd-vae-ft-ema (and SD 2.1-base's VAE): f8, 4 latent channels, scaling 0.18215."""

TINY_VAE = VAEConfig(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8)
"""f8 VAE decoder for tests."""


def _sub_from_dict(cls: type, d: Any, what: str) -> Any:
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise TypeError(f"SODEC config field {what} must be a dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in SODEC config section {what}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kwargs)


@dataclass(frozen=True)
class SodecConfig:
    """Every size of a SODEC model. JSON: ``to_dict``/``from_dict``/``to_json``/``from_json``
    (``{"model": "sodec", ...}``; the UNet section in diffusers' config.json names).

    ``lora_alpha``: PEFT's ``lora_alpha`` of UNet LoRA factors in a checkpoint (merged at load with
    scale ``lora_alpha / rank``); None when checkpoints carry no LoRA.
    """

    hyperprior: HyperpriorConfig = field(default_factory=HyperpriorConfig)
    unet: UNetConfig = SD21_BASE_UNET
    vit: ViTConfig = VIT_B16
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    vae: VAEConfig = SD_VAE
    transform_channels: int = 256
    transform_blocks: int = 2
    fidelity_channels: int = 128
    timestep: int = 999
    prediction_type: str = "epsilon"
    lora_alpha: float | None = None

    def __post_init__(self) -> None:
        for name, cls in (("hyperprior", HyperpriorConfig), ("unet", UNetConfig), ("vit", ViTConfig),
                          ("projection", ProjectionConfig), ("vae", VAEConfig)):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"SODEC config field {name} must be a {cls.__name__}")
        _check_int("transform_channels", self.transform_channels, 1, _MAX_CHANNELS)
        _check_int("transform_blocks", self.transform_blocks, 0, 32)
        _check_int("fidelity_channels", self.fidelity_channels, 1, _MAX_CHANNELS)
        _check_int("timestep", self.timestep, 0, 999)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.lora_alpha is not None and not (isinstance(self.lora_alpha, (int, float))
                                                and 0 < self.lora_alpha <= 1e6):
            raise ValueError(f"lora_alpha must be None or a positive number, got {self.lora_alpha!r}")
        hp, un = self.hyperprior, self.unet
        if hp.in_channels != 3 or self.vit.in_channels != 3:
            raise ValueError("SODEC codes 3-channel images: hyperprior and ViT in_channels must be 3")
        if not (un.in_channels == un.out_channels == self.vae.latent_channels):
            raise ValueError("UNet in/out channels must equal the VAE's latent channels")
        if self.projection.in_dim != self.vit.width:
            raise ValueError(f"projection in_dim {self.projection.in_dim} != ViT width {self.vit.width}")
        if self.projection.out_dim != un.cross_attention_dim:
            raise ValueError(f"projection out_dim {self.projection.out_dim} != UNet cross_attention_dim "
                             f"{un.cross_attention_dim}")
        if self.upsample_steps < 0 or self.upsample_steps > 3:
            raise ValueError(f"y (1/{2 ** hp.n_down}) must lie 0..3 factors of 2 below the VAE latent "
                             f"(1/{self.vae.downsample})")

    @property
    def upsample_steps(self) -> int:
        """Factors of 2 from y's grid to the diffusion latent's grid."""
        return self.hyperprior.n_down - (len(self.vae.block_out_channels) - 1)

    @property
    def stride(self) -> int:
        """Image sides must be multiples of this (one z position)."""
        return 2 ** (self.hyperprior.n_down + 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``"model": "sodec"``."""
        def plain(obj: Any) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}

        return {"model": MODEL_TAG, "hyperprior": plain(self.hyperprior), "unet": self.unet.to_dict(),
                "vit": plain(self.vit), "projection": plain(self.projection), "vae": plain(self.vae),
                "transform_channels": self.transform_channels, "transform_blocks": self.transform_blocks,
                "fidelity_channels": self.fidelity_channels, "timestep": self.timestep,
                "prediction_type": self.prediction_type, "lora_alpha": self.lora_alpha}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SodecConfig":
        """Inverse of ``to_dict``; ValueError/TypeError on unknown fields or out-of-range values."""
        if not isinstance(d, dict):
            raise TypeError(f"SODEC config must be a dict, got {type(d).__name__}")
        d = dict(d)
        if d.pop("model", MODEL_TAG) != MODEL_TAG:
            raise ValueError(f"not a SODEC config (field model must be {MODEL_TAG!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SODEC config field(s) {unknown}")
        kwargs: dict[str, Any] = dict(d)
        if "hyperprior" in d:
            kwargs["hyperprior"] = _sub_from_dict(HyperpriorConfig, d["hyperprior"], "hyperprior")
        if "unet" in d:
            kwargs["unet"] = d["unet"] if isinstance(d["unet"], UNetConfig) else UNetConfig.from_dict(d["unet"])
        for name, sub in (("vit", ViTConfig), ("projection", ProjectionConfig), ("vae", VAEConfig)):
            if name in d:
                kwargs[name] = _sub_from_dict(sub, d[name], name)
        return cls(**kwargs)

    def to_json(self) -> str:
        """``to_dict`` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> "SodecConfig":
        """Read a JSON file of ``to_json``."""
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(d)


TINY_SODEC = SodecConfig(
    hyperprior=HyperpriorConfig(in_channels=3, n=8, m=8, hidden=8, cz=4, n_down=4, z_support=8),
    unet=TINY_UNET,
    vit=TINY_VIT,
    projection=ProjectionConfig(in_dim=TINY_VIT.width, out_dim=TINY_UNET.cross_attention_dim, hidden_dim=32),
    vae=TINY_VAE,
    transform_channels=16,
    transform_blocks=1,
    fidelity_channels=16,
)
"""Tests: y at 1/16 (8 channels), z at 1/64, 2-level UNet, 2-block ViT, f8 VAE of width <= 32."""

FULL_SODEC = SodecConfig(
    hyperprior=HyperpriorConfig(in_channels=3, n=192, m=320, hidden=192, cz=192, n_down=4),
)
"""Full size: y 320 x 1/16 and z 192 x 1/64 (our sizes), SD 2.1-base UNet (865.9 M), ViT-B/16 at 224,
projection 768 -> 1024 -> 1024, SD-VAE f8 decoder, transform 256 wide, fidelity decoder 128 wide."""


class _ResBlock(nn.Module):
    """x + conv3x3(SiLU(conv3x3(SiLU(x)))): [N, C, h, w] -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def _up_stage(cin: int, cout: int) -> nn.Sequential:
    """conv3x3 cin -> 4*cout, pixel shuffle x2, SiLU: [N, cin, h, w] -> [N, cout, 2h, 2w]."""
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2), nn.SiLU())


class TransformModule(nn.Module):
    """(y_hat [N, M, h, w], w [N, 2M, h, w]) -> diffusion latent [N, latent, h*2**u, w*2**u]
    (u = ``cfg.upsample_steps``; 1 for y at 1/16 and an f8 VAE). Layers in the module docstring."""

    def __init__(self, cfg: SodecConfig) -> None:
        super().__init__()
        m, c = cfg.hyperprior.m, cfg.transform_channels
        self.conv_in = nn.Conv2d(3 * m, c, 3, padding=1)
        self.blocks = nn.ModuleList([_ResBlock(c) for _ in range(cfg.transform_blocks)])
        self.ups = nn.ModuleList([_up_stage(c, c) for _ in range(cfg.upsample_steps)])
        self.conv_out = nn.Conv2d(c, cfg.vae.latent_channels, 3, padding=1)

    def forward(self, y_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(torch.cat([y_hat, w], dim=1))
        for block in self.blocks:
            x = block(x)
        for up in self.ups:
            x = up(x)
        return self.conv_out(F.silu(x))


class FidelityDecoder(nn.Module):
    """y_hat [N, M, h, w] -> x_f [N, 3, h*2**n_down, w*2**n_down] in [-1, 1] (tanh)."""

    def __init__(self, cfg: SodecConfig) -> None:
        super().__init__()
        c = cfg.fidelity_channels
        self.conv_in = nn.Conv2d(cfg.hyperprior.m, c, 3, padding=1)
        stages = []
        for _ in range(cfg.hyperprior.n_down):
            nxt = max(c // 2, min(16, c))
            stages.append(_up_stage(c, nxt))
            c = nxt
        self.ups = nn.ModuleList(stages)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(y_hat)
        for up in self.ups:
            x = up(x)
        return torch.tanh(self.conv_out(x))


class SODEC(nn.Module):
    """The whole SODEC model (see the module docstring for the pipeline and the key prefixes).

    Attributes: ``hyperprior``, ``transform``, ``fidelity_decoder``, ``guidance``, ``unet``,
    ``vae`` (``AutoencoderKL`` without ``encoder``/``quant_conv``), ``cfg``, ``schedule``.
    """

    def __init__(self, cfg: SodecConfig = TINY_SODEC) -> None:
        super().__init__()
        if not isinstance(cfg, SodecConfig):
            raise TypeError(f"cfg must be a SodecConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.schedule = DDPMSchedule(prediction_type=cfg.prediction_type)
        self.hyperprior = SodecHyperprior(cfg.hyperprior)
        self.transform = TransformModule(cfg)
        self.fidelity_decoder = FidelityDecoder(cfg)
        self.guidance = FidelityGuidance(cfg.vit, cfg.projection)
        self.unet = UNet2DConditionModel(cfg.unet)
        vae = AutoencoderKL(**cfg.vae.autoencoder_kwargs())
        # SODEC decodes only: drop the VAE encoder so the weights and keys hold the decoder half.
        vae.encoder = None
        vae.quant_conv = None
        self.vae = vae

    @property
    def stride(self) -> int:
        """Image sides must be multiples of this."""
        return self.cfg.stride

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float path of the encoder: images x [N, 3, H, W] in [-1, 1] (H, W multiples of
        ``stride``) -> (y_hat [N, M, H/2**n_down, W/2**n_down], z_hat [N, cz, H/stride, W/stride]),
        rounded with a straight-through estimator. The codec codes these through the integer path."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ValueError(f"x must be [N, 3, H, W] with H, W multiples of {self.stride}, got {list(x.shape)}")
        y_hat, z_hat, _, _ = self.hyperprior.quantized_latents(x)
        return y_hat, z_hat

    def hyper_features(self, z_hat: torch.Tensor) -> torch.Tensor:
        """w: the float hyper synthesis (scales, means) of z_hat, [N, 2M, 4h, 4w]."""
        return torch.cat(self.hyperprior.hyper_synthesis(z_hat.to(self.hyperprior.h_s[0].weight.dtype)), dim=1)

    def decode_latent(self, y_hat: torch.Tensor, z_hat: torch.Tensor,
                      return_fidelity: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(y_hat [N, M, h, w], z_hat [N, cz, h/4, w/4]) -> image [N, 3, h*2**n_down, w*2**n_down]
        in about [-1, 1] (not clamped), dtype of the decoder weights; with ``return_fidelity``
        also x_f (the fidelity decoder's image)."""
        m, cz = self.cfg.hyperprior.m, self.cfg.hyperprior.cz
        if y_hat.dim() != 4 or y_hat.shape[1] != m or z_hat.dim() != 4 or z_hat.shape[1] != cz:
            raise ValueError(f"y_hat must be [N, {m}, h, w] and z_hat [N, {cz}, h/4, w/4]")
        if tuple(y_hat.shape[2:]) != (4 * z_hat.shape[2], 4 * z_hat.shape[3]) or y_hat.shape[0] != z_hat.shape[0]:
            raise ValueError(f"y_hat {list(y_hat.shape)} and z_hat {list(z_hat.shape)} do not match")
        dt = self.transform.conv_in.weight.dtype
        w = self.hyper_features(z_hat).to(dt)
        y = y_hat.to(dt)
        latent = self.transform(y, w)
        x_f = self.fidelity_decoder(y)
        # The guidance may run in another dtype than the rest (CPU bicubic resizing has no bf16).
        g_dt = self.guidance.projection.fc1.weight.dtype
        cond = self.guidance(x_f.to(g_dt)).to(dt)
        z0 = one_step_denoise(self.unet, latent, cond, t=self.cfg.timestep, schedule=self.schedule)
        image = self.vae.decode(z0 / self.vae.scaling_factor)
        return (image, x_f) if return_fidelity else image

    def forward(self, y_hat: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """``decode_latent(y_hat, z_hat)``."""
        return self.decode_latent(y_hat, z_hat)  # type: ignore[return-value]
