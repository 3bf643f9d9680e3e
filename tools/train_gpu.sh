#!/usr/bin/env bash
# Train the default model on a lent GPU for a fixed time; bring back float16 weights.
#
#   bash tools/train_gpu.sh BUNDLE SECONDS OUTDIR [extra python -m cod_fast.train arguments]
#
# BUNDLE: a file from `python -m cod_fast.train.bundle` copied into the checkout (an ignored path
# carried with it; the whole working tree that travels is limited to 64 MiB and the repository
# holds about 20 MB, so build it with --max-mb 42). SECONDS: training time (--time-limit).
# OUTDIR: results, at most 8 files of <= 16 MiB each, as the device tool brings back:
#   gpu.txt, bench.txt (step times fp32 vs bf16 on the GPU), train.log,
#   ema/default.safetensors + ema/default.json (the moving average, float16, 13.9 MB: the
#   candidate; continue on the CPU with --init-from OUTDIR/ema) and raw/ (the last step's weights).
# Environment: INIT (--init-from, default 'default': the shipped weights; or a carried exported
# folder), STEPS (length of the cosine schedule, default 20000), BATCH (16), CROP (256), LR (3e-4),
# SEED (0), EMA (0.999), BENCH_STEPS (20), DEVICE (cuda; DEVICE=cpu smoke-tests this script
# without a GPU). The optimizer state (last.pt, 83 MB) stays on the machine.
set -uo pipefail
BUNDLE=$1; SECS=$2; OUTDIR=$3; shift 3
mkdir -p "$OUTDIR"; OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
RUN=/tmp/cod_fast_gpu_run
start=$(date +%s)
stamp() { echo "[train_gpu +$(( $(date +%s) - start ))s] $*"; }

DEVICE=${DEVICE:-cuda}
stamp "machine"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
  $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUTDIR/gpu.txt" || exit 1
  stamp "CUDA training tests"
  timeout 120 $PY -m pytest -q -p no:cacheprovider -m cuda tests/train 2>&1 | tail -3
fi
git rev-parse HEAD 2>/dev/null | tee -a "$OUTDIR/gpu.txt"

stamp "step time fp32 vs bf16"
timeout 120 $PY bench/bench_train_step.py --device "$DEVICE" --data "$BUNDLE" --batch "${BATCH:-16}" \
  --crop "${CROP:-256}" --steps "${BENCH_STEPS:-20}" 2>&1 | tee "$OUTDIR/bench.txt"

stamp "train for ${SECS}s"
rm -rf "$RUN"
$PY -m cod_fast.train --data "$BUNDLE" --out "$RUN" --init-from "${INIT:-default}" --device "$DEVICE" --bf16 \
  --batch "${BATCH:-16}" --crop "${CROP:-256}" --entropy-steps 0 --steps "${STEPS:-20000}" --lr "${LR:-3e-4}" \
  --warmup 200 --ema "${EMA:-0.999}" --seed "${SEED:-0}" --time-limit "$SECS" --ckpt-every 120 \
  --log-every 100 --eval-every 1000 "$@"
echo "train rc=$?"
cp "$RUN/train.log" "$OUTDIR/train.log"
grep -E "^eval" "$RUN/train.log" | tail -4

stamp "export"
$PY -m cod_fast.train.export --ckpt "$RUN/last.pt" --out "$OUTDIR/ema" --ema
$PY -m cod_fast.train.export --ckpt "$RUN/last.pt" --out "$OUTDIR/raw"
ls -la "$OUTDIR" "$OUTDIR/ema" "$OUTDIR/raw"
stamp "done"
