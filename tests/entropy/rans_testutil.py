"""Shared helpers of the entropy tests: CompressAI reference objects and a pure-Python model of
CompressAI's rANS encoder (used where CompressAI itself overflows, for 0-3 symbols)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

L = 1 << 31


def compressai_gc(scale_table=None, tail_mass: float = 1e-9):
    """An updated compressai GaussianConditional (default: CompressAI's 64-scale table)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from compressai.entropy_models import GaussianConditional
        from compressai.models.base import get_scale_table

    gc = GaussianConditional(None, tail_mass=tail_mass)
    gc.update_scale_table(get_scale_table() if scale_table is None else scale_table)
    return gc


def gaussian_symbols(n: int, seed: int, lo: float = 0.11, hi: float = 256.0):
    """(symbols int32 [n], scales float32 [n]): N(0, sigma) rounded, sigma log-uniform."""
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(np.log(lo), np.log(hi), n)).astype(np.float32)
    symbols = np.round(rng.normal(size=n) * scales).astype(np.int32)
    return symbols, torch.from_numpy(scales)


def py_compat_encode(symbols, indexes, cdfs, lengths, offsets) -> bytes:
    """CompressAI's RansEncoder.encode_with_indexes written out in Python (small inputs only)."""
    ops = []  # (start, freq) for symbols, (value, None) for 4-bit bypass
    for s, t in zip(symbols, indexes):
        cdf, max_value = cdfs[t], lengths[t] - 2
        value = int(s) - int(offsets[t])
        raw = 0
        if value < 0:
            raw, value = -2 * value - 1, max_value
        elif value >= max_value:
            raw, value = 2 * (value - max_value), max_value
        ops.append((int(cdf[value]), int(cdf[value + 1]) - int(cdf[value])))
        if value == max_value:
            n_bypass = 0
            while raw >> (4 * n_bypass):
                n_bypass += 1
            v = n_bypass
            while v >= 15:
                ops.append((15, None))
                v -= 15
            ops.append((v, None))
            for j in range(n_bypass):
                ops.append(((raw >> (4 * j)) & 15, None))
    x, words = L, []
    for start, freq in reversed(ops):
        if freq is None:
            if x >= ((L >> 16) << 32) << 12:
                words.append(x & 0xFFFFFFFF)
                x >>= 32
            x = (x << 4) | start
        else:
            if x >= ((L >> 16) << 32) * freq:
                words.append(x & 0xFFFFFFFF)
                x >>= 32
            x = ((x // freq) << 16) + (x % freq) + start
    words += [x >> 32, x & 0xFFFFFFFF]
    return b"".join(int(w).to_bytes(4, "little") for w in reversed(words))
