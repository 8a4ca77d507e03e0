#!/usr/bin/env bash
# The GPU check: builds qopt-worker and the engine tests against a CUDA LibTorch (C++11
# ABI: PyTorch's manylinux_2_28 wheels, 2.6 and later, or its cxx11-abi LibTorch
# archives), runs the engine tests, then one QAT epoch of the zoo ResNet18 (W4A4) on
# cuda:0 and the same on the CPU, and prints both epochs' figures.
#
#   bash scripts/gpu_check.sh [LIBTORCH_PREFIX]   # default: the installed torch's cmake prefix
#
# Needs scripts/install_deps.sh run first, a CUDA GPU and Fashion-MNIST
# (/usr/share/datasets/fashion-mnist). Prints what it measured; commit the figures in
# bench/results/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
prefix=${1:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')}
build=$root/build-cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$prefix"
cmake --build "$build" -j "$(nproc)" --target qopt-worker engine_tests
python=/usr/bin/python3
mkdir -p "$build/tests/fixtures"
"$python" tests/fixtures/make_fixtures.py "$build/tests/fixtures"
QOPT_FIXTURES=$build/tests/fixtures "$build/tests/engine_tests" --gtest_brief=1 2>&1 | tail -20

data=/usr/share/datasets/fashion-mnist
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for device in cuda:0 cpu; do
  cat > "$work/qat.json" <<JSON
{"name": "gpu-check", "model": {"path": "$root/zoo/resnet18.pt"}, "device": "$device",
 "calibration_data": {"path": "$data/train-images-idx3-ubyte.gz", "max_samples": 512, "shuffle": true, "seed": 1,
                      "batch_size": 64, "preprocess": {"mean": [0.286], "std": [0.353]}},
 "evaluation_data": {"path": "$data/t10k-images-idx3-ubyte.gz", "labels_path": "$data/t10k-labels-idx1-ubyte.gz",
                     "batch_size": 500, "preprocess": {"mean": [0.286], "std": [0.353]}},
 "quantization": {"param_bitwidth": 4, "activation_bitwidth": 4, "per_channel": true},
 "steps": [{"fold_batch_norm": {}}, {"calibrate": {}}, {"evaluate": {}},
           {"qat": {"epochs": 1, "batch_size": 128, "learning_rate": 0.01,
                    "data": {"path": "$data/train-images-idx3-ubyte.gz", "labels_path": "$data/train-labels-idx1-ubyte.gz",
                             "preprocess": {"mean": [0.286], "std": [0.353]}}}},
           {"evaluate": {}}]}
JSON
  echo "== one QAT epoch on $device"
  start=$(date +%s)
  "$build/worker/qopt-worker" run --recipe "$work/qat.json" --out "$work/out-${device/:/}" 2>&1 |
    grep -E "evaluate: |qat: " || true
  echo "wall seconds: $(($(date +%s) - start))"
done
