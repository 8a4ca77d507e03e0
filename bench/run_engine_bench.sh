#!/usr/bin/env bash
# Builds qopt, makes the traced torchvision ResNet18 fixture and runs engine_bench on it
# (batch 16, 3x224x224, all cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
bash "$root/scripts/build.sh" >/dev/null
models=$build/bench/models
[ -s "$models/resnet18.pt" ] || /usr/bin/python3 "$root/tests/fixtures/make_fixtures.py" "$models"
"$build/bench/engine_bench" "$models/resnet18.pt" --batch 16 --size 224 --runs "${RUNS:-7}" "$@"
