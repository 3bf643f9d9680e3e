"""Plain-torch reference of the shared randomness and of one DiffC step (encode / decode).

Bit-for-bit the same generator as ``csrc/rcc/rcc_math.h`` (C++ and CUDA): Philox4x32-10 on int64
tensors holding uint32 values, and the normal / exponential transforms as the same sequence of
float32 tensor operations, each correctly rounded (``+``, ``-``, ``*``, int->float conversion;
``sqrt`` through float64, since torch's float32 sqrt is not correctly rounded on CPU).
Constants are float32 0-dim tensors, so no op mixes in float64. Never use fused ops (addcmul,
lerp...) here: they may contract into FMA.

Stream layout (see rcc_math.h): key = (seed lo, seed hi); counter = (c0, c1, step, stream). Word i
of a stream is word ``i % 4`` of the block ``c0 = i // 4``.
Slow by design: meant for tests on tiny sizes and as the executable specification.
"""
from __future__ import annotations

import torch

from .chunking import ChunkPlan

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
ARRIVAL_COUNTER_HI = 0xFFFFFFFF
SHUFFLE_STREAM = 0xFFFFFFFF
DOT_LANES = 32
_U32 = 0xFFFFFFFF


def _f(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


_C = {name: _f(v) for name, v in {
    "one": 1.0, "two": 2.0, "half": 0.5, "two_m31": 2.0**-31, "two_p32": 2.0**32,
    "tail_w": 5.0, "sqrt2": 1.41421356237309504880, "ln2_hi": 0.693359375, "ln2_lo": -2.12194440e-4,
}.items()}
_LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1]
_ERFINV_CENTRAL = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                   0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
_ERFINV_TAIL = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]
_LOG_P_T = [_f(c) for c in _LOG_P]
_ERFINV_CENTRAL_T = [_f(c) for c in _ERFINV_CENTRAL]
_ERFINV_TAIL_T = [_f(c) for c in _ERFINV_TAIL]


def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """hi and lo 32 bits of m * x (x: int64 tensor of uint32 values), without int64 overflow."""
    p_lo = x * (m & 0xFFFF)
    p_hi = x * (m >> 16)
    s = p_lo + ((p_hi & 0xFFFF) << 16)
    return ((p_hi >> 16) + (s >> 32)) & _U32, s & _U32


