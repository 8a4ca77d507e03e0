#!/usr/bin/env bash
# Installs the Debian packages (idempotent) and builds qopt into build/ (or $QOPT_BUILD_DIR):
# every target, or only those named in $QOPT_BUILD_TARGETS (space-separated), as a benchmark
# that needs two binaries asks. Arguments go to cmake's configure step.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
bash "$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
read -r -a targets <<< "${QOPT_BUILD_TARGETS:-}"
cmake --build "$build" -j "$(nproc)" ${targets[@]+--target "${targets[@]}"}
