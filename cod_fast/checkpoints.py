"""Checkpoint files and dtype names: the low layer that ``loading`` and the codecs share.

This module imports nothing of ``cod_fast`` but ``errors``, so that every codec can read
checkpoints without importing ``loading``, which sits above the codecs.

* ``read_checkpoint``: our ``.safetensors`` (weights + the config stored under ``METADATA_KEY``)
  or an official pickled checkpoint (``torch.load(weights_only=True)``, ``module`` /
  ``state_dict`` nesting unwrapped);
* ``load_weights_strict``: copy weights into a network, ``ModelMismatchError`` on any mismatch;
* ``parse_dtype``: ``torch.dtype`` from a dtype or a name such as ``"bf16"``;
* ``check_build_size``: build a network on the meta device first and refuse it when it would hold
  more than ``MAX_NET_ELEMENTS`` parameters and buffers, before anything is allocated;
* ``save_safetensors``: write a ``.safetensors`` file whose bytes depend only on its tensors and
  metadata (shipped files are reproduced byte for byte from their training checkpoint).
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import torch
from torch.overrides import TorchFunctionMode

from .errors import ModelFileError, ModelMismatchError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_NET_ELEMENTS",
    "METADATA_KEY",
    "PathLike",
    "check_build_size",
    "check_config_file_size",
    "load_weights_strict",
    "parse_dtype",
    "read_checkpoint",
    "save_safetensors",
    "stored_config",
    "unwrap_state",
]

PathLike = Union[str, os.PathLike]

#: Metadata entry of our ``.safetensors`` files that holds the model's config (canonical JSON).
METADATA_KEY = "cod_fast.config"
#: Largest stored config JSON read from a checkpoint's metadata (a real one is about 1 KiB).
MAX_METADATA_BYTES = 1 << 20

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def parse_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """torch dtype from a dtype or one of the names float32/fp32/bfloat16/bf16/float16/fp16."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}") from None


def stored_config(meta: Mapping[str, str], source: str) -> dict[str, Any] | None:
    """The config stored under ``METADATA_KEY`` in safetensors metadata, or None when absent.

    ``ModelFileError`` naming ``source`` when the entry is too large, not JSON, or not an object.
    """
    raw = meta.get(METADATA_KEY)
    if raw is None:
        return None
    if len(raw) > MAX_METADATA_BYTES:
        raise ModelFileError(f"{source}: the stored config ({METADATA_KEY}) holds {len(raw)} bytes, "
                             f"more than the {MAX_METADATA_BYTES} allowed")
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        raise ModelFileError(f"{source}: the stored config ({METADATA_KEY}) is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{source}: the stored config ({METADATA_KEY}) is not a JSON object")
    return cfg