def philox4x32_10(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: int, k1: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on broadcastable int64 tensors of uint32 values; key (k0, k1) as ints."""
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for r in range(10):
        if r > 0:
            k0 = (k0 + PHILOX_W0) & _U32
            k1 = (k1 + PHILOX_W1) & _U32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def stream_words(
    seed: int, step: int, stream: int | torch.Tensor, c1: int | torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """Word ``index`` (int64 tensor) of the stream (seed, step, stream, c1), as int64 uint32s."""
    index = index.to(torch.int64)
    w = philox4x32_10(index >> 2, _i64(c1), _i64(step), _i64(stream), seed & _U32, seed >> 32)
    stacked = torch.stack(w, dim=-1)
    word = (index & 3).expand(stacked.shape[:-1]).unsqueeze(-1)
    return torch.gather(stacked, -1, word).squeeze(-1)


def _i64(v: int | torch.Tensor) -> torch.Tensor:
    return v.to(torch.int64) if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.int64)


def uniform(r: torch.Tensor) -> torch.Tensor:
    """t = float((r >> 1) | 1) * 2^-31 in (0, 1] (float32)."""
    m = ((r >> 1) | 1).to(torch.int32)
    return m.to(torch.float32) * _C["two_m31"]


def log_pos(a: torch.Tensor) -> torch.Tensor:
    """rcc_math.h ``log_pos``: natural log of positive normal float32 values, op for op."""
    ia = a.view(torch.int32)
    e = (ia - 0x3F3504F3) >> 23
    m = (ia - e * (1 << 23)).view(torch.float32)
    f = m - _C["one"]
    ef = e.to(torch.float32)
    z = f * f
    p = _LOG_P_T[0].expand_as(f)
    for c in _LOG_P_T[1:]:
        p = p * f + c
    y = (p * f) * z
    y = y + ef * _C["ln2_lo"]
    y = y - _C["half"] * z
    r = f + y
    return r + ef * _C["ln2_hi"]


def _horner_rev(coeffs: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    p = coeffs[0].expand_as(v)
    for c in coeffs[1:]:
        p = c + p * v
    return p


def normal(r: torch.Tensor) -> torch.Tensor:
    """Standard normals (float32) from words r (int64 tensor of uint32 values)."""
    t = uniform(r)
    w = -log_pos(t * (_C["two"] - t))
    central = _horner_rev(_ERFINV_CENTRAL_T, w - 2.5 * _C["one"])
    # torch.sqrt on float32 CPU tensors is not correctly rounded (it differs from IEEE sqrt in
    # about 1 of 5 values); the float64 square root rounded to float32 is (53 >= 2 * 24 + 2).
    sqrt_w = torch.sqrt(w.to(torch.float64)).to(torch.float32)
    tail = _horner_rev(_ERFINV_TAIL_T, sqrt_w - 3.0 * _C["one"])
    p = torch.where(w < _C["tail_w"], central, tail)
    x_bits = (_C["one"] - t).view(torch.int32) ^ ((r & 1) << 31).to(torch.int64).to(torch.int32)
    return (p * x_bits.view(torch.float32)) * _C["sqrt2"]


def exp1_fixed(r: torch.Tensor) -> torch.Tensor:
    """trunc(-log(t) * 2^32) as int64: Exp(1) draws in fixed point with 32 fractional bits."""
    e = (-log_pos(uniform(r))) * _C["two_p32"]
    return e.to(torch.int64)


def log_arrival(t_fixed: torch.Tensor) -> torch.Tensor:
    """log of the fixed-point arrival times (int64 tensor), float32, via an exact float64 step."""
    return log_pos(t_fixed.to(torch.float64).to(torch.float32))


def normals(seed: int, step: int, stream: int, c1: int, start: int, n: int) -> torch.Tensor:
    """Normals start .. start+n-1 of a stream (float32 [n])."""
    idx = torch.arange(start, start + n, dtype=torch.int64)
    return normal(stream_words(seed, step, stream, c1, idx))


def permutation(seed: int, step: int, dim: int) -> torch.Tensor:
    """The step's dimension shuffle (int64 [dim]): Fisher-Yates, j = (r_i * (i + 1)) >> 32."""
    i = torch.arange(dim, dtype=torch.int64)
    r = stream_words(seed, step, SHUFFLE_STREAM, 0, i)
    js = ((r * (i + 1)) >> 32).tolist()
    perm = list(range(dim))
    for k in range(dim - 1, 0, -1):
        j = js[k]
        perm[k], perm[j] = perm[j], perm[k]
    return torch.tensor(perm, dtype=torch.int64)


def candidates(seed: int, step: int, chunk: int, k: torch.Tensor, d: int) -> torch.Tensor:
    """Candidates k (int64 [K]) of a chunk: float32 [K, d]."""
    j = torch.arange(d, dtype=torch.int64)
    r = stream_words(seed, step, chunk, k.to(torch.int64)[:, None], j[None, :].expand(len(k), d))
    return normal(r)


def log_weights(
    mu_chunk: torch.Tensor, seed: int, step: int, chunk: int, k_begin: int, k_end: int
) -> torch.Tensor:
    """<z_k, mu_chunk> in the canonical order (32 accumulators acc[j % 32], halving fold)."""
    d = mu_chunk.shape[0]
    n_blocks = -(-d // DOT_LANES)
    padded = n_blocks * DOT_LANES
    mu = torch.zeros(padded, dtype=torch.float32)
    mu[:d] = mu_chunk
    z = candidates(seed, step, chunk, torch.arange(k_begin, k_end, dtype=torch.int64), padded)
    prod = z * mu
    acc = torch.zeros(k_end - k_begin, DOT_LANES, dtype=torch.float32)
    for b in range(n_blocks):
        acc = acc + prod[:, b * DOT_LANES:(b + 1) * DOT_LANES]
    h = DOT_LANES // 2
    while h >= 1:
        acc = acc[:, :h] + acc[:, h:2 * h]
        h //= 2
    return acc[:, 0]


def _score_order(s: torch.Tensor) -> torch.Tensor:
    u = s.view(torch.int32).to(torch.int64) & _U32
    return torch.where(u >= 2**31, _U32 - u, u + 2**31)


def select(mu_chunk: torch.Tensor, bits: int, seed: int, step: int, chunk: int) -> int:
    """Winner of one chunk: argmin over k < 2^bits of log T_k - log w_k (lowest k on ties)."""
    k_count = 1 << bits
    logw = log_weights(mu_chunk, seed, step, chunk, 0, k_count)
    k = torch.arange(k_count, dtype=torch.int64)
    arrivals = 1 + torch.cumsum(exp1_fixed(stream_words(seed, step, chunk, ARRIVAL_COUNTER_HI, k)), 0)
    score = log_arrival(arrivals) - logw
    return int(torch.argmin(_score_order(score)))


def decode(indices: list[int], plan: ChunkPlan, seed: int, step: int) -> torch.Tensor:
    """Sample float32 [dim] from the chunk winners (indices already validated)."""
    perm = permutation(seed, step, plan.dim)
    sample = torch.empty(plan.dim, dtype=torch.float32)
    for c, (off, d) in enumerate(zip(plan.offsets, plan.dims)):
        z = candidates(seed, step, c, torch.tensor([indices[c]], dtype=torch.int64), d)[0]
        sample[perm[off:off + d]] = z
    return sample


def encode(mu: torch.Tensor, plan: ChunkPlan, seed: int, step: int) -> tuple[list[int], torch.Tensor]:
    """Winners (one per chunk) and the sample float32 [dim] for mu float32 [dim]."""
    perm = permutation(seed, step, plan.dim)
    indices = []
    for c, (off, d, b) in enumerate(zip(plan.offsets, plan.dims, plan.bits)):
        indices.append(select(mu[perm[off:off + d]], b, seed, step, c))
    return indices, decode(indices, plan, seed, step)
