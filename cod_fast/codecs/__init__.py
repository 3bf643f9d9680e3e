"""Codecs: what the bits mean. ``make_codec`` picks the codec class for a loaded network.

* :class:`CoDCodec` -- multi-step CoD (pixel PixNerDiT, latent DDT, CoD-Lite DConv);
* :class:`OneStepCoDCodec` -- one-step CoD and one-step CoD-Lite.
* :class:`DefaultCodec` -- the bundled default hyperprior model (``load_default_codec``).
* :class:`SodecCodec` -- SODEC (``cod_fast.codecs.sodec``: ``load_sodec``, named "sodec-tiny").
* :class:`DiffCCodec` -- DiffC over a multi-step CoD codec (``cod_fast.codecs.diffc``).

Every codec implements the :class:`Codec` protocol (``codec_id``, ``fingerprint``, ``sections``,
``encode``, ``decode``, ``parse``, ``describe``); ``CODECS`` maps each codec id to its class, and
``codec_for`` picks the codec that decodes a stream from the codec found by its fingerprint.
"""
from __future__ import annotations

from typing import Any, Union

import torch

from .. import registry
from ..bitstream import CodecId, Container
from .base import VQCodec
from .cod import CoDCodec, preset_cfg_scale
from .default import DefaultCodec, load_default_codec
from .diffc import DiffCCodec
from .one_step import OneStepCoDCodec
from .protocol import Codec
from .sodec import SodecCodec

__all__ = ["CODECS", "CoDCodec", "Codec", "DefaultCodec", "DiffCCodec", "OneStepCoDCodec", "SodecCodec", "VQCodec",
           "codec_for", "describe_stream", "load_default_codec", "make_codec"]

#: Codec id -> the codec class that reads its streams (each implements ``Codec``): the one table.
CODECS: dict[CodecId, type] = {
    CodecId.COD: CoDCodec,
    CodecId.COD_ONE_STEP: OneStepCoDCodec,
    CodecId.COD_LITE_ONE_STEP: OneStepCoDCodec,
    CodecId.DIFFC: DiffCCodec,
    CodecId.DEFAULT_HYPERPRIOR: DefaultCodec,
    CodecId.SODEC: SodecCodec,
}

#: Codec ids whose streams carry another codec's model fingerprint, and the view that reads them
#: over that codec (DiffC streams name the CoD model they were coded with).
VIEWS: dict[CodecId, type] = {CodecId.DIFFC: DiffCCodec}


def codec_for(codec: Any, codec_id: int) -> Any:
    """The codec that decodes a stream of ``codec_id``, given the codec of its model (found by the
    stream's fingerprint, or passed as ``model=``): ``codec`` itself, or a view over it (``VIEWS``).
    A codec of another kind is returned as it is: its own ``parse`` names the mismatch."""
    view = VIEWS.get(codec_id)  # IntEnum keys: a plain int finds them, an unknown id gives None
    if view is not None and not isinstance(codec, view):
        return view(codec)
    return codec


def describe_stream(c: Container) -> dict[str, Any]:
    """The codec-specific fields of container ``c`` (``Codec.describe`` of its codec id's class)."""
    cls = CODECS.get(c.codec_id)
    return cls.describe(c) if cls is not None else {}


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
