#!/usr/bin/env bash
# Builds the rANS native self-test and fuzz driver with AddressSanitizer + UBSan and runs them for
# a bounded time (CI budget: < 2 minutes).
#   tools/asan.sh [FUZZ_SECONDS=60]          standalone mutation fuzzer (g++ or any compiler)
#   LIBFUZZER=1 tools/asan.sh [FUZZ_SECONDS]  libFuzzer build with clang++ instead
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
cmake --build "$BUILD" -j "$JOBS" --target rans_selftest rans_fuzz
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$BUILD/csrc/rans/rans_selftest"
if [[ "${LIBFUZZER:-0}" == "1" ]]; then
  mkdir -p "$BUILD/corpus"
  "$BUILD/csrc/rans/rans_fuzz" "$BUILD/corpus" -max_total_time="$SECONDS_FUZZ" -max_len=4096 \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
else
  "$BUILD/csrc/rans/rans_fuzz" "$SECONDS_FUZZ" "${FUZZ_SEED:-1}"
fi
