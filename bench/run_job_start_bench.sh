#!/usr/bin/env bash
# Builds qopt and runs job_start_bench on the bundled model: the per-job cost of running
# each service job in its own sandboxed process (exec'd or forked from the zygote).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
bash "$root/scripts/build.sh" >/dev/null
"$build/bench/job_start_bench" "$build/worker/qopt-worker" "$root/zoo/small_cnn.pt" --runs "${RUNS:-15}" "$@"
