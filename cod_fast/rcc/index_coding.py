"""Entropy coding of DiffC chunk indices with DiffC's truncated Zipf model, on the rANS coder.

Model (DiffC): index k of a chunk with ``b`` bits and KL share ``KL_c`` bits has probability
proportional to ``(k + 1)^-s`` over ``k < 2^b``, with ``s = 1 + 1 / (KL_c + e^-1 ln(e + 1))``.

Scheme: precision-16 rANS tables cannot hold 2^16 symbols, so an index is sent as its
*bucket* ``beta = bit_length(k)`` (0 .. b, at most 17 symbols) with a table built from the Zipf
mass of each bucket, followed by the ``beta - 1`` bits of k below its leading one, raw. The raw bits
cost what the Zipf model would charge up to the variation of ``x^-s`` inside a bucket (a factor 2^s
from one end to the other): about 0.03 bit per chunk for s near 1, against 14-16 bits per index.

Determinism: the bucket masses are computed in Python floats with a fixed sequence of correctly
rounded operations (+, -, *, /, frexp/ldexp, which are exact) -- our own log and exp, not libm's --
then turned into integer counts; ``CdfTables.from_counts`` quantizes those with integers only. So
encoder and decoder build the same tables on every machine with IEEE-754 binary64 arithmetic
(Python floats), whatever its thread count, CPU kernels or BLAS.

Byte format: ``u32 LE n`` | ``n`` bytes: rANS stream of the buckets (cod_fast.entropy format) |
the raw bits of every index in chunk order, MSB first, zero-padded to a byte.
Chunks of 0 bits (a single candidate) cost nothing.
"""
from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ..entropy import CdfTables
from ..errors import BitstreamError
from .chunking import KL_UNITS_PER_BIT, MAX_CHUNK_BITS, ChunkPlan

ZIPF_OFFSET = 0.48312197571606913  # e^-1 * ln(e + 1), as a fixed binary64 literal
_LN2 = 0.6931471805599453  # binary64 nearest to ln 2
_SQRT_HALF = 0.7071067811865476
_ATANH_COEFFS = [1.0 / (2 * i + 1) for i in range(11, -1, -1)]  # 1/23, 1/21, ..., 1/1
_EXP_COEFFS = [1.0 / math.factorial(i) for i in range(17, -1, -1)]  # 1/17!, ..., 1/0!
_EXACT_BUCKETS = 6  # buckets up to 2^5 .. 2^6 - 1 are summed term by term; beyond, integrals
_COUNT_SCALE = 2.0**40  # integer counts: mass / total * 2^40 (sum < 2^46, as from_counts needs)


def _log(x: float) -> float:
    """Natural log of a positive finite float: frexp reduction + atanh series, fixed op order."""
    m, e = math.frexp(x)
    if m < _SQRT_HALF:
        m, e = m * 2.0, e - 1
    f = m - 1.0
    u = f / (2.0 + f)
    u2 = u * u
    p = 0.0
    for c in _ATANH_COEFFS:
        p = p * u2 + c
    return 2.0 * u * p + e * _LN2


def _exp(y: float) -> float:
    """e^y for moderate y (|y| < 700): y = n ln2 + r, Taylor series of degree 17 on r."""
    n = round(y / _LN2)
    r = y - n * _LN2
    p = 0.0
    for c in _EXP_COEFFS:
        p = p * r + c
    return math.ldexp(p, n)


def zipf_exponent(kl_chunk_bits: float) -> float:
    """DiffC's exponent s = 1 + 1 / (KL_c + e^-1 ln(e + 1)) (deterministic float ops)."""
    return 1.0 + 1.0 / (kl_chunk_bits + ZIPF_OFFSET)


def _power_sum(a: int, b: int, s: float) -> float:
    """sum_{x=a}^{b} x^-s: exact terms for small buckets, the midpoint integral beyond."""
    if b < (1 << _EXACT_BUCKETS):
        total = 0.0
        for x in range(a, b + 1):
            total += _exp(-s * _log(float(x)))
        return total
    lo, hi = a - 0.5, b + 0.5
    return (_exp((1.0 - s) * _log(lo)) - _exp((1.0 - s) * _log(hi))) / (s - 1.0)


@lru_cache(maxsize=4096)
def bucket_counts(bits: int, s: float) -> tuple[int, ...]:
    """Integer counts of buckets 0..bits under Zipf(s) over k < 2^bits (bucket = bit_length(k))."""
    masses = [1.0]  # k = 0: x = 1
    for beta in range(1, bits + 1):
        masses.append(_power_sum((1 << (beta - 1)) + 1, 1 << beta, s))
    total = 0.0
    for m in masses:
        total += m
    return tuple(max(1, int(m / total * _COUNT_SCALE)) for m in masses)


def chunk_parameters(plans: Sequence[ChunkPlan]) -> tuple[list[int], list[float]]:
    """(bits, KL_c in bits) of every chunk of the given steps, in order.

    KL_c = kl_q * bits_c / (16 * sum(bits)) -- DiffC's ``dkl * chunk_size / chunk_size_sum`` --
    one correctly rounded division of two exact integers.
    """
    bits, kls = [], []
    for plan in plans:
        total = sum(plan.bits)
        for b in plan.bits:
            bits.append(b)
            kls.append(plan.kl_q * b / (KL_UNITS_PER_BIT * total) if total else 0.0)
    return bits, kls


