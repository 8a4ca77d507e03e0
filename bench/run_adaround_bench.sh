#!/usr/bin/env bash
# Builds qopt and runs adaround_bench on the zoo ResNet18 with Fashion-MNIST calibration
# images, all cores: per-layer AdaRound vs plain forward+backward passes, then (FULL=1,
# the default) the whole model at default settings.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
bash "$root/scripts/build.sh" >/dev/null
full=()
[ "${FULL:-1}" = 1 ] && full=(--full)
"$build/bench/adaround_bench" "$root/zoo/resnet18.pt" /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
  --iterations "${ITERATIONS:-200}" "${full[@]}" "$@"
