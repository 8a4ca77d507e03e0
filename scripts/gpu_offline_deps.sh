#!/usr/bin/env bash
# Gathers what scripts/gpu_check.sh needs on a GPU host that has PyTorch and a compiler but
# neither Debian 12's packages nor a network: the Debian packages the engine, the offline
# worker and the engine tests build against (as .deb files, unpacked there under /tmp, not
# installed), and Fashion-MNIST. Run it on a Debian 12 machine with network access, copy
# DIR to the GPU host, then there: QOPT_OFFLINE_DEPS=DIR bash scripts/gpu_check.sh
#
#   bash scripts/gpu_offline_deps.sh DIR
set -euo pipefail
dir=${1:?usage: gpu_offline_deps.sh DIR}
mkdir -p "$dir/debs" "$dir/fashion-mnist"
dir=$(cd "$dir" && pwd)

packages=(
  libabsl-dev libabsl20220623
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32
  nlohmann-json3-dev libcli11-dev libyaml-cpp-dev libyaml-cpp0.7
  zlib1g-dev zlib1g libssl-dev libssl3
  libzip-dev libzip4 libseccomp-dev libseccomp2 libpng-dev libpng16-16
  libturbojpeg0-dev libturbojpeg0 libonnx-dev libonnx1 libonnxifi
  libgtest-dev libgmock-dev googletest
  # pkg-config for hosts without one.
  pkgconf pkgconf-bin libpkgconf3
)
# apt-get download writes into the current folder; as root it warns that _apt cannot.
(cd "$dir/debs" && apt-get download "${packages[@]}" 2>&1 | grep -v "unsandboxed as root" || true)

data=/usr/share/datasets/fashion-mnist
if [ ! -d "$data" ]; then
  echo "gpu_offline_deps: $data is missing (apt-get install dataset-fashion-mnist)" >&2
  exit 1
fi
cp "$data"/*-ubyte.gz "$dir/fashion-mnist/"
echo "gpu_offline_deps: $(ls "$dir/debs" | wc -l) packages and Fashion-MNIST in $dir ($(du -sh "$dir" | cut -f1))"
