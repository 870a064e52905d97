#!/usr/bin/env bash
# The GPU check (issue 14) on a machine with one CUDA GPU and no network: installs the wheels
# torch's machine lacks (mmengine, pydantic, ...) beside its own torch, installs this checkout,
# and runs tools/gpu_check.py (about 6 minutes on one H200; 8 at most).
#
#   tools/gpu_check.sh [WHEELS_DIR] [gpu_check.py options, e.g. --budget-s 300]
#
# Writes docs/benchmarks/gpu.json (benchmark rows), docs/benchmarks/gpu_checks.json (exactness,
# syncs, training runs, device decoding) and docs/benchmarks/gpu_check.log; when $OUT is set (the
# device tool's folder that comes back), copies them there too, also after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${1:-.whl}"
shift || true
if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "error: no wheels in $wheels (pass the folder of mmengine, pydantic, ... wheels)" >&2
    exit 2
fi
mkdir -p docs/benchmarks
if [ -n "${OUT:-}" ]; then
    trap 'cp docs/benchmarks/gpu*.json docs/benchmarks/gpu_check.log "$OUT"/ 2>/dev/null || true' EXIT
fi
site="${TMPDIR:-/tmp}/cncnn-gpu-site"
# --upgrade: a warm machine keeps the folder from the previous call, which pip would otherwise leave as it is
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
export PYTHONUNBUFFERED=1
python3 tools/gpu_check.py --out docs/benchmarks/gpu.json "$@" 2>&1 | tee docs/benchmarks/gpu_check.log
