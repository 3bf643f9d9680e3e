"""The codec protocol: what every codec of cod_fast offers, whatever its model.

Implemented by ``CoDCodec`` / ``OneStepCoDCodec`` (``base.VQCodec``), ``DiffCCodec``,
``SodecCodec`` and ``DefaultCodec``; ``cod_fast.codecs.CODECS`` maps each codec id to its class.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from ..bitstream import Container

__all__ = ["Codec"]


@runtime_checkable
class Codec(Protocol):
    """What every codec offers (CoD, one-step CoD / CoD-Lite, DiffC, SODEC, the default model).

    * ``codec_id``: the ``CodecId`` its streams carry; ``fingerprint``: its model's 16 bytes;
    * ``sections``: section type -> what that section holds, for every section its streams may carry;
    * ``encode(image, **params) -> bytes``: a container (the params are the codec's own: sampler
      settings, ``quality``, ``entropy_backend``, ...);
    * ``decode(data, **overrides) -> torch.uint8 [3, H, W]`` on the CPU, the true image size;
    * ``parse(data)``: the checked stream, container first (BitstreamError / ModelMismatchError);
    * ``describe(container) -> dict``: the codec's own fields of a container's sections, without a
      model (a static method; what ``cod-fast info`` prints);
    * ``label``: what the codec is, for messages ("SODEC", "the default model", ...);
      ``encode_settings`` / ``decode_settings``: the user-chosen settings (the CLI's model flags:
      ``steps``, ``cfg``, ``sampler``, ``seed``, ``quality``, ``entropy_backend``) that its
      ``encode`` / ``decode`` take, so that a front end checks flags without asking for the class.

    ``cod_fast.codecs.CODECS`` maps each codec id to its class.
    """

    codec_id: int
    fingerprint: bytes
    sections: Mapping[int, str]
    label: str
    encode_settings: frozenset[str]
    decode_settings: frozenset[str]

    def encode(self, image: Any, /, *args: Any, **params: Any) -> bytes: ...

    def decode(self, data: bytes, /, *args: Any, **overrides: Any) -> torch.Tensor: ...

    def parse(self, data: bytes, /, *args: Any, **kwargs: Any) -> Any: ...

    def describe(self, c: Container, /) -> dict[str, Any]: ...