def read_checkpoint(path: PathLike, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read weights and (safetensors only) our stored config. Returns (state_dict, config or None).

    Pickled checkpoints are read with ``weights_only=True`` unless ``allow_pickle`` (only for
    files you trust); ``module`` / ``state_dict`` nesting is unwrapped.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"checkpoint {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open  # local: import time (safetensors files only)

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                cfg = stored_config(meta, f"checkpoint {p}")  # before reading any tensor
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"cannot read safetensors {p}: {exc}") from None
        return sd, cfg
    import pickle  # local: import time (pickled checkpoints only)

    try:
        state = torch.load(str(p), map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"checkpoint {p} holds objects that weights_only loading refuses ({exc}); if you trust "
            "the file, pass allow_pickle=True, or convert it once with cod_fast.loading.save_model"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read checkpoint {p}: {exc}") from None
    return unwrap_state(state, f"checkpoint {p}"), None


def unwrap_state(state: Any, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapping ``module`` then ``state_dict`` (official order)."""
    if isinstance(state, Mapping):
        if "module" in state:
            state = state["module"]
        elif "state_dict" in state:
            state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{what} does not hold a dict of weights")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_weights_strict(net: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy ``weights`` into ``net``; ModelMismatchError on missing/unexpected keys or shapes."""
    own = net.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: checkpoint "
                         f"{tuple(weights[k].shape)} vs model {tuple(own[k].shape)})")
        raise ModelMismatchError("", "", "checkpoint does not fit the config: " + "; ".join(parts))
    net.load_state_dict(dict(weights), strict=True)


#: Largest config file (YAML or JSON) read; real ones are about 2 KiB.
MAX_CONFIG_BYTES = 1 << 20


def check_config_file_size(path: PathLike, source: str) -> None:
    """``ModelFileError`` naming ``source`` when the file at ``path`` exceeds ``MAX_CONFIG_BYTES``
    (checked before it is read)."""
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{source} holds {size} bytes, more than the {MAX_CONFIG_BYTES} allowed")


#: Most elements (parameters + buffers) a network built from a config may hold: 4e9, 16 GB in
#: float32. The largest official model (pixel CoD XL, bpp 0.00024 at 512) holds 1.03e9.
MAX_NET_ELEMENTS = 4_000_000_000
#: Most tensors the meta-device build may create before it is stopped (bounds its run time).
MAX_BUILD_TENSORS = 1_000_000

_FACTORIES = frozenset({
    "empty", "zeros", "ones", "full", "rand", "randn", "randint", "arange", "linspace", "logspace", "eye",
    "tensor", "as_tensor", "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
    "empty_strided", "new_empty", "new_zeros", "new_ones", "new_full", "new_tensor",
})


class _TooLarge(Exception):
    pass


class _CountFactories(TorchFunctionMode):
    """Counts the elements of the tensors that factory functions create; stops the build early
    when they pass ``limit`` (the exact count is taken from the built module afterwards)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.elements, self.tensors = limit, 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and getattr(func, "__name__", "") in _FACTORIES:
            self.elements += out.numel()
            self.tensors += 1
            if self.elements > 2 * self.limit or self.tensors > MAX_BUILD_TENSORS:
                raise _TooLarge(f"more than {min(self.elements, 2 * self.limit)} elements in {self.tensors} tensors")
        return out


def check_build_size(build: Callable[[], torch.nn.Module], source: str, limit: int | None = None) -> int:
    """Run ``build()`` on the meta device (nothing is allocated, the global RNG is left as it was)
    and return the number of elements of its parameters and buffers.

    ``ModelFileError`` naming ``source`` when the network would hold more than ``limit`` elements
    (default ``MAX_NET_ELEMENTS``). Errors of ``build`` itself (a bad argument) propagate as they are.
    """
    limit = MAX_NET_ELEMENTS if limit is None else int(limit)
    counter = _CountFactories(limit)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), counter:
            net = build()
    except _TooLarge as exc:
        raise ModelFileError(f"{source}: the network this config describes is too large ({exc}; the limit is "
                             f"{limit} parameters and buffers)") from None
    n = sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())
    if n > limit:
        raise ModelFileError(f"{source}: the network this config describes holds {n} parameters and buffers, "
                             f"more than the {limit} allowed")
    return n


def save_safetensors(state: Mapping[str, torch.Tensor], path: PathLike, metadata: Mapping[str, str]) -> None:
    """Write ``state`` to ``path`` as safetensors with ``metadata``, the header's metadata keys in
    sorted order.

    ``safetensors.torch.save_file`` writes the metadata in its hash map's order, which changes
    from one process to the next when there are two keys or more (safetensors 0.8), so the same
    weights gave files with other bytes and another sha256. The tensors' own order is already
    fixed by the library; only the ``__metadata__`` object is re-serialised here. Reordering keys
    keeps the header's length, so the data offsets and the padding stay valid."""
    from safetensors.torch import save  # local: import time

    blob = save(dict(state), metadata=dict(metadata))
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    text = json.dumps({**ordered, **header}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Invariant: the same keys and values re-serialised compactly are no longer than the original
    # (safetensors writes compact JSON and pads with spaces to 8 bytes); pad back to n.
    if len(text) > n:
        raise RuntimeError("safetensors header grew when its metadata keys were sorted")
    Path(path).write_bytes(blob[:8] + text + b" " * (n - len(text)) + blob[8 + n :])
