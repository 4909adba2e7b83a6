#!/usr/bin/env bash
# The GPU check of the throughput work, in at most ~6 minutes, required figures first. Each part
# rewrites its JSON when it ends, so a run cut off keeps what it measured.
#
#   1. benchmarks/throughput.py --size gpu: the reference loop vs fast mode, side by side, for
#      KD and Angular-KD on CRD (17,000 synthetic CIFAR-100-format images, K 16,384, batch 64,
#      resnet32x4 -> resnet8x4), windows of 20 steps between synchronisations, the torch.profiler
#      figures (GPU-busy ms, kernels and blocking reads per step), then every other method entry
#      of the paper plan in fast mode only (compile off) for plan-cost
#      -> benchmarks/results/throughput-cuda.json
#   2. benchmarks/precision_parity.py on digits (3 seeds): fast mode vs fp32 reference
#      -> benchmarks/results/precision-parity-cuda.json
#
# Runs from a checkout without installing (PYTHONPATH=.) and without Snakemake (--skip-pipeline).
# A machine without jsonschema (plans are validated with it) takes its wheels from .whl/ when
# that folder exists (see README "Benchmarks" for the download line).
#
#   bash benchmarks/gpu_check.sh              # OUT=benchmarks/results by default
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

start=$SECONDS
timeout 300 python3 benchmarks/throughput.py --size gpu --skip-pipeline --profile \
    --fast-only all --out "$OUT/throughput-cuda.json"
echo "== throughput: rc $? after $((SECONDS - start)) s"

left=$((350 - (SECONDS - start)))
if [ "$left" -gt 30 ]; then
    timeout "$left" python3 benchmarks/precision_parity.py --epochs 8 --seeds 0,1,2 \
        --out "$OUT/precision-parity-cuda.json"
    echo "== precision parity: rc $? after $((SECONDS - start)) s"
else
    echo "== precision parity: skipped (no time left)"
fi
