#!/usr/bin/env bash
# Installs, builds and runs the whole test suite (ctest: GoogleTest suites plus the CLI and
# python3-torch checks). This is what CI runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
bash "$root/scripts/build.sh"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
