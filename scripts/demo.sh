#!/usr/bin/env bash
# The main job on the built-in default: install, build, make the bundled model and its
# calibration data, quantize it to W8A8 (per-channel weights, SQNR calibration, BN
# folded), and print the result.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
work=${QOPT_DEMO_DIR:-$root/out/demo}
bash "$root/scripts/build.sh"
mkdir -p "$work"
if [ ! -s "$work/models/resnet18.pt" ]; then
  echo "== making the bundled model (torchvision ResNet18, traced) and calibration data"
  /usr/bin/python3 "$root/tests/fixtures/make_fixtures.py" "$work/models"
fi
echo "== qopt-worker run: W8A8 on resnet18"
"$build/worker/qopt-worker" run \
  --model "$work/models/resnet18.pt" \
  --recipe "$root/examples/recipes/w8a8.json" \
  --data "$work/models/calib.npy" \
  --out "$work/w8a8"
echo "== report ($work/w8a8/report.json)"
cat "$work/w8a8/report.json"
