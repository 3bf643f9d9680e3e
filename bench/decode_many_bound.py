"""How fast can ``decode_many`` be on this CPU? The upper bounds on its speedup over the
one-by-one ``decode`` loop, from the per-stage times of ``decode`` (default model, Kodak).

Measures, per image over the first ``--images`` Kodak images (encoded at ``--quality``), at the
caller's torch thread count T (default: torch's) and at one thread, alternated round by round
(medians): ``decode``; its entropy half (``DefaultCodec.decode_latents``); its synthesis half
(``DefaultCodec.synthesize``); wall and process CPU time. Then prints

* the parallel efficiency of each half at T threads (1-thread wall / (T x T-thread wall));
* bound A (pixels bitwise those of ``decode``, what ``decode_many`` guarantees): the synthesis must
  run as ``decode`` runs it, at T threads (checked here: its pixels at one thread differ), so an
  image costs at least the T-thread synthesis wall plus the entropy half's CPU time spread over T
  cores: speedup <= decode / (synthesis_T + entropy_cpu / T);
* bound B (any pixels): all the work at one thread spread perfectly over T cores:
  speedup <= decode_T / (decode_1 / T) (batched convolutions cost more per image on this CPU,
  BENCHMARKS.md, so batching does not lower the work).

    PYTHONPATH=. python bench/decode_many_bound.py --images 8
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    bench_common.add_kodak_stream_args(ap, repeat=5)
    args = ap.parse_args()
    T = torch.get_num_threads()
    codec, streams = bench_common.kodak_streams(args)
    n = len(streams)
    print(bench_common.machine_line())
    latents: dict[int, tuple] = {}

    def entropy() -> None:
        for i, s in enumerate(streams):
            latents[i] = codec.decode_latents(s)

    def synthesis() -> list[torch.Tensor]:
        return [codec.synthesize(y.clone(), q, size) for y, q, size in (latents[i] for i in range(n))]

    def loop() -> list[torch.Tensor]:
        return [codec.decode(s) for s in streams]

    def at(threads: int, fn):
        def run():
            torch.set_num_threads(threads)
            try:
                return fn()
            finally:
                torch.set_num_threads(T)
        return run

    entropy()
    px_T, px_1 = at(T, synthesis)(), at(1, synthesis)()
    runs = {f"decode@{T}": at(T, loop), f"entropy@{T}": at(T, entropy), f"synthesis@{T}": at(T, synthesis),
            "decode@1": at(1, loop), "entropy@1": at(1, entropy), "synthesis@1": at(1, synthesis)}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeat):
        for k, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append((time.perf_counter() - t0) / n)
            cpu[k].append((time.process_time() - c0) / n)
    w = {k: statistics.median(v) for k, v in wall.items()}
    c = {k: statistics.median(v) for k, v in cpu.items()}
    for k in runs:
        print(f"  {k:<14} wall {w[k] * 1e3:7.1f} ms/img (min {min(wall[k]) * 1e3:7.1f})  cpu {c[k] * 1e3:7.1f} ms/img")
    for half in ("entropy", "synthesis", "decode"):
        print(f"  parallel efficiency of {half} at {T} threads: {w[f'{half}@1'] / (T * w[f'{half}@{T}']):.2f}")
    same = all(torch.equal(a, b) for a, b in zip(px_T, px_1))
    print(f"  synthesis pixels at 1 thread bitwise those at {T}: {same}")
    ent_cpu = min(c[f"entropy@{T}"], c["entropy@1"])
    a = w[f"decode@{T}"] / (w[f"synthesis@{T}"] + ent_cpu / T)
    b = w[f"decode@{T}"] / (w["decode@1"] / T)
    print(f"  bound A (bitwise decode's pixels): speedup <= {w[f'decode@{T}'] * 1e3:.1f} / "
          f"({w[f'synthesis@{T}'] * 1e3:.1f} + {ent_cpu * 1e3:.1f} / {T}) = {a:.2f}x")
    print(f"  bound B (any pixels, perfect use of {T} cores): speedup <= {w[f'decode@{T}'] * 1e3:.1f} / "
          f"({w['decode@1'] * 1e3:.1f} / {T}) = {b:.2f}x")
    print(f"load at end={bench_common.load_averages()}")


if __name__ == "__main__":
    main()
