#!/usr/bin/env bash
# The first run on a machine with an NVIDIA GPU (H100/H200 class; a bare Python with pip that reaches PyPI):
#   bash tools/gpu_check.sh OUT_DIR [--dry-run]
# 1. .venv (tools/setup_env.sh, torch from PyPI when missing), pip's CUDA toolkit (tools/pip_cuda_home.sh), the
#    kernels built in place for the GPU present (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability());
# 2. pytest -m cuda; 3. op benchmarks: MSDA kernel vs reference in fp32/bf16/fp16, rotated IoU, NMS (to 50k boxes);
# 4. 50 training steps of dota_v1_r50 at 1024 px in bf16 on synthetic tiles (s/step, images/s, peak GPU
#    memory); 5. tiled inference of that model (tiles/s).
# Writes OUT_DIR/gpu_check.md: a summary table (status, seconds, budget of every step), then each step's output.
# Every step runs under `timeout` with its budget; a failing step is recorded and the next one still runs; the exit
# status is 1 when any step failed. The budgets from the build on sum to 7 minutes; the installs before it take
# about a minute more when torch is present (budgets: 10 minutes for a first torch download, 2 for the toolkit).
# --dry-run: what needs no GPU, quickly (CI): arguments, the venv/install check, the CPU build, every script's
# --help, a tiny CPU smoke of each benchmark, and the results file with "skipped: no GPU" rows for the GPU steps.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,14p' "$0"; }
out="" dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [[ -n $out ]] && { echo "gpu_check: one OUT_DIR only, got $out and $1" >&2; exit 2; }; out=$1; shift ;;
  esac
done
[[ -z $out ]] && { echo "gpu_check: OUT_DIR is required" >&2; usage >&2; exit 2; }
mkdir -p "$out/logs" || exit 2
out=$(cd "$out" && pwd)
results=$out/gpu_check.md
rm -f "$out"/logs/*.log "$out/logs/cuda_home.txt"
summary=() names=() logs=() failed=0 start_all=$SECONDS

# step NAME BUDGET_S COMMAND...: runs the command under timeout, logs its output, records its status.
step() {
  local name=$1 budget=$2; shift 2
  local log start=$SECONDS rc=0 status=ok
  log=$(printf '%s/logs/%02d_%s.log' "$out" "${#summary[@]}" "${name//[^A-Za-z0-9.-]/_}")
  echo "[gpu_check $((SECONDS - start_all)) s] $name (budget ${budget} s)"
  timeout --kill-after=10 "$budget" "$@" >"$log" 2>&1 || rc=$?
  if [[ $rc == 124 || $rc == 137 ]]; then status="TIMEOUT after ${budget} s"; failed=1
  elif [[ $rc != 0 ]]; then status="FAILED (exit $rc)"; failed=1; fi
  summary+=("| $name | $status | $((SECONDS - start)) | $budget |") names+=("$name") logs+=("$log")
  [[ $status == ok ]] || tail -n 20 "$log"
}
# gpu NAME BUDGET_S COMMAND...: a step that needs the GPU; recorded as skipped in a dry run.
gpu() {
  if [[ $dry_run == 1 ]]; then summary+=("| $1 | skipped: no GPU (--dry-run) | 0 | $2 |"); else step "$@"; fi
}

if [[ $dry_run == 0 ]]; then
  step "setup .venv" 600 env ROTATED_DDETR_NO_EXT=1 bash tools/setup_env.sh  # deps only; the kernels come below
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "import rotated_ddetr, torch" 2>/dev/null; then
  summary+=("| setup .venv | ok: present, imports | 0 | 0 |")
else
  step "setup .venv" 900 bash tools/setup_env.sh
fi
# shellcheck disable=SC1091
source .venv/bin/activate || { echo "gpu_check: no .venv" >&2; exit 1; }
jobs=$(nproc)

gpu "GPU present" 30 python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'
print(torch.cuda.get_device_name(), torch.cuda.get_device_capability(), torch.__version__, torch.version.cuda)"
gpu "CUDA toolkit (pip)" 120 bash -c "bash tools/pip_cuda_home.sh > '$out/logs/cuda_home.txt'"
cuda_home=$(tail -n 1 "$out/logs/cuda_home.txt" 2>/dev/null)
arch=$(python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo none)
[[ $dry_run == 1 ]] && step "CPU build" 300 env MAX_JOBS="$jobs" python setup.py -q build_ext --inplace
gpu "build kernels (sm $arch)" 90 env CUDA_HOME="$cuda_home" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" \
  MAX_JOBS="$jobs" python setup.py build_ext --inplace
step "extension info" 15 python -m rotated_ddetr.info
gpu "pytest -m cuda" 105 python -m pytest -m cuda -q -rs tests
gpu "bench MSDA (fp32/bf16/fp16)" 40 python benchmarks/bench_ops_msda.py --devices cuda --budget-s 1
gpu "bench IoU and NMS" 35 python benchmarks/bench_ops_iou_nms.py --devices cuda --repeats 3 --iou-boxes 1000 \
  --dense-iou-boxes 500 --nms-large-objects 2500
gpu "train r50 1024 px bf16, 50 steps" 100 python benchmarks/bench_train_step.py dota_v1_r50 \
  --device cuda --amp bf16 --steps 50 --warmup 3 --size 1024 --json "$out/train_r50.json"
gpu "tiled inference r50 bf16" 35 python benchmarks/bench_tiled_inference.py --config dota_v1_r50 \
  --device cuda --amp bf16 --skip-memory --repeats 2 --no-append
if [[ $dry_run == 1 ]]; then
  step "scripts --help" 60 bash -c 'pids=(); for s in train_step ops_msda ops_iou_nms tiled_inference; do
    python benchmarks/bench_$s.py --help & pids+=($!); done; for p in "${pids[@]}"; do wait $p || exit 1; done'
  step "smoke bench MSDA (CPU, small)" 60 python benchmarks/bench_ops_msda.py --devices cpu --small --budget-s 0.2
  step "smoke bench IoU and NMS (CPU)" 30 python benchmarks/bench_ops_iou_nms.py --devices cpu --repeats 1 \
    --iou-boxes 100 --dense-iou-boxes 50 --nms-objects 20 --nms-per-object 5 --nms-large-objects 40
  step "smoke train r50 (CPU, 192 px, 1 step)" 60 python benchmarks/bench_train_step.py dota_v1_r50 \
    --device cpu --steps 1 --warmup 0 --size 192 --json "$out/train_r50.json"
  step "smoke tiled inference (CPU)" 60 python benchmarks/bench_tiled_inference.py --scene-size 1024 \
    --tiles-scene-size 1024 --repeats 1 --no-append
fi

{
  echo "# rotated_ddetr GPU check$([[ $dry_run == 1 ]] && echo " (dry run: no GPU steps)")"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- machine: $(python -c 'import sys; sys.path.insert(0, "benchmarks"); import report
print(report.machine_description())' 2>&1 | tail -n 1)"
  echo "- total: $((SECONDS - start_all)) s; status: $([[ $failed == 0 ]] && echo ok || echo FAILED)"
  echo
  echo "| step | status | seconds | budget s |"
  echo "|---|---|---|---|"
  printf '%s\n' "${summary[@]}"
  for i in "${!logs[@]}"; do
    printf '\n## %s\n\n```\n' "${names[$i]}"
    tail -n 80 "${logs[$i]}"
    printf '```\n'
  done
} >"$results"
echo "[gpu_check $((SECONDS - start_all)) s] results: $results ($([[ $failed == 0 ]] && echo ok || echo FAILED))"
exit $failed
