#!/usr/bin/env bash
# Creates .venv in the checkout and installs rotated_ddetr into it with its compiled ops (CPU; CUDA when usable).
# Reuses a torch/torchvision already installed on the machine; otherwise `pip install torchvision` brings torch
# (a CUDA build, ~5 GB, that also runs on CPU). Usage: bash tools/setup_env.sh   (then: source .venv/bin/activate)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv"
  "$python" -m venv --system-site-packages .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
if ! python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch + torchvision (several GB, a few minutes)"
  python -m pip install torchvision
fi
python -m pip install -q "setuptools>=64" wheel ninja
echo "[setup] building rotated_ddetr and its compiled ops"
MAX_JOBS=${MAX_JOBS:-$(nproc)} python -m pip install -q --no-build-isolation -e ".[dev]"
python -m rotated_ddetr.info
