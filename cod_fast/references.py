"""Recording how a codec was loaded, so that it pickles (see ``cod_fast.portable`` for the rule).

``load_model`` (this is ``cod_fast.load_model``) is ``cod_fast.loading.load_model`` plus the
reference it records; ``save_reference`` gives a codec whose weights exist only in memory a file to
be rebuilt from. This module sits above ``loading`` and the codecs, and registers the loader of the
"load_model" references that ``cod_fast.portable`` rebuilds.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .codecs.base import VQCodec
from .codecs.sodec import NAMED_MODELS, SodecCodec, save_sodec
from .errors import ModelMismatchError
from .loading import load_model as _load
from .loading import save_model
from .portable import (
    ModelRef,
    NotPortableError,
    _abs_path,
    _config_ref,
    reference_of,
    register_loader,
    set_reference,
)

__all__ = ["load_model", "reference_from_args", "save_reference"]


@register_loader("load_model")
def _load_reference(ref: ModelRef, device: Any, dtype: Any) -> Any:
    """``cod_fast.loading.load_model`` with the arguments ``ref`` recorded."""
    config: Any = ref.config
    if ref.config_json is not None:
        config = json.loads(ref.config_json)
    return _load(config, ref.checkpoint, device=device, dtype=dtype or torch.float32, vae=ref.vae,
                 allow_pickle=ref.allow_pickle, random_init_seed=ref.random_init_seed)


def reference_from_args(config: Any = None, checkpoint: Any = None, *, vae: Any = None,
                        allow_pickle: bool = False, random_init_seed: int | None = None) -> ModelRef | None:
    """The reference of a ``load_model`` call with these arguments, or None when the weights are
    in memory only (a dict checkpoint) or the config cannot be recorded."""
    if config is None and checkpoint is None and random_init_seed is None:
        return ModelRef(kind="default")
    if isinstance(config, str) and checkpoint is None and random_init_seed is None and config in NAMED_MODELS:
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
    was loaded, so that it pickles (see ``cod_fast.portable``). This is ``cod_fast.load_model``."""
    codec = _load(config, checkpoint, device=device, dtype=torch.float32 if dtype is None else dtype, vae=vae,
                  allow_pickle=allow_pickle, random_init_seed=random_init_seed)
    ref = reference_from_args(config, checkpoint, vae=vae, allow_pickle=allow_pickle,
                              random_init_seed=random_init_seed)
    if ref is not None and ref.kind == "load_model":
        set_reference(codec, ref)
    return codec


load_model.__doc__ = f"{load_model.__doc__}\n\n{_load.__doc__ or ''}"  # help() shows loading's arguments


def save_reference(codec: Any, path: str | os.PathLike, *, vae: Any = None) -> ModelRef:
    """Write ``codec``'s weights to ``path`` (``.safetensors``), check that loading that file gives
    the codec's fingerprint, and record it as the codec's reference. Returns the reference.

    CoD codecs must hold float32 weights (a bf16 copy hashes differently); latent CoD codecs need
    ``vae=`` (their SD-VAE folder) unless their reference already names it. The bundled default
    model and named models need no file. ValueError / ModelMismatchError when this cannot work.
    """
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
