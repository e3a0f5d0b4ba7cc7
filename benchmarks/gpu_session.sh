#!/bin/bash
# One GPU session (about ten minutes): run through the device tool from the repository root, with
# carry [".gpu"] (filled here beforehand by `python benchmarks/gpu_session.py --prepare`):
#   bash benchmarks/gpu_session.sh
# Checks, speed figures, then the paper runs continued from .gpu/checkpoints; what comes back is in $OUT.
set -u
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || echo "editable install failed; running from the source tree"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MLCOURSE_DATA="$PWD/.gpu/data"
export MLCOURSE_COMMIT="$(cat .gpu/commit 2>/dev/null || echo unknown)"
exec python3 benchmarks/gpu_session.py --out "${OUT:-gpu_out}" --state .gpu --budget "${BUDGET:-540}" "$@"
