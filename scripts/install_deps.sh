#!/usr/bin/env bash
# Installs every Debian 12 package qopt needs to build, test and run, then ONNX Runtime
# from the npm registry into tools/onnxruntime (its Node binding ships the runtime's
# shared library; tests and benchmarks run ONNX exports in it). Idempotent: what is
# already present is skipped, so a second run costs a few seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libsqlite3-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libssl-dev nlohmann-json3-dev libcli11-dev
  zlib1g-dev libzip-dev libpng-dev libturbojpeg0-dev prometheus libyaml-cpp-dev libseccomp-dev
  # report.html is checked in a real browser (tests/cli/report_html_test.sh).
  chromium fonts-dejavu-core
  python3-torch python3-torchvision python3-numpy python3-grpcio python3-protobuf python3-yaml
  dataset-fashion-mnist
  # The fuzz harnesses (tests/fuzz): Debian 12's clang; libFuzzer ships in compiler-rt.
  clang-14 libclang-rt-14-dev
  # ONNX's protobuf schema and checker.
  libonnx-dev python3-onnx
)
# Node.js runs ONNX Runtime's binding; a machine that has node and npm (Debian's or
# another build) keeps them.
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then packages+=(nodejs npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install_deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime at the version package-lock.json pins; install scripts are not run (the
# package holds its binaries).
ort="$root/tools/onnxruntime"
wanted=$(sed -n 's/.*"onnxruntime-node": "\(.*\)".*/\1/p' "$ort/package.json")
have=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$ort/node_modules/onnxruntime-node/package.json" 2>/dev/null || true)
if [ "$have" = "$wanted" ]; then
  echo "install_deps: onnxruntime-node $have present"
else
  echo "install_deps: installing onnxruntime-node $wanted into $ort"
  (cd "$ort" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
