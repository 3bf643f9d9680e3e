"""rANS entropy coding throughput: cod_fast against CompressAI and constriction, in one run.

All coders see the same Gaussian symbols (sigma log-uniform over CompressAI's scale-table range,
symbol = round(N(0, sigma))). Rates are symbols per second of wall time for tensor -> bytes and
bytes -> tensor, best of --repeats; bits/symbol is the stream size. Run it alone:

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_rans.py --n 1048576
"""
from __future__ import annotations

import argparse
import platform
import time
import warnings
from typing import Callable

import numpy as np
import torch
from bench_common import gaussian_case

from cod_fast.entropy import GaussianConditionalTables


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of the calling thread, last result)."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.thread_time() - c0)
    return best, best_cpu, out


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1 << 20, help="number of symbols (default 2^20)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions, best is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-slow", action="store_true", help="skip CompressAI GC and constriction")
    args = ap.parse_args()

    n = args.n
    symbols, scales = gaussian_case(n, args.seed)
    tables = GaussianConditionalTables()
    indexes = tables.build_indexes(scales)
    # name, enc s, dec s, bits/sym, enc CPU s, dec CPU s (None for multi-threaded coders)
    rows: list[tuple[str, float, float, float, float | None, float | None]] = []

    def record(name: str, enc: Callable[[], object], dec_of: Callable[[object], Callable[[], object]],
               check: Callable[[object], bool], size_of: Callable[[object], int],
               single_thread: bool = True) -> None:
        te, ce, data = best_time(enc, args.repeats)
        td, cd, out = best_time(dec_of(data), args.repeats)
        if not check(out):
            raise SystemExit(f"{name}: round trip failed")
        cpu = (ce, cd) if single_thread else (None, None)
        rows.append((name, te, td, 8.0 * size_of(data) / n, *cpu))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from compressai import ans
        from compressai.entropy_models import GaussianConditional
        from compressai.models.base import get_scale_table

    if not args.skip_slow:
        gc = GaussianConditional(None)
        gc.update_scale_table(get_scale_table())
        x = symbols.to(torch.float32).reshape(1, n)
        idx2 = gc.build_indexes(scales.reshape(1, n))
        record(
            "CompressAI GaussianConditional.compress/decompress",
            lambda: gc.compress(x, idx2),
            lambda s: (lambda: gc.decompress(s, idx2)),
            lambda out: torch.equal(out.reshape(-1).to(torch.int32), symbols),
            lambda s: len(s[0]),
        )

    # CompressAI's raw API takes Python lists; they are built once, outside the timing.
    sl, il = symbols.tolist(), indexes.tolist()
    cl, ll, ol = tables.quantized_cdf.tolist(), tables.cdf_length.tolist(), tables.offset.tolist()
    record(
        "CompressAI raw RansEncoder/RansDecoder (lists prebuilt)",
        lambda: ans.RansEncoder().encode_with_indexes(sl, il, cl, ll, ol),
        lambda s: (lambda: ans.RansDecoder().decode_with_indexes(s, il, cl, ll, ol)),
        lambda out: out == sl,
        len,
    )

    if not args.skip_slow:
        import constriction

        model = constriction.stream.model.QuantizedGaussian(-8192, 8192)
        sym_np = symbols.numpy()
        means = np.zeros(n, dtype=np.float64)
        stds = scales.numpy().astype(np.float64)

        def c_enc() -> np.ndarray:
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(sym_np, model, means, stds)
            return coder.get_compressed()

        record(
            "constriction 0.5 AnsCoder + QuantizedGaussian",
            c_enc,
            lambda c: (lambda: constriction.stream.stack.AnsCoder(c).decode(model, means, stds)),
            lambda out: np.array_equal(out, sym_np),
            lambda c: c.nbytes,
        )

    record(
        "cod_fast compat (CompressAI bytes)",
        lambda: tables.compat_encode(symbols, indexes),
        lambda s: (lambda: tables.compat_decode(s, indexes)),
        lambda out: np.array_equal(out, symbols.numpy()),
        len,
    )
    for threads in (1, 2):
        record(
            f"cod_fast fast, {threads} thread{'s' if threads > 1 else ''}",
            lambda t=threads: tables.encode(symbols, indexes, threads=t),
            lambda s, t=threads: (lambda: tables.decode(s, indexes, threads=t)),
            lambda out: torch.equal(out, symbols),
            len,
            single_thread=threads == 1,
        )

    ref_gc = next((r for r in rows if r[0].startswith("CompressAI Gaussian")), None)
    ref_raw = next(r for r in rows if r[0].startswith("CompressAI raw"))
    print(f"rANS benchmark: {n} Gaussian symbols, sigma log-uniform in [0.11, 256], "
          f"best of {args.repeats}; CPU: {cpu_model()}; torch threads {torch.get_num_threads()}")
    print("Msym/s from wall time; 'CPU' columns from the calling thread's CPU time (single-threaded"
          " coders only: robust when other processes share the cores)")
    head = (f"| {'coder':<55} | enc Msym/s | dec Msym/s | CPU enc | CPU dec | bits/sym |"
            " enc/dec x raw API |")
    if ref_gc:
        head += " enc/dec x CompressAI GC |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name, te, td, bps, ce, cd in rows:
        cpu = [f"{n / c / 1e6:7.1f}" if c else "      -" for c in (ce, cd)]
        line = (f"| {name:<55} | {n / te / 1e6:10.1f} | {n / td / 1e6:10.1f} | {cpu[0]} | {cpu[1]} "
                f"| {bps:8.4f} | "
                f"{ref_raw[1] / te:6.1f} / {ref_raw[2] / td:<8.1f} |")
        if ref_gc:
            line += f" {ref_gc[1] / te:9.1f} / {ref_gc[2] / td:<11.1f} |"
        print(line)


if __name__ == "__main__":
    main()
