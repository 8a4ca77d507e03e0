#!/usr/bin/env bash
# The GPU check: builds qopt-worker and the engine tests against a CUDA LibTorch (C++11
# ABI: PyTorch's manylinux_2_28 wheels, 2.6 and later, or its cxx11-abi LibTorch
# archives), times one QAT epoch of the zoo ResNet18 (W4A4) on cuda:0 and the same on
# the CPU, then runs the engine tests. Every stage has a time limit and the script goes on
# past a failed stage, so one run reports all it can.
#
#   bash scripts/gpu_check.sh [LIBTORCH_PREFIX]   # default: the installed torch's cmake prefix
#
# Needs a CUDA GPU, a C++ compiler, CMake and a Python with torch (and torchvision, for the
# test fixtures). Either scripts/install_deps.sh run first (Debian 12), or, on a host
# without Debian's packages or a network, QOPT_OFFLINE_DEPS=DIR with DIR made by
# scripts/gpu_offline_deps.sh: its packages are unpacked under /tmp/qopt-deps and nothing
# is installed into the system (as root, a missing /usr/share/datasets/fashion-mnist is
# linked to DIR's copy, where the engine tests read it).
# QOPT_GPU_QAT_SAMPLES (default 60000, the whole set) sets the training images of the timed
# QAT epoch; QOPT_GPU_DEADLINE (seconds since the epoch) ends the engine tests in time.
# Logs go to QOPT_GPU_LOGS (default build-cuda/gpu-check); QOPT_GPU_CONFIGURE_ONLY=1 stops
# after configuring (a quick look at what was found). Commit the figures in
# bench/results/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${QOPT_GPU_BUILD_DIR:-$root/build-cuda}
logs=${QOPT_GPU_LOGS:-$build/gpu-check}
mkdir -p "$logs"
stage() { echo; echo "== $* ($(date +%T))"; }

python=${QOPT_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in /usr/bin/python3 python3; do
    if "$candidate" -c 'import torch' 2> /dev/null; then python=$(command -v "$candidate"); break; fi
  done
fi
[ -n "$python" ] || { echo "gpu_check: no python3 with torch found (set QOPT_PYTHON)" >&2; exit 1; }
prefix=${1:-$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')}
command -v nvcc > /dev/null || export PATH=/usr/local/cuda/bin:$PATH

stage "host"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$python" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "available", torch.cuda.is_available(), "python", sys.version.split()[0])'
echo "cxx: $(c++ --version | head -1); nvcc: $(nvcc --version 2> /dev/null | tail -1); cmake: $(cmake --version | head -1)"
echo "cores: $(nproc); os: $(. /etc/os-release && echo "$PRETTY_NAME")"

cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DQOPT_WITH_GRPC=OFF -DQOPT_BUILD_BENCH=OFF
            -DQOPT_PYTHON="$python" -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
prefixes=$prefix
# LibTorch 2.12 and later need C++20 in every file that includes them.
if "$python" -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 12))'; then
  cmake_args+=(-DCMAKE_CXX_STANDARD=20)
