#!/usr/bin/env bash
# Starts qopt-server (no local workers) on loopback with its data on this disk and runs
# service_bench against it: 512 MiB upload, and its download as a job's artifact into a file
# (fsync'd), each against `cp` + `sync` of the same file on the same disk; submit-to-lease
# latency, 1 000 trivial jobs, 200 concurrent watchers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
QOPT_BUILD_TARGETS="qopt-server service_bench" bash "$root/scripts/build.sh" > /dev/null
work=$(mktemp -d "$root/out/service-bench.XXXXXX" 2>/dev/null || mktemp -d)
source "$root/scripts/qopt_server.sh"
trap 'kill $QOPT_SERVER_PID 2>/dev/null || true; rm -rf "$work"' EXIT
head -c $((512 << 20)) /dev/urandom > "$work/blob.bin"
sync
start=$(date +%s.%N)
cp "$work/blob.bin" "$work/copy.bin"
sync
cp_s=$(/usr/bin/python3 -c "print('%.3f' % ($(date +%s.%N) - $start))")
rm "$work/copy.bin"
echo "cp of 512 MiB on the same disk (with sync): $cp_s s"
start_qopt_server "$build/server/qopt-server" "$work/server.log" --listen 127.0.0.1:0 --data-dir "$work/data"
"$build/bench/service_bench" --server "$QOPT_SERVER" --file "$work/blob.bin" --download-to "$work/download.bin" --jobs "${JOBS:-1000}" \
  --watchers "${WATCHERS:-200}" | tee "$work/bench.log"
for what in upload download; do
  s=$(sed -n "s/^$what [0-9]* MiB: \([0-9.]*\) s.*/\1/p" "$work/bench.log")
  echo "$what throughput / cp throughput: $(/usr/bin/python3 -c "print('%.3f' % ($cp_s / $s))") (goal >= 0.8)"
done
