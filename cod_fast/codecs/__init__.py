"""Codecs: what the bits mean. ``make_codec`` picks the codec class for a loaded network.

* :class:`CoDCodec` -- multi-step CoD (pixel PixNerDiT, latent DDT, CoD-Lite DConv);
* :class:`OneStepCoDCodec` -- one-step CoD and one-step CoD-Lite.
* :class:`DefaultCodec` -- the bundled default hyperprior model (``load_default_codec``).
* :class:`SodecCodec` -- SODEC (``cod_fast.codecs.sodec``: ``load_sodec``, named "sodec-tiny").
"""
from __future__ import annotations

from typing import Any, Union

import torch

from .. import registry
from ..checkpoints import preset_cfg_scale
from .base import VQCodec
from .cod import CoDCodec
from .default import DefaultCodec, load_default_codec
from .one_step import OneStepCoDCodec
from .sodec import SodecCodec

__all__ = ["CoDCodec", "DefaultCodec", "OneStepCoDCodec", "SodecCodec", "VQCodec", "load_default_codec",
           "make_codec"]


def _is_one_step(cls: type) -> bool:
    return any(c.__name__ == "OneStepCoD" and c.__module__.startswith("cod_fast.models.")
               for c in cls.__mro__)


def make_codec(spec: Any, net: torch.nn.Module, cls: type, fingerprint: bytes,
               vae: torch.nn.Module | None = None, device: Union[str, torch.device] = "cpu",
               dtype: torch.dtype = torch.float32) -> VQCodec:
    """Wrap ``net`` (an instance of ``cls``) in its codec and register it by fingerprint."""
    if not (hasattr(net, "y_embedder") and hasattr(net, "compress") and hasattr(net, "patch_size")):
        raise ValueError(f"{cls.__name__} is not a CoD denoiser with a condition codec; cannot build a codec")
    if _is_one_step(cls):
        codec: VQCodec = OneStepCoDCodec(spec, net, fingerprint, device=device, dtype=dtype)
    else:
        preset = spec.extra.get("preset")
        cfg = preset_cfg_scale(preset) if preset else None
        codec = CoDCodec(spec, net, fingerprint, device=device, dtype=dtype, vae=vae, default_cfg=cfg)
    registry.register(codec)
    return codec
