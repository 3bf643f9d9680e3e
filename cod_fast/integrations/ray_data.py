"""Ray Data integration: decode (or encode) datasets of streams on a Ray cluster, one codec per actor.

:class:`RayDecoder` is a callable class for ``ray.data.Dataset.map_batches``: Ray builds one per
actor, the actor loads (or, for a codec object, rebuilds from its pickled reference: see
``cod_fast.portable``) its codec once, and every batch of streams goes through
``cod_fast.decode_many``. GPU actors: ``num_gpus=1`` in ``map_batches`` (``decode_folder`` asks for
it when the driver sees a GPU); the actor then decodes on ``cuda``. Ray schedules the actors over
the cluster's nodes; no scheduling is done here::

    import ray
    from cod_fast.integrations.ray_data import decode_folder

    ray.init(address="auto")                      # the running cluster (ray.init() = local)
    ds = decode_folder("s3://bucket/streams/", concurrency=16)
    ds.write_parquet("s3://bucket/decoded/")      # or iterate: ds.iter_rows()

Rows in: ``bytes`` (a stream; ``ray.data.read_binary_files``) and optionally ``path``. Rows out:
``path`` (when given), ``image`` (uint8 HWC array, or an empty (0, 0, 3) array on failure) and
``error`` ("" or ``"ExceptionType: message"``): failures are reported per row, never stop the job.

Thread count: the default model's entropy parameters are computed in float32 and must be computed
at the encoder's torch thread count (``EntropyParameterMismatchError`` otherwise), while Ray starts
actors with one thread per CPU asked for. ``threads=`` sets the actors' torch threads
(``decode_folder`` passes the driver's count unless told otherwise).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..api import resolve_model
from ..batch import _on_device, decode_many

__all__ = ["RayDecoder", "decode_folder"]


class RayDecoder:
    """``map_batches`` callable: ``{"bytes": [...]} -> {"image": [...], "error": [...], ["path"]}``.

    Args:
        model: a codec (pickled by reference), a preset name / model path, or None (each stream's
            model by fingerprint, e.g. the bundled default model).
        device: "cpu", "cuda", ... (None: "cuda" when the actor sees a GPU, else "cpu").
        threads: torch threads in the actor (None: leave Ray's setting).
        batch_size: streams per ``decode_many`` group inside one Ray batch.
        column: the input column of streams.
    """

    def __init__(self, model: Any = None, *, device: str | None = None, threads: int | None = None,
                 batch_size: int = 8, column: str = "bytes") -> None:

        if threads:
            torch.set_num_threads(int(threads))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = int(batch_size)
        self.column = column
        self.model = model
        if model is not None:  # load once per actor (a codec object was rebuilt on unpickling)

            self.model = _on_device(resolve_model(model), torch.device(device))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:


        streams = [bytes(s) for s in batch[self.column]]
        images, errors = [], []
        # one synthesis at a time: the actors are the parallelism, sized by Ray's CPU accounting
        for r in decode_many(streams, self.model, batch_size=self.batch_size, device=self.device, workers=1,
                             synthesis_threads=1):
            if r.ok:
                images.append(r.image.permute(1, 2, 0).contiguous().numpy())
                errors.append("")
            else:
                images.append(np.zeros((0, 0, 3), dtype=np.uint8))
                errors.append(f"{type(r.error).__name__}: {r.error}")
        out: dict[str, Any] = {"image": _object_array(images), "error": np.array(errors, dtype=object)}
        if "path" in batch:
            out["path"] = batch["path"]
        return out


def _object_array(items: list[Any]) -> Any:

    arr = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        arr[i] = x
    return arr


def decode_folder(paths: Any, model: Any = None, *, concurrency: int = 1, batch_size: int = 8,
                  num_gpus: float | None = None, num_cpus: float | None = None, threads: int | None = None,
                  file_extensions: list[str] | None = None) -> Any:
    """A lazy ``ray.data.Dataset`` of the decoded streams under ``paths`` (folder(s) or files,
    local or any filesystem Ray reads): columns ``path``, ``image``, ``error``.

    ``concurrency``: decoder actors (each holds one codec); ``num_gpus``: GPUs per actor (default:
    1 when this driver sees a CUDA device, else 0); ``num_cpus``: CPUs per actor (Ray's default 1;
    leave a CPU for the read tasks: 2 actors of 1 CPU on a 2-CPU cluster wait forever for them);
    ``threads``: torch threads per actor (default: this process's count, see the module docstring).
    Requires ``ray`` (``pip install cod_fast[ray]``).
    """
    import ray  # local: optional dependency (ray)

    if num_gpus is None:
        num_gpus = 1 if torch.cuda.is_available() else 0
    ds = ray.data.read_binary_files(paths, include_paths=True,
                                    file_extensions=file_extensions if file_extensions is not None else ["codf"])
    kwargs: dict[str, Any] = {}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    return ds.map_batches(
        RayDecoder, fn_constructor_kwargs={"model": model, "threads": threads or torch.get_num_threads(),
                                           "batch_size": batch_size, "device": "cuda" if num_gpus else "cpu"},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=int(concurrency)),
        num_gpus=num_gpus, **kwargs)
