#!/usr/bin/env bash
# Rebuild the native extensions in place for development (serialised by a lock so that several
# shells can call it). Usage: tools/dev_build.sh [extra setup.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec flock /tmp/cod_fast_build.lock "$PY" setup.py -q build_ext --inplace "$@"
