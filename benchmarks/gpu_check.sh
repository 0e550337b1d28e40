#!/usr/bin/env bash
# The GPU proof on a fresh CUDA machine, from anywhere in the repository:
#
#     bash benchmarks/gpu_check.sh OUT [--size full|tiny]
#
# Assumes Linux x86_64, an NVIDIA driver recent enough for the CUDA build of torch 2.13.0 on PyPI, python3
# (3.10 or newer, with venv), and pip access to PyPI. pip's own settings apply (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL): point them at the PyTorch CUDA index of another CUDA version to take torch and
# fbgemm-gpu from there. Nothing else is downloaded: benchmarks/gpu_check.py generates its data.
#
# Steps, each timed into OUT/install.log: a venv ($VENV, default /tmp/ctrbench_cuda_venv), the CUDA stack pinned in
# requirements-cuda.txt, torchrec with --no-deps at the pin of requirements-torchrec.txt, `pip install -e .`,
# a check that torch sees the GPU and fbgemm's CUDA kernels load; then
# `python -m benchmarks.gpu_check --out OUT --work $WORK --device cuda` (WORK, default /tmp/ctrbench_gpu_check,
# holds a few GB of data and checkpoints, kept out of OUT). Its exit status is this script's: 1 when a part
# failed (OUT/gpu_check.json says which and why).
set -euo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT [--size full|tiny]}
shift
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/ctrbench_cuda_venv}
WORK=${WORK:-/tmp/ctrbench_gpu_check}
mkdir -p "$OUT"
step() {  # step NAME COMMAND...: run it, append its wall time to OUT/install.log
    local started=$SECONDS
    "${@:2}"
    echo "$1: $((SECONDS - started)) s" | tee -a "$OUT/install.log"
}
: > "$OUT/install.log"
step venv python3 -m venv "$VENV"
step cuda-stack "$VENV/bin/pip" install --quiet -r requirements-cuda.txt
step torchrec "$VENV/bin/pip" install --quiet --no-deps "$(grep '^torchrec==' requirements-torchrec.txt)"
step ctrbench "$VENV/bin/pip" install --quiet -e .
step preflight "$VENV/bin/python" -c '
import torch, fbgemm_gpu, torchrec
assert torch.cuda.is_available(), f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: driver too old?"
torch.ops.fbgemm.asynchronous_complete_cumsum(torch.tensor([1, 2], device="cuda"))  # a CUDA kernel of fbgemm-gpu
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")'
exec "$VENV/bin/python" -m benchmarks.gpu_check --out "$OUT" --work "$WORK" --device cuda "$@"
