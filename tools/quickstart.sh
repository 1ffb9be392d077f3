#!/usr/bin/env bash
# The README's first command: set up .venv in this checkout, then run the demo on the embedded default dataset
# (a synthetic DOTA-format aerial set): generate it, split it into tiles exactly as the DOTA devkit does, and report
# the compiled ops. Outputs go to work_dirs/quickstart/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tools/setup_env.sh
# shellcheck disable=SC1091
source .venv/bin/activate
out=work_dirs/quickstart
python tools/make_synthetic.py --out "$out/synthetic" --images 40 --size 768 --seed 0
python tools/split_dota.py --src "$out/synthetic" --dst "$out/tiles" --tile-size 512 --gap 128 --rates 1.0
echo
echo "Synthetic dataset: $out/synthetic (images/, labelTxt/); 512-px tiles: $out/tiles"
