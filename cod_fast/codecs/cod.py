"""Multi-step CoD codec (pixel ``PixNerDiT``, latent ``DDT``, CoD-Lite ``DConv``).

Encode: image in [0, 1] -> condition codec -> VQ indices -> container.
Decode, as the official ``CoD/cod/inference.py`` does it: indices -> condition map, batched with
the unconditional map of an all ``-1`` image (classifier-free guidance) -> starting noise
``randn`` from a CPU generator seeded with the stream's seed, shape ``(1, 3, H, W)`` (pixel) or
``(1, 4, H/8, W/8)`` (latent) -> rectified-flow sampler (``adam2`` or ``euler``) -> pixels
(latent: SD-VAE decode of ``z / scaling_factor**2``, as the official ``LatentAE``).

Official defaults recorded in the stream: sampler ``adam2``, 25 steps, seed 0, guidance 3.0
(1.25 for the latent 0.0039 bpp presets).

On CUDA the whole sampling loop (every step's batched cond/uncond denoiser call, the guidance and
the update) is replayed from one CUDA graph per (padded size, dtype, autocast, sampler, steps,
guidance) (``cod_fast.diffusion.sampling.SamplingGraphs``); the condition maps and the noise are
made outside the graph exactly as the eager path makes them, so both give the same image. The
bucket is the codec's padded size: padding further would change the pixels (the DiT attends
globally). Set ``codec.cuda_graphs = False`` to decode eagerly.
"""
from __future__ import annotations

from typing import Any

import torch

from ..bitstream import CodecId, DecodeParams
from ..diffusion.samplers import create_sampler
from ..diffusion.sampling import SamplingGraphs
from ..models.cod.configs import default_cfg
from ..models.vae import latent_decode
from .base import VQCodec

DEFAULT_STEPS = 25
DEFAULT_SAMPLER = "adam2"
DEFAULT_CFG = 3.0
#: Streams asking for more sampler steps than this are rejected (a decode-time bound).
MAX_STEPS = 1000
MULTI_STEP_SAMPLERS = ("adam2", "euler")


def preset_cfg_scale(name: str) -> float | None:
    """The official guidance scale of a CoD preset name, or None when the package gives none."""
    try:
        return float(default_cfg(name))
    except ValueError:
        return None


class CoDCodec(VQCodec):
    """Codec over a multi-step CoD denoiser; decode takes ``steps``, ``cfg``, ``sampler``, ``seed``."""

    codec_id = CodecId.COD
    label = "a multi-step CoD model"
    encode_settings = decode_settings = frozenset({"steps", "cfg", "sampler", "seed"})

    def __init__(self, *args: Any, default_cfg: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.spec.latent and self.vae is None:
            raise ValueError("a latent CoD codec needs its SD-VAE")
        self.default_cfg = DEFAULT_CFG if default_cfg is None else float(default_cfg)
        #: "auto": CUDA graphs on CUDA devices; False: always eager; True: require them.
        self.cuda_graphs: bool | str = "auto"
        self._graph_capture = None  # capture hook (tests inject a CPU fake); None = CUDA graphs
        self._graphs: SamplingGraphs | None = None

    def default_params(self) -> DecodeParams:
        return DecodeParams(sampler=DEFAULT_SAMPLER, steps=DEFAULT_STEPS, cfg=self.default_cfg, seed=0)

    def check_params(self, params: DecodeParams) -> str | None:
        if params.sampler not in MULTI_STEP_SAMPLERS:
            return f"sampler {params.sampler!r} is not one of {MULTI_STEP_SAMPLERS}"
        if not 1 <= params.steps <= MAX_STEPS:
            return f"{params.steps} sampler steps outside 1..{MAX_STEPS}"
        return None

    def _uses_graphs(self) -> bool:
        return self.cuda_graphs is True or (self.cuda_graphs == "auto" and self.device.type == "cuda")

    def _synthesise(self, packed: bytes, hp: int, wp: int, params: DecodeParams) -> torch.Tensor:
        p = next(self.net.parameters())
        uncond = torch.full((1, 3, hp, wp), -1.0, device=self.device, dtype=p.dtype)
        codec_cond = self.net.decompress(packed, hp, wp, self.device, uncond=uncond)
        gen = torch.Generator(device="cpu").manual_seed(params.seed)
        shape = (1, 4, hp // 8, wp // 8) if self.spec.latent else (1, 3, hp, wp)
        noise = torch.randn(shape, generator=gen, dtype=torch.float32).to(self.device, p.dtype)
        if self._uses_graphs():
            if self._graphs is None:
                self._graphs = SamplingGraphs(max_graphs=2, capture=self._graph_capture, enabled=True)
            sample = self._graphs(self.net, noise, codec_cond, params.sampler, params.steps, params.cfg)
        else:
            sampler = create_sampler(params.sampler, params.steps, params.cfg)
            sample = sampler(self.net, noise, codec_cond=codec_cond)
        if not self.spec.latent:
            return sample
        return latent_decode(self.vae, sample)
