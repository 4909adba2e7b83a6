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
source "$(dirname "$0")/gpu_env.sh"
timeout 340 python3 benchmarks/throughput.py --size gpu --skip-pipeline --fast-compile off \
    --methods kd,angularkd_crd --groups 1,2,4,8 --fast-only all \
    --out "$OUT/throughput-cuda.json"
echo "== throughput with groups: rc $?"
