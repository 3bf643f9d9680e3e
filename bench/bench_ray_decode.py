"""Ray Data scaling: decode a folder of default-model Kodak streams with 1 and then 2 decoder actors.

The first ``--images`` Kodak PNGs are encoded at ``--quality`` with one torch thread (the actors
decode at one thread each: the default model's entropy parameters need the encoder's thread count)
and written as ``.codf`` files to a temporary folder; a local Ray cluster (``ray.init(num_cpus=2)``)
then runs ``cod_fast.integrations.ray_data.decode_folder`` with ``concurrency`` 1 and 2 (0.5 CPU per
actor so that the read task always finds a CPU), ``--repeat`` times each, alternating. Reported:
wall time of ``take_all()`` (actor start-up included: one warm-up run first) and images/s, and a
check that every image equals the single-process decode byte for byte.

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_ray_decode.py --images 8 --repeat 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common

import cod_fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    bench_common.add_kodak_stream_args(ap, repeat=2)
    args = ap.parse_args()
    import ray

    from cod_fast.integrations.ray_data import decode_folder

    torch.set_num_threads(1)
    codec = cod_fast.load_model()
    folder = Path(tempfile.mkdtemp(prefix="cod_fast_ray_"))
    expected = {}
    for f in sorted(Path(args.kodak).glob("*.png"))[: args.images]:
        out = folder / (f.stem + ".codf")
        out.write_bytes(codec.encode(f, quality=args.quality))
        expected[str(out)] = codec.decode(out.read_bytes()).permute(1, 2, 0).numpy().tobytes()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(bench_common.machine_line(), f"ray {ray.__version__}")

    def run(n: int) -> float:
        t0 = time.perf_counter()
        rows = decode_folder(folder, concurrency=n, batch_size=1, num_cpus=0.5, threads=1).take_all()
        dt = time.perf_counter() - t0
        assert len(rows) == len(expected) and all(
            r["error"] == "" and r["image"].tobytes() == expected[r["path"]] for r in rows), "mismatch"
        return dt

    run(1)  # warm-up (imports, first actor)
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeat):
        for n in (1, 2):
            times[n].append(run(n))
    base = statistics.median(times[1])
    for n, ts in times.items():
        med = statistics.median(ts)
        print(f"  {n} actor(s): median {med:6.2f} s ({len(expected) / med:4.2f} img/s; runs "
              f"{', '.join(f'{t:.2f}' for t in ts)})  scaling {base / med:4.2f}x  (byte-identical to one process)")
    print(f"load at end={bench_common.load_averages()}")
    ray.shutdown()


if __name__ == "__main__":
    main()
