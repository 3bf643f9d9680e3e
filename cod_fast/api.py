"""Top-level API: ``cod_fast.encode(image, model) -> bytes`` and ``cod_fast.decode(data, model=None)``.

``model`` is a codec (from ``load_model``), or anything ``load_model`` accepts as its first
argument (a YAML path, preset name or our ``.safetensors`` file) -- loaded once and cached by
that argument. ``decode`` without a model looks the stream's fingerprint up in the registry of
loaded and named models (``cod_fast.registry``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import torch

from . import codecs, registry  # importing the codecs registers their named models
from .bitstream import read_header
from .errors import ModelMismatchError
from .image_io import ImageLike
from .references import load_model  # records the reference: the codec pickles

ModelLike = Union[Any, str, os.PathLike]
_by_name: dict[str, Any] = {}


def resolve_model(model: ModelLike, **load_kwargs: Any) -> Any:
    """A codec from a codec, a ``.safetensors`` path, or a config (YAML path / preset name)."""
    if hasattr(model, "encode") and hasattr(model, "decode") and hasattr(model, "fingerprint"):
        return model
    if isinstance(model, (str, os.PathLike)):
        key = str(model)
        if key not in _by_name:
            if Path(key).suffix == ".safetensors":
                _by_name[key] = load_model(checkpoint=key, **load_kwargs)
            else:
                _by_name[key] = load_model(key, **load_kwargs)
        return _by_name[key]
    raise TypeError(f"model must be a codec from load_model, a path or a preset name, got {type(model).__name__}")


def encode(image: ImageLike, model: ModelLike, **params: Any) -> bytes:
    """Compress ``image`` (path, PIL image, numpy HWC uint8, torch CHW uint8 or float in [0, 1])
    with ``model``; ``params`` (steps, cfg, sampler, seed) are recorded for the decoder.
    Returns the container bytes."""
    return resolve_model(model).encode(image, **params)


def decode(data: bytes, model: ModelLike | None = None, **overrides: Any) -> torch.Tensor:
    """Decompress container bytes to ``torch.uint8`` [3, H, W].

    Without ``model`` the model is found by the stream's fingerprint among the loaded and named
    models; ModelMismatchError (naming the fingerprint) when none matches. ``overrides``
    (steps, cfg, sampler, seed, dtype, ...) go to the codec's ``decode``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    codec = codec_for_stream(data, None if model is None else resolve_model(model))
    return codec.decode(bytes(data), **overrides)


def codec_for_stream(data: bytes, codec: Any = None) -> Any:
    """The codec that decodes container ``data``: ``codec`` (a codec of the stream's model) or,
    when None, the loaded or named model with the stream's fingerprint (ModelMismatchError naming
    it when none matches), seen through the stream's codec id (e.g. a DiffC view of a CoD model:
    ``cod_fast.codecs.codec_for``). The header is read once."""
    header = read_header(data)
    return codecs.codec_for(find_model(header.fingerprint) if codec is None else codec, header.codec_id)


def find_model(fingerprint: bytes) -> Any:
    """The loaded or named model (its codec) with ``fingerprint``; ModelMismatchError naming the
    fingerprint when none matches."""
    codec = registry.find(fingerprint)
    if codec is None:
        note = registry.retired(fingerprint)
        if note is not None:
            raise ModelMismatchError("", bytes(fingerprint).hex(),
                                     f"stream was written by model {bytes(fingerprint).hex()}: {note}")
        raise ModelMismatchError(
            "", bytes(fingerprint).hex(),
            f"no loaded or named model has fingerprint {bytes(fingerprint).hex()}; load it "
            "with cod_fast.load_model(...) or pass a model (model=, CLI --model)")
    return codec


