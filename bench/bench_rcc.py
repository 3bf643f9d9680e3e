"""Reverse-channel coding throughput: cod_fast's C++ encoder/decoder vs a vectorised torch-CPU port
of DiffC's selection, in the same run.

The port does what DiffC's CUDA path does, on the CPU with torch: candidates from ``torch.randn``
(in batches, never 2^16 x d at once), ``log w = z @ mu``, arrival times ``log(cumsum(Exp(1)))``,
argmin; decoding regenerates the winner from a generator seeded by (chunk seed, index).

Throughput unit: candidate-dimensions per second = 2^bits * chunk_dims / seconds.

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_rcc.py [--steps] [--pixel]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from cod_fast import _ext, rcc

BITS = 16  # one full chunk: 2^16 candidates


def port_encode_chunk(mu: torch.Tensor, bits: int, seed: int, batch: int = 4096) -> tuple[int, torch.Tensor]:
    """DiffC's selection for one chunk, vectorised torch on the CPU."""
    k_count = 1 << bits
    gen = torch.Generator().manual_seed(seed)
    logw = torch.empty(k_count, dtype=torch.float32)
    for start in range(0, k_count, batch):
        stop = min(k_count, start + batch)
        logw[start:stop] = torch.randn(stop - start, mu.numel(), generator=gen) @ mu
    gaps = torch.empty(k_count, dtype=torch.float64).exponential_(generator=gen)
    score = torch.log(torch.cumsum(gaps, 0)) - logw.double()
    k = int(torch.argmin(score))
    return k, port_decode_chunk(k, mu.numel(), seed, batch)


def port_decode_chunk(k: int, d: int, seed: int, batch: int = 4096) -> torch.Tensor:
    """Regenerate candidate k (replays the generator up to k's batch, as the port must)."""
    gen = torch.Generator().manual_seed(seed)
    z = None
    for start in range(0, k + 1, batch):
        z = torch.randn(min(batch, (1 << BITS) - start), d, generator=gen)
    return z[k % batch]


def _time(fn, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_chunks(repeat: int) -> None:
    rcc_cpp = _ext.require_cpu_ext().rcc
    torch.set_num_threads(2)
    print(f"one chunk of {BITS} bits (2^{BITS} candidates); best of {repeat}; M cand-dims/s")
    print(f"{'dims':>6} {'port':>8} {'cpp 1t':>8} {'cpp 2t':>8} {'x port':>7} "
          f"{'port dec ms':>11} {'cpp dec ms':>10}")
    for d in (64, 256, 1024):
        mu = torch.randn(d, generator=torch.Generator().manual_seed(d)) * 0.1
        work = (1 << BITS) * d
        t_port = _time(lambda: port_encode_chunk(mu, BITS, 7), repeat)
        bits = np.array([BITS], np.int32)
        dims = np.array([d], np.int64)
        t1 = _time(lambda: rcc_cpp.encode(mu.numpy(), bits, dims, 7, 0, 1, "auto"), repeat)
        t2 = _time(lambda: rcc_cpp.encode(mu.numpy(), bits, dims, 7, 0, 2, "auto"), repeat)
        idx = np.array([(1 << BITS) - 1], np.int64)  # the port's worst case replays every batch
        td_port = _time(lambda: port_decode_chunk(int(idx[0]), d, 7), repeat)
        td = _time(lambda: rcc_cpp.decode(idx, d, bits, dims, 7, 0, 1), repeat)
        print(f"{d:>6} {work / t_port / 1e6:>8.0f} {work / t1 / 1e6:>8.0f} {work / t2 / 1e6:>8.0f} "
              f"{t_port / t2:>7.1f} {td_port * 1e3:>11.2f} {td * 1e3:>10.3f}")


def bench_step(name: str, dim: int, kl_bits: float, repeat: int) -> None:
    plan = rcc.make_plan(dim, kl_bits)
    mu_scale = math.sqrt(2 * math.log(2) * kl_bits / dim)
    mu = torch.randn(dim, generator=torch.Generator().manual_seed(1)) * mu_scale
    t_enc = _time(lambda: rcc.encode(mu, kl_bits, 3, 5, backend="cpp", threads=2), repeat)
    idx, _ = rcc.encode(mu, kl_bits, 3, 5, backend="cpp", threads=2)
    t_dec = _time(lambda: rcc.decode(idx, dim, kl_bits, 3, 5, backend="cpp", threads=2), max(repeat, 3))
    work = sum((1 << b) * d for b, d in zip(plan.bits, plan.dims))
    print(f"{name}: dim {dim}, KL {kl_bits} bits -> {plan.n_chunks} chunks of {max(plan.bits)} bits; "
          f"encode {t_enc:.3f} s ({work / t_enc / 1e6:.0f} M cand-dims/s, 2 threads), "
          f"decode {t_dec * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--steps", action="store_true", help="also time a full CoD latent step")
    ap.add_argument("--pixel", action="store_true", help="also time a full CoD pixel step (minutes)")
    args = ap.parse_args()
    print("AVX2 kernel:", _ext.require_cpu_ext().rcc.avx2_supported())
    bench_chunks(args.repeat)
    # 0.1 bpp on 512x512 = 26,214 bits: 164 bits/step over DiffC's 160 latent steps, 185 bits/step
    # over its 142 pixel steps.
    if args.steps:
        bench_step("CoD latent step", 4 * 64 * 64, 164.0, args.repeat)
    if args.pixel:
        bench_step("CoD pixel step", 3 * 512 * 512, 185.0, 1)


if __name__ == "__main__":
    main()
