#!/usr/bin/env bash
# Runs bench/onnx/run_onnx_bench.py: qopt's ONNX exports of the zoo models in ONNX Runtime,
# int8 (QDQ) against FP32 speed and int8 against qopt's simulation. Builds qopt only when
# the build has no qopt-worker, and installs ONNX Runtime only when it is missing, so a
# current build is used as it is. Writes bench/results/onnx.json and onnx.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
[ -x "$build/worker/qopt-worker" ] || bash "$root/scripts/build.sh" >/dev/null
[ -d "$root/tools/onnxruntime/node_modules/onnxruntime-node" ] || bash "$root/scripts/install_deps.sh" >/dev/null
exec /usr/bin/python3 "$root/bench/onnx/run_onnx_bench.py" --worker "$build/worker/qopt-worker" "$@"
