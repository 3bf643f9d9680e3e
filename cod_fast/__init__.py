"""cod_fast: fast, dependable inference for diffusion image codecs.

The public API (``encode``, ``decode``, ``load_model``, ``optimize``; ``decode_many``,
``encode_many`` and ``StreamDataset`` for many streams) is imported lazily so that
``import cod_fast`` stays cheap and works without a GPU, Triton or the compiled extension.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import (
    BitstreamError,
    CodFastError,
    ExtensionUnavailableError,
    ModelFileError,
    ModelMismatchError,
)

__all__ = [
    "__version__",
    "BitstreamError",
    "CodFastError",
    "ExtensionUnavailableError",
    "ModelFileError",
    "ModelMismatchError",
]

# name -> module that defines it; resolved on first attribute access.
_LAZY: dict[str, str] = {
    "encode": ".api",
    "decode": ".api",
    "load_model": ".references",  # loading.load_model that records the reference (pickling)
    "save_reference": ".references",
    "save_model": ".loading",
    "decode_many": ".batch",
    "encode_many": ".batch",
    "StreamDataset": ".batch",
    "NotPortableError": ".portable",
    "optimize": ".fast",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cod_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
