#!/usr/bin/env bash
# Runs one fuzz harness over its committed seeds for a fixed time. New inputs go to
# <fuzz build>/work/<harness>, crash / leak / timeout reproducers to
# <fuzz build>/artifacts/; the committed corpus is only read. Exits non-zero when
# libFuzzer finds a crash, a sanitizer report, a leak or a timeout.
#
#   run.sh <fuzz build dir> <harness> <seconds> [more libFuzzer flags]
#
# With 0 seconds, only the committed corpus is run (each input once), no mutation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1 harness=$2 seconds=$3
shift 3
work=$build/work/$harness
mkdir -p "$work" "$build/artifacts"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# One slow input (a decoder looping, a huge allocation) is a finding, not a hang of CI.
if [ "$seconds" -eq 0 ]; then budget=(-runs=0); else budget=(-max_total_time="$seconds"); fi
exec "$build/${harness}_fuzz" "${budget[@]}" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$build/artifacts/$harness-" "$@" \
  "$work" "$here/corpus/$harness"
