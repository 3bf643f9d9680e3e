"""Throughput of ``cod_fast.decode_many`` against the one-by-one ``codec.decode`` loop, same run.

The bundled default model on Kodak-sized images (the first ``--images`` PNGs of ``--kodak``,
768x512 and 512x768), encoded once at ``--quality`` in this process. Contenders, alternated
round by round so that all see the same machine load:

  loop          ``[codec.decode(s) for s in streams]``
  decode_many   ``list(cod_fast.decode_many(streams, codec, batch_size=--batch, workers=--workers))``
  --ablate:     decode_many with ``workers=0`` (entropy halves one by one in the calling thread),
                and with the next chunk prepared while this one is synthesised

Also printed: the per-image time of the entropy stage alone (``codec.decode_symbols``: parse, z and
y rANS decoding, entropy parameters), whether each contender's pixels are bitwise the loop's (the
default CPU path is exact by construction), and the largest pixel difference.

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_decode_many.py --images 8 --batch 8 --repeat 3
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

import cod_fast
from cod_fast import batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    bench_common.add_kodak_stream_args(ap, repeat=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="decode_many's workers (default: its own)")
    ap.add_argument("--forward-batch", type=int, default=None, help="images per synthesis forward (None: auto)")
    ap.add_argument("--ablate", action="store_true",
                    help="also run decode_many with workers=0 (entropy stages one by one in the calling thread) "
                         "and with the next chunk prepared during the synthesis")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    codec, streams = bench_common.kodak_streams(args)
    print(bench_common.machine_line())
    print(f"{len(streams)} Kodak images ({', '.join(sorted({str(tuple(codec.decode_symbols(s)[0].shape[-2:])) for s in streams}))} "
          f"latent grids), quality {args.quality}, batch {args.batch}, workers {args.workers}, "
          f"forward_batch {args.forward_batch or 'auto'}, mean {8 * sum(map(len, streams)) / (len(streams) * 768 * 512):.3f} bpp")

    def run_loop() -> list[torch.Tensor]:
        return [codec.decode(s) for s in streams]

    def many(workers: int | None, during: bool = False):
        def run() -> list[torch.Tensor]:
            batch._PREPARE_DURING_SYNTHESIS = during
            try:
                return [r.image for r in cod_fast.decode_many(streams, codec, batch_size=args.batch, workers=workers,
                                                              forward_batch=args.forward_batch, on_error="raise")]
            finally:
                batch._PREPARE_DURING_SYNTHESIS = False
        return run

    runs = {"loop": run_loop, "decode_many": many(args.workers)}
    if args.ablate:
        runs["decode_many(workers=0)"] = many(0)
        runs["decode_many(prepare during synthesis)"] = many(args.workers, True)
    outs = {name: fn() for name, fn in runs.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for s in streams:
        codec.decode_symbols(s)
    entropy = (time.perf_counter() - t0) / len(streams)
    base = statistics.median(times["loop"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<40} median {med:7.3f} s  min {min(ts):7.3f} s  ({len(streams) / med:5.2f} img/s; runs "
              f"{', '.join(f'{t:.3f}' for t in ts)})  speedup {base / med:4.2f}x")
    for name in runs:
        if name != "loop":
            same_all = all(torch.equal(a, b) for a, b in zip(outs["loop"], outs[name]))
            print(f"  {name}: pixels bitwise equal to the loop's: {same_all}")
    diff = max(int((a.int() - b.int()).abs().max()) for a, b in zip(outs["loop"], outs["decode_many"]))
    same = sum(int((a == b).sum()) for a, b in zip(outs["loop"], outs["decode_many"])) / sum(a.numel() for a in outs["loop"])
    print(f"  entropy stage alone (decode_symbols): {entropy * 1e3:.0f} ms/img;  pixels: max |diff| {diff} level(s), "
          f"{100 * same:.3f} % identical")
    print(f"load at end={bench_common.load_averages()}")


if __name__ == "__main__":
    main()
