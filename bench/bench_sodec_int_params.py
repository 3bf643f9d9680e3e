"""SODEC fixed-point entropy parameters on the CPU: torch int64 reference against the C++ backend.

Full config (``FULL_SODEC``: n 192, m 320, cz 192), random seeded weights, one 512x512 image: z is
8x8x192 and the integer hyper synthesis runs 3 layers (192->192 at 8x8, 192->192 at 16x16,
192->640 at 32x32; about 1.24 G multiply-adds). Timed in one process, alternating rounds, medians:

* ``reference``  ``entropy_parameters(params, z, "reference")`` (torch int64, the spec)
* ``cpp``        the same on ``backend="cpp"`` (``cod_fast._C.sodec``; kernel chosen at run time)
* ``cpp[impl]``  the same with the GEMM kernel forced, for every kernel this CPU runs (portable,
                 avx2, avx512, amx)
* ``g_a``        the float analysis transform on the image, and the whole hyperprior
                 ``compress(backend="cpp")`` (g_a, h_a, the integer parameters, rANS), for the
                 issue's "encode at most 1.5x g_a" ratio.

Every backend's integers are checked equal to the reference's. Each timed run follows a short
sleep (``--pause``): torch's OpenMP workers spin for a while after a parallel region, and without
the pause they ran against (and were billed to) whatever came next. Run it under the team's lock:

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_sodec_int_params.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common

from cod_fast.int_params.backends import cpu_impls, entropy_parameters_cpp
from cod_fast.models.sodec.hyperprior import SodecHyperprior
from cod_fast.models.sodec.integer_params import entropy_parameters
from cod_fast.models.sodec.model import FULL_SODEC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="image side (multiple of 64)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-reference", action="store_true", help="time the C++ kernels only")
    ap.add_argument("--pause", type=float, default=0.3,
                    help="seconds of sleep before each timed run, so that the previous run's spinning "
                         "OpenMP workers (torch) go idle instead of competing with it (default 0.3)")
    ap.add_argument("--warm", type=int, default=0,
                    help="time each contender as N calls back to back (after 3 unmeasured ones) per round, "
                         "as a decoder calls it mid-stream, instead of one call after the pause (default 0: off)")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = SodecHyperprior(FULL_SODEC.hyperprior).eval()
    model.update()
    params = model.int_params
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        z = torch.round(model.h_a(model.g_a(x))).to(torch.int32)
    def cpp_impl(impl: str) -> Callable[[], object]:
        return lambda: entropy_parameters_cpp(params, z, impl=impl)

    runs: dict[str, Callable[[], object]] = {}
    if not args.skip_reference:
        runs["reference"] = lambda: entropy_parameters(params, z, "reference")
    runs["cpp"] = lambda: entropy_parameters(params, z, "cpp")
    for impl in cpu_impls():
        runs[f"cpp[{impl}]"] = cpp_impl(impl)

    def g_a() -> object:
        with torch.inference_mode():
            return model.g_a(x)

    def compress() -> object:
        with torch.inference_mode():
            return model.compress(x, backend="cpp")

    runs["g_a (float)"] = g_a
    runs["hyperprior compress(cpp)"] = compress

    outs: dict[str, object] = {}
    for name, fn in runs.items():  # warm-up
        outs[name] = fn()
    want = outs.get("reference", outs["cpp"])
    for name in runs:
        if name.startswith("cpp") and name != "cpp" or name == "cpp":
            got = outs[name]
            if not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])):
                raise SystemExit(f"{name}: integers differ from {'reference' if 'reference' in outs else 'cpp'}")
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            time.sleep(args.pause)
            if args.warm:  # a round = the median of --warm calls back to back, after 3 unmeasured ones
                for _ in range(3):
                    runs[name]()
                walls, cpus = [], []
                for _ in range(args.warm):
                    t0, c0 = time.perf_counter(), time.process_time()
                    runs[name]()
                    walls.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
                times[name].append(statistics.median(walls))
                cpu[name].append(statistics.median(cpus))
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)

    print(f"SODEC integer entropy parameters, FULL_SODEC, {args.size}x{args.size} (z {tuple(z.shape)}), "
          f"median of {args.repeats} alternated rounds{f' of {args.warm} back-to-back calls' if args.warm else ''}; {bench_common.machine_line()}; "
          f"load averages {bench_common.load_averages()}; C++ threads: one per CPU")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ref = med.get("reference")
    cmed = {name: statistics.median(ts) for name, ts in cpu.items()}
    cref = cmed.get("reference")
    print("wall: median of the rounds; CPU: process CPU time (all threads), median; under load the CPU "
          "column is the steadier comparison")
    print(f"| {'what':<28} | wall ms | rounds ms | x reference (wall) | CPU ms | x reference (CPU) |")
    print("|:--|--:|:--|--:|--:|--:|")
    for name, ts in times.items():
        cmp = ref and name != "reference" and not name.startswith(("g_a", "hyper"))
        speed = f"{ref / med[name]:.1f}x" if cmp else ""
        cspeed = f"{cref / cmed[name]:.1f}x" if cmp else ""
        print(f"| {name:<28} | {1000 * med[name]:7.1f} | {' '.join(f'{1000 * t:.0f}' for t in ts)} | {speed} "
              f"| {1000 * cmed[name]:6.1f} | {cspeed} |")
    print(f"hyperprior compress(cpp) / g_a = {med['hyperprior compress(cpp)'] / med['g_a (float)']:.2f}; "
          f"cpp entropy parameters / g_a = {med['cpp'] / med['g_a (float)']:.2f}")


if __name__ == "__main__":
    main()
