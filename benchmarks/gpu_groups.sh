#!/usr/bin/env bash
# The GPU check of run groups (runs_per_gpu, kdsrc.engine.group), in at most ~6 minutes: the
# reference loop, the eager fast mode, one graphed run and groups of 1, 2, 4 and 8 graphed runs
# in one process (each member on its own CUDA stream), for KD and Angular-KD on CRD (the sizes
# of benchmarks/throughput.py --size gpu), then every other paper-plan method in fast mode for
# plan-cost -> throughput-cuda.json with `groups`, `runs_per_gpu` (the best size) and
# `ratio_grouped` (its aggregate samples/s over the reference loop) per method.
#
#   bash benchmarks/gpu_groups.sh              # OUT=benchmarks/results by default
#   kdsrc plan-cost paper --measured --mode fast    # then reads the best group's speed
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
if ! python3 -c "import jsonschema" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/kdsrc-site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/kdsrc-site"
fi
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
timeout 340 python3 benchmarks/throughput.py --size gpu --skip-pipeline --fast-compile off \
    --methods kd,angularkd_crd --groups 1,2,4,8 --fast-only all \
    --out "$OUT/throughput-cuda.json"
echo "== throughput with groups: rc $?"
