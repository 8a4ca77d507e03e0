#!/usr/bin/env bash
# Starts qopt-server (no local workers) on loopback with its data on this disk and runs
# service_bench against it: 512 MiB upload, and its download as a job's artifact into a file
# (fsync'd), each against `cp` + `sync` of the same file on the same disk; submit-to-lease
# latency, 1 000 trivial jobs, 200 concurrent watchers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QOPT_BUILD_DIR:-$root/build}
QOPT_BUILD_TARGETS="qopt-server service_bench" bash "$root/scripts/build.sh" > /dev/null
# Under out/ (ignored by git), on the disk the project is on: /tmp may be a RAM disk, where
# cp + sync would measure memory.
mkdir -p "$root/out"
work=$(mktemp -d "$root/out/service-bench.XXXXXX")
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
# The floor for anything that sees the bytes in user space: dd reads the file into its
# buffer and writes it out, then fsyncs (cp copies inside the kernel).
start=$(date +%s.%N)
dd if="$work/blob.bin" of="$work/copy.bin" bs=1M conv=fsync status=none
dd_s=$(/usr/bin/python3 -c "print('%.3f' % ($(date +%s.%N) - $start))")
rm "$work/copy.bin"
echo "dd (1 MiB blocks, fsync) of the same file: $dd_s s, $(/usr/bin/python3 -c "print('%.3f' % ($cp_s / $dd_s))") of cp's throughput"
start_qopt_server "$build/server/qopt-server" "$work/server.log" --listen 127.0.0.1:0 --data-dir "$work/data"
"$build/bench/service_bench" --server "$QOPT_SERVER" --file "$work/blob.bin" --download-to "$work/download.bin" --jobs "${JOBS:-1000}" \
  --watchers "${WATCHERS:-200}" | tee "$work/bench.log"
for what in upload download; do
  s=$(sed -n "s/^$what [0-9]* MiB: \([0-9.]*\) s.*/\1/p" "$work/bench.log")
  echo "$what throughput / cp throughput: $(/usr/bin/python3 -c "print('%.3f' % ($cp_s / $s))") (goal >= 0.8)"
done
# RECORD=1: the upload and download figures go to bench/results/speed.json as the row
# {"benchmark": "service", ...}, replacing the last one.
[ "${RECORD:-0}" = 1 ] || exit 0
/usr/bin/python3 - "$root/bench/results/speed.json" "$work/bench.log" "$cp_s" "$(nproc)" "$dd_s" <<'PY'
import datetime, json, re, sys
path, log, cp_s, cores, dd_s = sys.argv[1], open(sys.argv[2]).read(), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
row = {"benchmark": "service", "model": "512 MiB blob", "cores": cores, "cp_sync_seconds": cp_s,
       "dd_fsync_seconds": dd_s, "date": datetime.date.today().isoformat()}
for what in ("upload", "download"):
    m = re.search(r"^%s \d+ MiB: ([0-9.]+) s" % what, log, re.M)
    row[what + "_seconds"] = float(m.group(1))
    row[what + "_over_cp"] = round(cp_s / float(m.group(1)), 3)
rows = [r for r in json.load(open(path)) if r.get("benchmark") != "service"]
json.dump(rows + [row], open(path, "w"), indent=1)
print("speed.json: service row", row)
PY
