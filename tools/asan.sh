#!/usr/bin/env bash
# Builds the native self-tests and fuzz drivers of all CPU native code with AddressSanitizer + UBSan
# and runs them for a bounded time (CI budget: < 2 minutes):
#   rans_selftest, parallel_selftest (the shared worker pool: job exceptions, thread-creation
#   failure), then FUZZ_SECONDS split between rans_fuzz (half: mutated streams), rcc_fuzz
#   (a quarter: hostile chunk layouts, indices, thread counts) and sodec_fuzz (a quarter: every
#   conv kernel and the scale index against a naive oracle, extreme values).
#   tools/asan.sh [FUZZ_SECONDS=60]          standalone drivers (g++ or any compiler)
#   LIBFUZZER=1 tools/asan.sh [FUZZ_SECONDS]  libFuzzer build of the rANS target with clang++
# Build trees: build/asan (or build/asan-libfuzzer); both are ignored by git.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_FUZZ=${1:-60}
# The interpreter that has pybind11: $PYTHON, else the dev venv, else the active python.
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=$(command -v python3 || command -v python); fi
PYBIND11_DIR=$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')
JOBS=${COD_FAST_JOBS:-2}
if [[ "${LIBFUZZER:-0}" == "1" ]]; then
  BUILD=build/asan-libfuzzer
  EXTRA=(-DCMAKE_CXX_COMPILER="${CXX:-clang++}" -DCOD_FAST_LIBFUZZER=ON)
else
  BUILD=build/asan
  EXTRA=()
fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Asan -DCOD_FAST_TESTS=ON -DCOD_FAST_CUDA=OFF \
  -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$PYBIND11_DIR" "${EXTRA[@]}" > "$BUILD.cmake.log"
cmake --build "$BUILD" -j "$JOBS" --target rans_selftest rans_fuzz parallel_selftest rcc_fuzz sodec_fuzz
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$BUILD/csrc/rans/rans_selftest"
"$BUILD/csrc/common/parallel_selftest"
RANS_SECONDS=$(( (SECONDS_FUZZ + 1) / 2 ))
OTHER_SECONDS=$(( (SECONDS_FUZZ - RANS_SECONDS + 1) / 2 ))
if [[ "${LIBFUZZER:-0}" == "1" ]]; then
  mkdir -p "$BUILD/corpus"
  "$BUILD/csrc/rans/rans_fuzz" "$BUILD/corpus" -max_total_time="$RANS_SECONDS" -max_len=4096 \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
else
  "$BUILD/csrc/rans/rans_fuzz" "$RANS_SECONDS" "${FUZZ_SEED:-1}"
fi
"$BUILD/csrc/rcc/rcc_fuzz" "$OTHER_SECONDS" "${FUZZ_SEED:-1}"
"$BUILD/csrc/sodec/sodec_fuzz" "$OTHER_SECONDS" "${FUZZ_SEED:-1}"
