#!/usr/bin/env bash
# Compiles the CUDA kernels (one arch) without needing a GPU, so a kernel that does not compile fails CI.
# Uses pip's CUDA toolkit matching torch's CUDA version as CUDA_HOME (tools/pip_cuda_home.sh; a system nvcc may lack
# the cuBLAS and cuSPARSE headers that ATen's CUDA headers include), builds into build/cuda_check/, and loads the
# result.
# Run inside the environment made by tools/setup_env.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z $(python -c "import torch; print(torch.version.cuda or '')") ]]; then
  echo "[cuda-check] skipped: torch is a CPU-only build"; exit 0
fi
if ! cuda_home=$(bash tools/pip_cuda_home.sh); then
  echo "[cuda-check] FAILED: no CUDA toolkit from pip"; exit 1
fi
echo "[cuda-check] compiling CUDA kernels for sm_90 with CUDA_HOME=$cuda_home"
start=$SECONDS
mkdir -p build/cuda_check
log=build/cuda_check/build.log
if ! CUDA_HOME=$cuda_home FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${CHECK_CUDA_ARCH:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  python setup.py -q build_ext --build-temp build/cuda_check/tmp --build-lib build/cuda_check/lib >"$log" 2>&1; then
  grep -E "error|Error" "$log" | head -40
  echo "[cuda-check] FAILED: the CUDA kernels do not compile (full log: $log)"; exit 1
fi
so=$(ls build/cuda_check/lib/rotated_ddetr/_C*.so)
# Load the CUDA build on its own (not through the package, which holds the CPU build) and list its CUDA kernels.
python - "$so" <<'PY'
import sys, torch
torch.ops.load_library(sys.argv[1])
ops = ["box_iou_rotated", "nms_rotated", "ms_deform_attn", "ms_deform_attn_backward"]
missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(f"rotated_ddetr::{op}", "CUDA")]
if missing:
    sys.exit(f"[cuda-check] FAILED: no CUDA kernel registered for {missing}")
print(f"[cuda-check] ok: CUDA kernels registered for {', '.join(ops)}")
PY
echo "[cuda-check] done in $((SECONDS - start)) s"