fi
data=/usr/share/datasets/fashion-mnist
if [ -n "${QOPT_OFFLINE_DEPS:-}" ]; then
  stage "unpacking $(ls "$QOPT_OFFLINE_DEPS"/debs/*.deb | wc -l) Debian packages into /tmp/qopt-deps"
  deps=/tmp/qopt-deps
  rm -rf "$deps" && mkdir -p "$deps"
  for deb in "$QOPT_OFFLINE_DEPS"/debs/*.deb; do dpkg-deb -x "$deb" "$deps"; done
  # Absolute links (libz.so -> /lib/...) point into the unpacked tree instead.
  find "$deps" -type l -lname '/*' | while read -r link; do ln -sfn "$deps$(readlink "$link")" "$link"; done
  lib=$deps/usr/lib/x86_64-linux-gnu
  wrap() { printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$lib" "$2" > "$deps/$1"; chmod +x "$deps/$1"; }
  wrap protoc "$deps/usr/bin/protoc"
  export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$deps/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$deps
  pkg_config=$(command -v pkg-config || true)
  if [ -z "$pkg_config" ]; then wrap pkg-config "$deps/usr/bin/pkgconf"; pkg_config=$deps/pkg-config; fi
  prefixes="$prefix;$deps/usr"
  # The engine tests need no ONNX Runtime; node is looked up only for the ONNX checks.
  cmake_args+=(-DProtobuf_PROTOC_EXECUTABLE="$deps/protoc" -DPKG_CONFIG_EXECUTABLE="$pkg_config"
               -DQOPT_NODE="$(command -v node || echo /bin/false)")
  data=$(cd "$QOPT_OFFLINE_DEPS/fashion-mnist" && pwd)
  if [ ! -e /usr/share/datasets/fashion-mnist ] && [ -w /usr/share ] ; then
    mkdir -p /usr/share/datasets && ln -s "$data" /usr/share/datasets/fashion-mnist
  fi
fi

stage "configure"
timeout 300 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_PREFIX_PATH="$prefixes" "${cmake_args[@]}" \
  > "$logs/configure.log" 2>&1
status=$?
grep -E "Torch|CUDA|Found|Error|error|Warning" "$logs/configure.log" | head -40
[ $status -eq 0 ] || { echo "gpu_check: configure failed ($status)"; tail -40 "$logs/configure.log"; exit 1; }
[ -z "${QOPT_GPU_CONFIGURE_ONLY:-}" ] || exit 0

stage "build qopt-worker engine_tests"
start=$(date +%s)
timeout "${QOPT_GPU_BUILD_SECONDS:-420}" cmake --build "$build" -j "$(nproc)" --target qopt-worker engine_tests -- -k 0 \
  > "$logs/build.log" 2>&1
status=$?
echo "build status $status in $(($(date +%s) - start)) s"
if [ $status -ne 0 ]; then
  grep -E "error|Error" "$logs/build.log" | head -60
  exit 1
fi

export OMP_NUM_THREADS=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
samples=${QOPT_GPU_QAT_SAMPLES:-60000}
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
                             "max_samples": $samples, "shuffle": true, "seed": 2,
                             "preprocess": {"mean": [0.286], "std": [0.353]}}}},
           {"evaluate": {}}]}
JSON
  stage "one QAT epoch of $samples images on $device"
  start=$(date +%s)
  timeout 240 "$build/worker/qopt-worker" run --recipe "$work/qat.json" --out "$work/out-${device/:/}" \
    > "$logs/qat-${device/:/}.log" 2>&1
  echo "exit $? after $(($(date +%s) - start)) s wall"
  grep -E "evaluate: |qat: |error|Error" "$logs/qat-${device/:/}.log" | grep -v "qat: epoch 1 step" | tail -12
  grep -E "qat: epoch 1 step" "$logs/qat-${device/:/}.log" | tail -2
done

stage "fixtures"
mkdir -p "$build/tests/fixtures"
timeout 180 "$python" tests/fixtures/make_fixtures.py "$build/tests/fixtures" > "$logs/fixtures.log" 2>&1
echo "fixtures exit $?"; tail -3 "$logs/fixtures.log"

stage "engine tests"
test_seconds=${QOPT_GPU_TEST_SECONDS:-600}
if [ -n "${QOPT_GPU_DEADLINE:-}" ]; then
  left=$((QOPT_GPU_DEADLINE - $(date +%s) - 10))
  [ "$left" -lt "$test_seconds" ] && test_seconds=$left
fi
echo "(at most $test_seconds s)"
QOPT_FIXTURES=$build/tests/fixtures timeout "$test_seconds" "$build/tests/engine_tests" --gtest_brief=1 \
  > "$logs/engine_tests.log" 2>&1
echo "engine_tests exit $?"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests ran|FAILED TEST" "$logs/engine_tests.log" | head -60
tail -5 "$logs/engine_tests.log"
