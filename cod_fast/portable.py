"""Codecs that travel: a codec pickles to (model reference, settings, fingerprint) and is rebuilt in
the receiving process (a process pool, DataLoader worker or Ray actor) from its checkpoint or its
bundled weights, then checked against the fingerprint.

The rule (what pickles):

* the bundled default model (``load_model()``) and the named models (``"sodec-tiny"``, ...): always;
* codecs loaded with ``cod_fast.load_model`` from files or names: a config (YAML path, preset name,
  dict) with a checkpoint *path* (and the SD-VAE folder of latent models), a ``.safetensors`` of
  ``save_model``/``save_sodec``, or a config with ``random_init_seed=``. Paths are recorded as
  absolute paths; the receiving process must see the same files (a shared file system);
* codecs whose weights exist only in memory (a dict passed as ``checkpoint=``, or a codec made by
  ``cod_fast.loading.load_model`` / a codec class directly, which record nothing): pickling raises
  :class:`NotPortableError`. ``save_reference(codec, path)`` writes such a codec once to a
  ``.safetensors`` file, checks that reloading it gives the same fingerprint, and makes it portable.

What travels besides the reference: the device (a CUDA codec needs CUDA where it lands:
``receive_on("cpu")`` overrides), the weight dtype, and the per-codec settings (``cuda_graphs``
of the CoD codecs, ``threads`` of the default codec, ``backend``/``threads`` of DiffC). Blocks
swapped by ``cod_fast.optimize`` do not travel: the receiver gets the plain model (call
``optimize`` there). Weights changed in memory after loading do not travel either: the rebuilt
model is the one the reference names, and its fingerprint is the one computed at load.

The receiving process builds each (reference, device, dtype) once and keeps it
(``clear_cache()`` forgets them); every rebuilt model's fingerprint must equal the pickled one,
else :class:`~cod_fast.errors.ModelMismatchError` (the checkpoint file changed, or another file is
at that path).
"""
from __future__ import annotations

import copy
import importlib
import json
import os
import pickle
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import parse_dtype
from .errors import CodFastError, ModelMismatchError

__all__ = [
    "ModelRef",
    "NotPortableError",
    "PortableCodec",
    "clear_cache",
    "rebuild",
    "receive_on",
    "reference_of",
    "register_loader",
    "set_reference",
]

_REF_ATTR = "_cod_fast_ref"


class NotPortableError(CodFastError, pickle.PicklingError):
    """A codec whose weights exist only in memory was asked to travel (see the module docstring)."""


@dataclass(frozen=True)
class ModelRef:
    """How to rebuild a model in another process.

    ``kind``: "default" (the bundled default model), "named" (a named SODEC model, ``name``) or
    "load_model" (``cod_fast.loading.load_model(config, checkpoint, vae=, allow_pickle=,
    random_init_seed=)``). ``config`` is a preset name, an absolute YAML/JSON path, or a JSON-able
    dict stored as canonical JSON text (``config_json``) so that the reference is hashable.
    """

    kind: str
    name: str | None = None
    config: str | None = None
    config_json: str | None = None
    checkpoint: str | None = None
    vae: str | None = None
    allow_pickle: bool = False
    random_init_seed: int | None = None

    def load(self, device: Any = "cpu", dtype: Any = None) -> Any:
        """Build the codec this reference names on ``device`` (a fresh load: no cache)."""
        loader = _LOADERS.get(self.kind)
        if loader is None and self.kind in _LOADER_MODULES:
            # The loaders live in the layers above this one (codecs, loading), which register them
            # when imported; a process that only unpickles has not imported them yet: import the
            # module that registers this kind by name (a plugin load, not a static import).
            importlib.import_module(_LOADER_MODULES[self.kind])
            loader = _LOADERS.get(self.kind)
        if loader is None:
            raise ValueError(f"unknown model reference kind {self.kind!r}")
        return loader(self, device, dtype)


#: kind -> loader(ref, device, dtype) -> codec; filled by ``register_loader``.
_LOADERS: dict[str, Callable[[ModelRef, Any, Any], Any]] = {}
#: kind -> the module whose import registers its loader.
_LOADER_MODULES = {"default": "cod_fast.codecs.default", "named": "cod_fast.codecs.sodec",
                   "load_model": "cod_fast.references"}


def register_loader(kind: str) -> Callable[[Callable[[ModelRef, Any, Any], Any]], Callable[[ModelRef, Any, Any], Any]]:
    """Decorator: ``fn(ref, device, dtype) -> codec`` builds the references of ``kind``."""
    def deco(fn: Callable[[ModelRef, Any, Any], Any]) -> Callable[[ModelRef, Any, Any], Any]:
        _LOADERS[kind] = fn
        return fn
    return deco


# ----------------------------------------------------------------------------------------------
# recording references
# ----------------------------------------------------------------------------------------------

def _abs_path(p: str | os.PathLike) -> str:
    return str(Path(p).expanduser().resolve())


def _config_ref(config: Any) -> dict[str, Any] | None:
    """The ``config``/``config_json`` fields for ``config``, or None when it cannot be recorded."""
    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        s = str(config)
        if Path(s).is_file():
            return {"config": _abs_path(s)}
        return {"config": s}  # a preset or named model
    if isinstance(config, Mapping):
        try:
            return {"config_json": json.dumps(config, sort_keys=True)}
        except (TypeError, ValueError):
            return None
    to_dict = getattr(config, "to_dict", None)  # SodecConfig
    if callable(to_dict):
        try:
            return {"config_json": json.dumps(to_dict(), sort_keys=True)}
        except (TypeError, ValueError):
            return None
    return None


