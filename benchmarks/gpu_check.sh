#!/usr/bin/env bash
# The GPU check of the throughput work, in at most ~8 minutes, required figures first. Each part
# rewrites its JSON when it ends, so a run cut off keeps what it measured.
#
#   1. benchmarks/throughput.py --size gpu: the reference loop, the eager fast mode (compile
#      off) and one CUDA-graphed fast run, side by side, for KD and Angular-KD on CRD (17,000
#      synthetic CIFAR-100-format images, K 16,384, batch 64, resnet32x4 -> resnet8x4), windows
#      of 20 steps between synchronisations; then every other method entry of the paper plan in
#      fast mode only (cuda_graph auto, compile off) for plan-cost
#      -> throughput-cuda.json (ratio = eager fast / reference, ratio_single = graphed /
#         reference)
#   2. benchmarks/precision_parity.py on digits (3 seeds, 8 epochs): the fp32 reference vs the
#      graphed fast mode (bf16) -> precision-parity-cuda.json
#   0./3. benchmarks/graph_check.py: every paper-plan method, the capturable step eager vs
#      captured (KD, DKD, CRD and Angular-KD on CRD first, the others after the parity)
#      -> graph-check-cuda.json
#   4. the CUDA tests of the capture and of the host-free step (pytest, where installed)
#
# Runs from a checkout without installing (PYTHONPATH=.) and without Snakemake (--skip-pipeline).
# A machine without jsonschema (plans are validated with it) takes its wheels from .whl/ when
# that folder exists (see README "Benchmarks" for the download line).
#
#   bash benchmarks/gpu_check.sh              # OUT=benchmarks/results by default
source "$(dirname "$0")/gpu_env.sh"

start=$SECONDS
left() { echo $(( ${1} - (SECONDS - start) )); }

timeout 60 python3 benchmarks/graph_check.py --methods kd,dkd,crd,angularkd_crd \
    --out "$OUT/graph-check-cuda.json"
echo "== graph check (KD, DKD, CRD, Angular-KD on CRD): rc $? after $((SECONDS - start)) s"

timeout 240 python3 benchmarks/throughput.py --size gpu --skip-pipeline --fast-compile off \
    --fast-only all --out "$OUT/throughput-cuda.json"
echo "== throughput: rc $? after $((SECONDS - start)) s"

t=$(left 350)
if [ "$t" -gt 20 ]; then
    timeout "$t" python3 benchmarks/precision_parity.py --epochs 8 --seeds 0,1,2 \
        --variants reference,graphed --out "$OUT/precision-parity-cuda.json"
    echo "== precision parity: rc $? after $((SECONDS - start)) s"
else
    echo "== precision parity: skipped (no time left)"
fi

t=$(left 420)
if [ "$t" -gt 20 ]; then
    timeout "$t" python3 benchmarks/graph_check.py --add --out "$OUT/graph-check-cuda.json"
    echo "== graph check (the other methods): rc $? after $((SECONDS - start)) s"
else
    echo "== graph check: skipped (no time left)"
fi

t=$(left 460)
if [ "$t" -gt 15 ] && python3 -c "import pytest" 2>/dev/null; then
    timeout "$t" python3 -m pytest -q -p no:cacheprovider -k "cuda" \
        tests/engine/test_capture.py tests/engine/test_host_free.py 2>&1 | tail -15
    echo "== CUDA tests: rc $? after $((SECONDS - start)) s"
fi
