#!/usr/bin/env bash
# The README's first command: set up .venv in this checkout, then the main job end to end on the embedded default
# data (a procedural synthetic DOTA-format aerial set), on a CPU, offline:
#   1. generate a synthetic training set and split it into tiles exactly as the DOTA devkit does;
#   2. train the shipped synthetic_tiny config for 4 minutes (--minutes N: longer runs score higher);
#   3. render a large synthetic scene as a georeferenced GeoTIFF (--scene-size, default 4000 px) with its labels;
#   4. detect objects in it tile by tile (rotated-ddetr infer): DOTA Task1 files, GeoJSON, a picture;
#   5. score the detections against the scene's labels (rotated-ddetr evaluate).
# Every step is the installed command `rotated-ddetr` (tools/*.py are wrappers of the same code).
# Usage: bash tools/quickstart.sh [--minutes N] [--scene-size PX] [--out DIR]     (outputs: work_dirs/quickstart)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

minutes=4
scene_size=4000
out=work_dirs/quickstart
while [[ $# -gt 0 ]]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --scene-size) scene_size=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
start=$SECONDS
step() { echo; echo "[quickstart $((SECONDS - start)) s] $*"; }

step "setting up .venv"
bash tools/setup_env.sh
# shellcheck disable=SC1091
source .venv/bin/activate

step "synthetic training set and its 512 px tiles"
rotated-ddetr synth --out "$out/synthetic" --images 60 --size 768 --seed 0 --workers 2 --quiet
rotated-ddetr split --src "$out/synthetic" --dst "$out/tiles" --tile-size 512 --gap 128 --quiet

step "training synthetic_tiny for $minutes minutes"
rotated-ddetr train synthetic_tiny "data.train_root=$out/tiles" "output.dir=$out/run" \
  "train.max_minutes=$minutes" --no-progress

step "a ${scene_size} x ${scene_size} px synthetic scene as a GeoTIFF, with its labels"
rotated-ddetr synth --out "$out/scene" --scene-size "$scene_size" --format tif --seed 1

step "tiled inference over the scene"
rm -rf "$out/detections"
rotated-ddetr infer "$out/run/checkpoint_last.pth" "$out/scene/images" --out "$out/detections" \
  --tile-size 512 --gap 128 --score-threshold 0.05

step "evaluation against the scene's labels (DOTA Task1, VOC07 mAP at IoU 0.5)"
rotated-ddetr evaluate --dets "$out/detections" --labels "$out/scene/labelTxt"

step "done"
echo "  picture:       $out/detections/pictures/scene_00000.png"
echo "  GeoJSON:       $out/detections/geojson/scene_00000.geojson (RFC 7946: WGS84 longitude/latitude)"
echo "  Task1 files:   $out/detections/Task1_{class}.txt (per scene: $out/detections/scenes/)"
echo "  checkpoint:    $out/run/checkpoint_last.pth (train longer: bash tools/quickstart.sh --minutes 30)"
echo "  in Python:     rotated_ddetr.load(\"$out/run/checkpoint_last.pth\").predict(\"image.png\")[0].plot()"
