"""Argument conversion for the entropy coders: lists, numpy arrays and tensors -> int32 numpy.

Everything handed to the native coder is a C-contiguous ``numpy.int32`` array; arrays that already
are (including CPU int32 tensors, through ``Tensor.numpy()``) are passed without a copy.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def as_int32(x: Any, name: str) -> np.ndarray:
    """``x`` (list, tuple, numpy array or torch tensor of integers) as a C-contiguous int32 array.

    Shape is kept. Floating-point or boolean input raises TypeError (no silent truncation);
    integers outside the int32 range raise ValueError.
    """
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got a {x.dtype} tensor")
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.dtype != torch.int32:
            if x.numel() and (int(x.min()) < _INT32_MIN or int(x.max()) > _INT32_MAX):
                raise ValueError(f"{name} has values outside the int32 range")
            x = x.to(torch.int32)
        return np.ascontiguousarray(x.contiguous().numpy())
    arr = np.asarray(x)
    if arr.dtype == np.int32:
        return np.ascontiguousarray(arr)
    if arr.dtype == object or arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":  # e.g. np.asarray([]) is float64
            return np.zeros(arr.shape, dtype=np.int32)
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < _INT32_MIN or int(arr.max()) > _INT32_MAX):
        raise ValueError(f"{name} has values outside the int32 range")
    return np.ascontiguousarray(arr.astype(np.int32))


def as_cdf_rows(cdfs: Any) -> np.ndarray:
    """CDF tables as an int32 [n_tables, width] array; ragged lists are zero-padded on the right."""
    if isinstance(cdfs, (list, tuple)) and cdfs and all(
        isinstance(r, (list, tuple, np.ndarray)) for r in cdfs
    ):
        lengths = {len(r) for r in cdfs}
        if len(lengths) > 1:
            width = max(lengths)
            out = np.zeros((len(cdfs), width), dtype=np.int32)
            for i, row in enumerate(cdfs):
                out[i, : len(row)] = as_int32(row, f"cdfs[{i}]")
            return out
    arr = as_int32(cdfs, "cdfs")
    if arr.ndim != 2:
        raise ValueError(f"cdfs must be 2-D [n_tables, width], got shape {tuple(arr.shape)}")
    return arr


def resolve_threads(threads: int | None) -> int:
    """Thread count for the native coder: None -> 0 (one per CPU), else a positive int."""
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for one per CPU), got {threads}")
    return int(threads)


def as_stream(data: Any) -> bytes | bytearray | memoryview:
    """A bytes-like stream argument, checked."""
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, memoryview):
        return data.cast("B") if data.format != "B" else data
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        return np.ascontiguousarray(data)
    raise TypeError(f"stream must be bytes-like, got {type(data).__name__}")
