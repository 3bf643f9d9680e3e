#!/usr/bin/env bash
# Issue 17's three CPU targets in one run, on this machine, each against its peer in the same run:
#   1. SODEC fixed-point entropy parameters (FULL_SODEC, 512x512): backend "cpp" vs the torch int64
#      reference (target >= 25x) and hyperprior compress vs the float g_a (target <= 1.5x);
#   2. the default model on a 6.3-megapixel image: encode and decode each <= 15 s and <= 1.5 GB
#      peak RSS (fresh processes, 2 threads, quality 3);
#   3. the rANS fast coder: decode >= 300 Msym/s at 2 threads (--rans-runs runs, each best of 5),
#      CompressAI's raw API in the same runs.
# Prints the CPU, the load average before each part (the machine's idle/loaded state) and each
# benchmark's own table. Run from the repository root with the package built in place:
#     bash bench/cpu_targets.sh [--rans-runs N] [--kodak KODAK_IMAGE]
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
RUNS=5
KODAK=/work/shared/data/kodak/kodim01.png
while [ $# -gt 0 ]; do
  case "$1" in
    --rans-runs) RUNS=$2; shift 2 ;;
    --kodak) KODAK=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
state() { echo "## $1 -- $(date -u +%H:%M:%S) UTC, load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"; }
echo "# cpu_targets: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
state "1. SODEC integer entropy parameters"
"$PY" bench/bench_sodec_int_params.py --repeats 7
state "2. default model, 6.3 MP image"
PYTHONPATH=. "$PY" bench/bench_large_image.py --kodak "$KODAK" --workdir "${TMPDIR:-/tmp}/cod_fast_cpu_targets"
for i in $(seq 1 "$RUNS"); do
  state "3. rANS fast coder, run $i of $RUNS"
  "$PY" bench/bench_rans.py --n 1048576 --repeats 5 --skip-slow
done
