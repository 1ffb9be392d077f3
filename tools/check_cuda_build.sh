#!/usr/bin/env bash
# Compiles the CUDA kernels (one arch) without needing a GPU, so a kernel that does not compile fails CI.
# Uses pip's `cuda-toolkit[nvcc,cccl]` matching torch's CUDA version as CUDA_HOME (a system nvcc may lack the cuBLAS
# and cuSPARSE headers that ATen's CUDA headers include; since CUDA 13 the CCCL headers, e.g. <nv/target> included
# by cuda_fp16.h, ship in their own wheel), builds into build/cuda_check/, and loads the result.
# Run inside the environment made by tools/setup_env.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

torch_cuda=$(python -c "import torch; print(torch.version.cuda or '')")
if [[ -z $torch_cuda ]]; then
  echo "[cuda-check] skipped: torch is a CPU-only build"; exit 0
fi
python -m pip install -q "cuda-toolkit[nvcc,cccl]==${torch_cuda}.*"
cuda_home=$(python - <<'PY'
import glob, os, site
for root in site.getsitepackages():
    for nvcc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", "nvcc"))):
        print(os.path.dirname(os.path.dirname(nvcc))); raise SystemExit
PY
)
if [[ -z $cuda_home ]]; then
  echo "[cuda-check] FAILED: cuda-toolkit[nvcc] installed no nvcc"; exit 1
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