def _tables(bits: Sequence[int], kls: Sequence[float]):
    """CdfTables over the distinct (bits, s) pairs and the table index of every coded chunk."""
    keys: dict[tuple[int, float], int] = {}
    table_of = []
    for b, kl in zip(bits, kls):
        if b == 0:
            continue
        key = (b, zipf_exponent(kl))
        table_of.append(keys.setdefault(key, len(keys)))
    if not keys:
        return None, table_of
    counts = [np.asarray(bucket_counts(b, s), dtype=np.int64) for (b, s) in keys]
    return CdfTables.from_counts(counts, np.zeros(len(counts), dtype=np.int32)), table_of


def _check_params(bits: Sequence[int], kls: Sequence[float]) -> None:
    if len(bits) != len(kls):
        raise ValueError(f"chunk_bits ({len(bits)}) and chunk_kl ({len(kls)}) differ in length")
    for b in bits:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 0 <= b <= MAX_CHUNK_BITS:
            raise ValueError(f"chunk bits must be ints in [0, {MAX_CHUNK_BITS}], got {b!r}")
    for kl in kls:
        if not isinstance(kl, (int, float)) or not math.isfinite(kl) or kl < 0:
            raise ValueError(f"chunk KL must be finite and >= 0, got {kl!r}")


def encode_indices(
    indices: Sequence[int] | torch.Tensor, chunk_bits: Sequence[int], chunk_kl: Sequence[float]
) -> bytes:
    """Indices (one per chunk, ``0 <= k < 2^bits``) -> bytes. ``chunk_kl``: KL_c in bits per chunk
    (see :func:`chunk_parameters`)."""
    _check_params(chunk_bits, chunk_kl)
    idx = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if len(idx) != len(chunk_bits):
        raise ValueError(f"{len(idx)} indices for {len(chunk_bits)} chunks")
    for k, b in zip(idx, chunk_bits):
        if not 0 <= k < (1 << b):
            raise ValueError(f"index {k} does not fit a {b}-bit chunk")
    tables, table_of = _tables(chunk_bits, chunk_kl)
    buckets = [k.bit_length() for k, b in zip(idx, chunk_bits) if b > 0]
    head = tables.encode(np.asarray(buckets, np.int32), np.asarray(table_of, np.int32), threads=1) if tables else b""
    raw = 0
    n_raw = 0
    for k, b in zip(idx, chunk_bits):
        beta = k.bit_length()
        if b > 0 and beta >= 2:
            raw = (raw << (beta - 1)) | (k - (1 << (beta - 1)))
            n_raw += beta - 1
    pad = -n_raw % 8
    tail = (raw << pad).to_bytes((n_raw + pad) // 8, "big")
    return struct.pack("<I", len(head)) + head + tail


def decode_indices(data: bytes, chunk_bits: Sequence[int], chunk_kl: Sequence[float]) -> list[int]:
    """Bytes of :func:`encode_indices` -> the indices. Raises BitstreamError on a bad stream."""
    _check_params(chunk_bits, chunk_kl)
    data = bytes(data)
    if len(data) < 4:
        raise BitstreamError("index stream shorter than its 4-byte header")
    (n_head,) = struct.unpack_from("<I", data)
    if n_head > len(data) - 4:
        raise BitstreamError(f"index stream declares {n_head} bucket bytes, {len(data) - 4} present")
    tables, table_of = _tables(chunk_bits, chunk_kl)
    coded_bits = [b for b in chunk_bits if b > 0]
    if tables is None:
        if n_head != 0 or len(data) != 4:
            raise BitstreamError("index stream has bytes for chunks that carry no bits")
        return [0] * len(chunk_bits)
    buckets = tables.decode(data[4:4 + n_head], np.asarray(table_of, np.int32), threads=1).tolist()
    for beta, b in zip(buckets, coded_bits):
        if not 0 <= beta <= b:
            raise BitstreamError(f"decoded bucket {beta} is outside [0, {b}]")
    n_raw = sum(beta - 1 for beta in buckets if beta >= 2)
    tail = data[4 + n_head:]
    if len(tail) != (n_raw + 7) // 8:
        raise BitstreamError(f"index stream has {len(tail)} raw bytes, expected {(n_raw + 7) // 8}")
    raw = int.from_bytes(tail, "big")
    pad = len(tail) * 8 - n_raw
    if raw & ((1 << pad) - 1):
        raise BitstreamError("non-zero padding bits in the index stream")
    raw >>= pad
    out = []
    it = iter(buckets)
    consumed = 0
    for b in chunk_bits:
        if b == 0:
            out.append(0)
            continue
        beta = next(it)
        if beta < 2:
            out.append(beta)
            continue
        consumed += beta - 1
        low = (raw >> (n_raw - consumed)) & ((1 << (beta - 1)) - 1)
        out.append((1 << (beta - 1)) | low)
    return out


def zipf_code_length(index: int, bits: int, kl_chunk_bits: float) -> float:
    """Ideal code length in bits of ``index`` under the exact truncated Zipf model (numpy float64,
    for measurements only: not part of any format)."""
    s = zipf_exponent(kl_chunk_bits)
    x = np.arange(1, (1 << bits) + 1, dtype=np.float64)
    h = float(np.sum(x**-s))
    return float(-np.log2((index + 1.0) ** -s / h))
