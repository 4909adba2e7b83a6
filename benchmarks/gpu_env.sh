# Sourced by the GPU scripts (gpu_check.sh, gpu_groups.sh): run from the checkout without
# installing (PYTHONPATH=.), OUT for the JSON files, jsonschema from .whl/ where the machine
# lacks it (plans are validated with it; see README "Benchmarks"), and the torch/GPU in use.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
if ! python3 -c "import jsonschema" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/kdsrc-site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/kdsrc-site"
fi
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
