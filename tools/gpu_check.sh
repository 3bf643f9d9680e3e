#!/usr/bin/env bash
# One command for a GPU machine: build in place, run the whole test suite on the GPU, probe CPU
# bit-reproducibility, run the GPU benchmarks, and write a JSON and a markdown summary.
#
#   tools/gpu_check.sh OUTDIR
#
# Needs torch, Triton, CMake, pybind11 and pytest(-xdist) installed (the H200 image has them);
# installs nothing from the network. Prints as it goes; budgeted to finish in about 7 minutes on an
# H200 (tune with PYTEST_S, BENCH_S, JOBS).
set -uo pipefail
OUT=${1:-$PWD/gpu_out}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-16} COD_FAST_JOBS=${JOBS:-16}
start=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - start ))s] $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"

stamp "build (pip install --no-build-isolation --no-deps -e .)"
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/install.log" 2>&1 || { tail -40 "$OUT/install.log"; exit 1; }
python3 -c "import cod_fast._ext as e; print(e.availability())" | tee -a "$OUT/gpu.txt"

stamp "test suite on the GPU (pytest -n 8)"
timeout "${PYTEST_S:-260}" python3 -m pytest -q -p no:cacheprovider -n 8 -rfEs \
  --junitxml="$OUT/junit.xml" > "$OUT/pytest.log" 2>&1
echo "pytest rc=$?"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest.log" | tail -40
grep -E "^SKIPPED" "$OUT/pytest.log" | head -20

stamp "CPU bit-reproducibility probe"
for envs in "" "MKL_CBWR=AUTO,STRICT" "ATEN_CPU_CAPABILITY=avx2" "DIAG_THREADS=8"; do
  env $envs timeout 60 python3 tools/gpu_diag_bitwise.py 2>&1 | tail -1
done | tee "$OUT/bitwise_probe.jsonl"

stamp "GPU decode benchmarks"
timeout "${BENCH_S:-200}" python3 bench/bench_gpu_decode.py "$OUT" --iters "${ITERS:-50}" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; cut -c1-600 "$OUT/bench.log" | grep -v '^ '

stamp "summary"
python3 tools/gpu_summary.py "$OUT" || true
stamp "done"
