#!/usr/bin/env bash
# Installs pip's CUDA toolkit matching torch's CUDA version (`cuda-toolkit[nvcc,cccl]`: nvcc, the runtime, cuBLAS
# and cuSPARSE headers, and, since CUDA 13 in their own wheel, the CCCL headers such as <nv/target>) into the active
# environment and prints its root, for CUDA_HOME. Prints nothing and exits 0 when torch is a CPU-only build.
# Used by tools/check_cuda_build.sh and tools/gpu_check.sh; run inside the environment of tools/setup_env.sh.
set -euo pipefail

torch_cuda=$(python -c "import torch; print(torch.version.cuda or '')")
[[ -z $torch_cuda ]] && exit 0
python -m pip install -q "cuda-toolkit[nvcc,cccl]==${torch_cuda}.*" >&2
cuda_home=$(python - <<'PY'
import glob, os, site
for root in site.getsitepackages():
    for nvcc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", "nvcc"))):
        print(os.path.dirname(os.path.dirname(nvcc))); raise SystemExit
PY
)
if [[ -z $cuda_home ]]; then
  echo "pip_cuda_home: cuda-toolkit[nvcc,cccl]==${torch_cuda}.* installed no nvcc" >&2; exit 1
fi
echo "$cuda_home"
