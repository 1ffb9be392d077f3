#!/usr/bin/env bash
# The test command: sets up .venv (tools/setup_env.sh), compiles the CUDA kernels when nvcc is present (no GPU
# needed), runs the GPU check's dry run (SKIP_GPU_DRY_RUN=1 skips it), then the test suite (slow tests too with
# RUN_SLOW=1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tools/setup_env.sh
# shellcheck disable=SC1091
source .venv/bin/activate
# Test-only: the official DOTA devkit, packaged, for the split and mAP cross-checks. Its declared dependencies
# (opencv-contrib, a third provider of cv2) are not needed for what the tests call.
python -m pip install -q --no-deps dotadevkit==1.3.0 click
if command -v nvcc >/dev/null 2>&1 && [[ ${SKIP_CUDA_CHECK:-0} != 1 ]]; then
  bash tools/check_cuda_build.sh
fi
ruff check . && ruff format --check .
lint-imports  # the layering contracts of pyproject.toml [tool.importlinter]
# The GPU check's dry run (tools/gpu_check.sh): CPU build, scripts' --help, tiny CPU smoke of every benchmark.
gpu_dry_run=0
if [[ ${SKIP_GPU_DRY_RUN:-0} != 1 ]]; then
  bash tools/gpu_check.sh build/gpu_check_dry_run --dry-run || gpu_dry_run=$?
fi
markers=(-m "not slow")
[[ ${RUN_SLOW:-0} == 1 ]] && markers=()
status=0
python -m pytest "${markers[@]}" "$@" || status=$?
if [[ $status == 5 ]]; then
  echo "pytest collected no tests: that is a failure"; exit 1
fi
if [[ $gpu_dry_run != 0 ]]; then
  echo "tools/gpu_check.sh --dry-run failed: see build/gpu_check_dry_run/gpu_check.md"; exit 1
fi
exit $status
