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
import json
import os
import pickle
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CodFastError, ModelMismatchError

__all__ = [
    "ModelRef",
    "NotPortableError",
    "PortableCodec",
    "clear_cache",
    "load_model",
    "rebuild",
    "receive_on",
    "reference_of",
    "save_reference",
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
        import torch

        if self.kind == "default":
            from .codecs.default import load_default_codec

            return load_default_codec(device)
        if self.kind == "named":
            from .codecs.sodec import load_named

            return load_named(str(self.name), device)
        if self.kind != "load_model":
            raise ValueError(f"unknown model reference kind {self.kind!r}")
        from .loading import load_model as _load

        config: Any = self.config
        if self.config_json is not None:
            config = json.loads(self.config_json)
        return _load(config, self.checkpoint, device=device, dtype=dtype or torch.float32, vae=self.vae,
                     allow_pickle=self.allow_pickle, random_init_seed=self.random_init_seed)


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


def reference_from_args(config: Any = None, checkpoint: Any = None, *, vae: Any = None,
                        allow_pickle: bool = False, random_init_seed: int | None = None) -> ModelRef | None:
    """The reference of a ``load_model`` call with these arguments, or None when the weights are
    in memory only (a dict checkpoint) or the config cannot be recorded."""
    if config is None and checkpoint is None and random_init_seed is None:
        return ModelRef(kind="default")
    if isinstance(config, str) and checkpoint is None and random_init_seed is None:
        from .codecs.sodec import NAMED_MODELS

        if config in NAMED_MODELS:
            return ModelRef(kind="named", name=config)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        return None
    cfg = _config_ref(config)
    if cfg is None:
        return None
    return ModelRef(kind="load_model", checkpoint=_abs_path(checkpoint) if checkpoint is not None else None,
                    vae=_abs_path(vae) if vae is not None else None, allow_pickle=bool(allow_pickle),
                    random_init_seed=None if random_init_seed is None else int(random_init_seed), **cfg)


def load_model(config: Any = None, checkpoint: Any = None, device: Any = "cpu", dtype: Any = None, *,
               vae: Any = None, allow_pickle: bool = False, random_init_seed: int | None = None) -> Any:
    """``cod_fast.loading.load_model`` (same arguments, same codec) that also records how the codec
    was loaded, so that it pickles (see the module docstring). This is ``cod_fast.load_model``."""
    import torch

    from .loading import load_model as _load

    codec = _load(config, checkpoint, device=device, dtype=torch.float32 if dtype is None else dtype, vae=vae,
                  allow_pickle=allow_pickle, random_init_seed=random_init_seed)
    ref = reference_from_args(config, checkpoint, vae=vae, allow_pickle=allow_pickle,
                              random_init_seed=random_init_seed)
    if ref is not None and ref.kind == "load_model":
        set_reference(codec, ref)
    return codec



def _append_loading_doc() -> None:
    """``help(cod_fast.load_model)`` shows the arguments documented by ``loading.load_model``."""
    from .loading import load_model as _load

    load_model.__doc__ = f"{load_model.__doc__}\n\n{_load.__doc__ or ''}"


_append_loading_doc()


def set_reference(codec: Any, ref: ModelRef) -> None:
    """Record ``ref`` as the way to rebuild ``codec`` (checked against its fingerprint on arrival)."""
    if not isinstance(ref, ModelRef):
        raise TypeError(f"ref must be a ModelRef, got {type(ref).__name__}")
    target = getattr(codec, "base", codec)  # a DiffC view records on its CoD codec
    setattr(target, _REF_ATTR, ref)


_bundled_fp: bytes | None = None
_bundled_lock = threading.Lock()


def _bundled_default_fingerprint() -> bytes:
    global _bundled_fp
    with _bundled_lock:
        if _bundled_fp is None:
            from safetensors.torch import load_file

            from .codecs.default import default_fingerprint
            from .models.default import WEIGHTS_DIR, WEIGHTS_FILE, default_model_info

            stored = load_file(str(WEIGHTS_DIR / WEIGHTS_FILE))
            _bundled_fp = default_fingerprint(default_model_info()["config"], stored)
        return _bundled_fp


def reference_of(codec: Any) -> ModelRef | None:
    """The reference ``codec`` pickles to, or None when it has none (weights in memory only)."""
    codec = getattr(codec, "base", codec) if type(codec).__name__ == "DiffCCodec" else codec
    ref = getattr(codec, _REF_ATTR, None)
    if ref is not None:
        return ref
    from .codecs.default import DefaultCodec
    from .codecs.sodec import NAMED_MODELS, SodecCodec

    if isinstance(codec, DefaultCodec) and codec.fingerprint == _bundled_default_fingerprint():
        return ModelRef(kind="default")
    if isinstance(codec, SodecCodec) and codec.name in NAMED_MODELS:
        return ModelRef(kind="named", name=codec.name)
    return None


def save_reference(codec: Any, path: str | os.PathLike, *, vae: Any = None) -> ModelRef:
    """Write ``codec``'s weights to ``path`` (``.safetensors``), check that loading that file gives
    the codec's fingerprint, and record it as the codec's reference. Returns the reference.

    CoD codecs must hold float32 weights (a bf16 copy hashes differently); latent CoD codecs need
    ``vae=`` (their SD-VAE folder) unless their reference already names it. The bundled default
    model and named models need no file. ValueError / ModelMismatchError when this cannot work.
    """
    import torch

    from .codecs.base import VQCodec
    from .codecs.sodec import SodecCodec, save_sodec
    from .loading import save_model

    target = getattr(codec, "base", codec) if type(codec).__name__ == "DiffCCodec" else codec
    existing = reference_of(target)
    if existing is not None and existing.kind in ("default", "named"):
        return existing
    p = Path(path)
    if isinstance(target, VQCodec):
        if target.dtype != torch.float32:
            raise ValueError(f"save_reference needs a float32 codec (this one holds {target.dtype} weights, "
                             "whose file would hash to another fingerprint); load the model in float32")
        vae = vae if vae is not None else (existing.vae if existing is not None else None)
        if target.spec.latent and vae is None:
            raise ValueError("a latent CoD codec needs vae= (its SD-VAE folder) to be rebuilt elsewhere")
        save_model(target, p)
        ref = ModelRef(kind="load_model", checkpoint=_abs_path(p), vae=_abs_path(vae) if vae is not None else None)
    elif isinstance(target, SodecCodec):
        save_sodec(target, p)
        ref = ModelRef(kind="load_model", checkpoint=_abs_path(p))
    else:
        raise NotPortableError(f"{type(target).__name__} with weights in memory cannot be saved as a reference "
                               "(only the bundled default model's weights are supported for this codec)")
    rebuilt = ref.load(device="cpu")
    if bytes(rebuilt.fingerprint) != bytes(target.fingerprint):
        raise ModelMismatchError(target.fingerprint.hex(), rebuilt.fingerprint.hex(),
                                 f"the file written to {p} loads as model {rebuilt.fingerprint.hex()}, not "
                                 f"{target.fingerprint.hex()} (e.g. LoRA factors merged at load); it cannot "
                                 "stand for this codec")
    set_reference(target, ref)
    return ref


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
            "cod_fast.portable.save_reference(codec, 'model.safetensors') once")
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
    if type(codec).__name__ == "DiffCCodec":
        return _rebuild_diffc, (_state_of(codec.base), {"backend": codec.backend, "threads": codec.threads})
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
        state = _state_of(self) if type(self).__name__ != "DiffCCodec" else None
        if state is None:
            new = _rebuild_diffc(_state_of(self.base), {"backend": self.backend, "threads": self.threads},  # type: ignore[attr-defined]
                                 cache=False)
        else:
            new = _rebuild(state, cache=False)
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
    import torch

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
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"this codec was pickled on {dev} but this process has no CUDA device; "
                           "unpickle it inside cod_fast.portable.receive_on('cpu')")
    key = (ref, str(dev), str(dtype))
    with _cache_lock:
        codec = _cache.get(key) if cache else None
    if codec is None:
        from .loading import parse_dtype

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


def _rebuild_diffc(base_state: dict[str, Any], options: dict[str, Any], cache: bool = True) -> Any:
    from .codecs.diffc import DiffCCodec

    return DiffCCodec(_rebuild(base_state, cache=cache), backend=options["backend"], threads=options["threads"])

