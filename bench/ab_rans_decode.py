"""rANS fast-decode throughput of two source trees, alternated round by round (A/B on a noisy host).

Each tree gets its own long-lived worker process (the tree on PYTHONPATH, its native build in
place); the driver asks them in turn, A then B, then B then A, for one timing each (best of 3
decodes of the same 2^20 Gaussian symbols as bench/bench_rans.py) and reports the medians and the
per-round ratio B / A. On a shared VM whose speed drifts by tens of percent within a minute, the
per-round ratio is the figure to trust, not either median alone.

    python bench/ab_rans_decode.py TREE_A TREE_B [--rounds 40] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

_WORKER = r"""
import sys, time
import torch
sys.path.insert(0, sys.argv[1])
from bench_common import gaussian_case
from cod_fast.entropy import GaussianConditionalTables
n = 1 << 20
sym, scales = gaussian_case(n, 0)
tables = GaussianConditionalTables()
idx = tables.build_indexes(scales)
data = tables.encode(sym, idx, threads=1)
assert torch.equal(tables.decode(data, idx, threads=1), sym)
import cod_fast
print("ready", cod_fast.__file__, flush=True)
for line in sys.stdin:
    threads = int(line)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        tables.decode(data, idx, threads=threads)
        best = min(best, time.perf_counter() - t0)
    print(n / best / 1e6, flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree_a", type=Path)
    ap.add_argument("tree_b", type=Path)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    bench_dir = str(Path(__file__).resolve().parent)
    workers = []
    for tree in (args.tree_a, args.tree_b):
        env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
        p = subprocess.Popen([sys.executable, "-c", _WORKER, bench_dir], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env, cwd="/")
        assert p.stdin is not None and p.stdout is not None
        ready = p.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise SystemExit(f"worker for {tree} did not start")
        print(f"{'AB'[len(workers)]}: {tree} imports {ready[1]}")
        workers.append(p)
    rates: list[list[float]] = [[], []]
    for r in range(args.rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            w = workers[k]
            assert w.stdin is not None and w.stdout is not None
            w.stdin.write(f"{args.threads}\n")
            w.stdin.flush()
            rates[k].append(float(w.stdout.readline()))
    ratios = [b / a for a, b in zip(*rates)]
    print(f"threads {args.threads}, {args.rounds} rounds: A median {statistics.median(rates[0]):.1f} Msym/s, "
          f"B median {statistics.median(rates[1]):.1f} Msym/s; B / A per round: median "
          f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    for w in workers:
        assert w.stdin is not None
        w.stdin.close()
        w.wait()


if __name__ == "__main__":
    main()