def set_reference(codec: Any, ref: ModelRef) -> None:
    """Record ``ref`` as the way to rebuild ``codec`` (checked against its fingerprint on arrival)."""
    if not isinstance(ref, ModelRef):
        raise TypeError(f"ref must be a ModelRef, got {type(ref).__name__}")
    target = getattr(codec, "base", codec)  # a DiffC view records on its CoD codec
    setattr(target, _REF_ATTR, ref)


def reference_of(codec: Any) -> ModelRef | None:
    """The reference ``codec`` pickles to, or None when it has none (weights in memory only):
    the one recorded by ``cod_fast.load_model``/``save_reference``, else the codec's own
    ``portable_reference()`` (the bundled default model, the named SODEC models)."""
    codec = getattr(codec, "base", codec) if type(codec).__name__ == "DiffCCodec" else codec
    ref = getattr(codec, _REF_ATTR, None)
    if ref is not None:
        return ref
    own = getattr(codec, "portable_reference", None)
    return own() if callable(own) else None


# ----------------------------------------------------------------------------------------------
# pickling
# ----------------------------------------------------------------------------------------------

def _state_of(codec: Any) -> dict[str, Any]:
    ref = reference_of(codec)
    if ref is None:
        raise NotPortableError(
            f"{type(codec).__name__} {codec.fingerprint.hex()} holds weights that exist only in memory "
            "(loaded from a dict, or built without cod_fast.load_model), so it cannot be rebuilt in another "
            "process; load it with cod_fast.load_model from a checkpoint file, or call "
            "cod_fast.save_reference(codec, 'model.safetensors') once")
    dtype = getattr(codec, "dtype", None)
    settings: dict[str, Any] = {}
    for name in ("cuda_graphs", "threads"):
        if name in codec.__dict__:
            settings[name] = codec.__dict__[name]
    return {"ref": ref, "fingerprint": bytes(codec.fingerprint), "class": type(codec).__name__,
            "device": str(codec.device), "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
            "settings": settings}


def reduce_codec(codec: Any) -> tuple:
    """``__reduce__`` of the codec classes: (rebuild, (state,))."""
    return _rebuild, (_state_of(codec),)


class PortableCodec:
    """Mixin of the codec classes: pickling by reference, and ``copy.copy`` as a plain shallow copy
    (``optimize`` swaps the ``net`` of such a copy). ``copy.deepcopy`` goes through pickling: it
    gives a freshly rebuilt codec (not sharing the cache of ``rebuild``)."""

    def __reduce__(self) -> tuple:
        return reduce_codec(self)

    def __copy__(self) -> Any:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> Any:
        new = _rebuild(_state_of(self), cache=False)
        memo[id(self)] = new
        return new


_cache: dict[tuple, Any] = {}
_cache_lock = threading.Lock()
_receive_device: str | None = None


def clear_cache() -> None:
    """Forget the codecs rebuilt in this process."""
    with _cache_lock:
        _cache.clear()


@contextmanager
def receive_on(device: Any) -> Iterator[None]:
    """Rebuild codecs unpickled inside this block on ``device`` (e.g. "cpu" for codecs pickled on
    a GPU machine), whatever device they were pickled from. Process-wide while it lasts."""
    global _receive_device
    saved = _receive_device
    _receive_device = str(torch.device(device))
    try:
        yield
    finally:
        _receive_device = saved


def rebuild(ref: ModelRef, fingerprint: bytes, device: Any = "cpu", dtype: Any = None, *, cache: bool = True) -> Any:
    """The codec ``ref`` names on ``device``, checked to have ``fingerprint`` (ModelMismatchError
    otherwise); built once per (reference, device, dtype) in this process when ``cache``."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"this codec was pickled on {dev} but this process has no CUDA device; "
                           "unpickle it inside cod_fast.portable.receive_on('cpu')")
    key = (ref, str(dev), str(dtype))
    with _cache_lock:
        codec = _cache.get(key) if cache else None
    if codec is None:
        codec = ref.load(device=dev, dtype=parse_dtype(dtype) if dtype else None)
        if bytes(codec.fingerprint) != bytes(fingerprint):
            raise ModelMismatchError(
                bytes(fingerprint).hex(), codec.fingerprint.hex(),
                f"the codec was pickled as model {bytes(fingerprint).hex()}, but its reference ({_describe(ref)}) "
                f"now loads model {codec.fingerprint.hex()}: the checkpoint changed or another file is at that path")
        if ref.kind == "load_model":
            set_reference(codec, ref)
        if cache:
            with _cache_lock:
                codec = _cache.setdefault(key, codec)
    return codec


def _describe(ref: ModelRef) -> str:
    parts = [f"{k}={v!r}" for k, v in ref.__dict__.items() if v not in (None, False)]
    return ", ".join(parts)


def _with_settings(codec: Any, settings: Mapping[str, Any]) -> Any:
    if all(getattr(codec, k, None) == v for k, v in settings.items()):
        return codec
    out = copy.copy(codec)
    for k, v in settings.items():
        setattr(out, k, v)
    return out


def _rebuild(state: dict[str, Any], cache: bool = True) -> Any:
    """Unpickling entry point of the codecs (see ``reduce_codec``)."""
    device = _receive_device or state["device"]
    codec = rebuild(state["ref"], state["fingerprint"], device, state.get("dtype"), cache=cache)
    if type(codec).__name__ != state["class"]:
        raise ModelMismatchError("", codec.fingerprint.hex(),
                                 f"the reference rebuilt a {type(codec).__name__}, the pickled codec was a {state['class']}")
    return _with_settings(codec, state.get("settings", {}))
