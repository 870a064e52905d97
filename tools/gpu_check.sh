#!/usr/bin/env bash
# The GPU check (issue 14) on a machine with one CUDA GPU and no network: installs the wheels
# torch's machine lacks (mmengine, pydantic, ...) beside its own torch, installs this checkout,
# and runs tools/gpu_check.py (about 6 minutes on one H200; 8 at most).
#
#   tools/gpu_check.sh [WHEELS_DIR]     # default: .whl/ in the repository root
#
# Writes docs/benchmarks/gpu.json (benchmark rows), docs/benchmarks/gpu_checks.json (exactness,
# syncs, training runs) and docs/benchmarks/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${1:-.whl}"
if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "error: no wheels in $wheels (pass the folder of mmengine, pydantic, ... wheels)" >&2
    exit 2
fi
site="${TMPDIR:-/tmp}/cncnn-gpu-site"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
mkdir -p docs/benchmarks
export PYTHONUNBUFFERED=1
python3 tools/gpu_check.py --out docs/benchmarks/gpu.json 2>&1 | tee docs/benchmarks/gpu_check.log
