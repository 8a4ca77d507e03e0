#!/usr/bin/env bash
# qopt-server killed with SIGKILL mid-job and mid-upload: after a restart on the same
# data directory no job, event or complete blob is lost, no partial blob is visible, the
# interrupted upload resumes, and the running job still ends SUCCEEDED. Also: a running
# job's cancellation reaches its worker within 2 s.
set -u
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
server_pid=""
failures=0
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

port=$("$python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export QOPT_SERVER=127.0.0.1:$port
start_server() {
  "$server_bin" --listen "$QOPT_SERVER" --data-dir "$tmp/data" --local-workers 1 --lease-ms 2000 \
    >> "$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    "$cli" list > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$tmp/server.log"; exit 1
}
state() { "$cli" status "$1" --output json | "$python" -c "import json,sys; print(json.load(sys.stdin)['state'])"; }
wait_state() {  # wait_state JOB STATE SECONDS
  for _ in $(seq $(($3 * 10))); do
    [ "$(state "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

start_server
recipe=$src/examples/recipes/fashion_mnist_w8a8.json

# Cancellation of a running job reaches the worker within 2 s.
job=$("$cli" submit "$recipe" --model "$src/zoo/resnet18.pt")
wait_state "$job" RUNNING 30 || fail "job $job never ran"
sleep 0.5
"$cli" cancel "$job" > /dev/null || fail "cancel $job"
start=$(date +%s.%N)
wait_state "$job" CANCELLED 2 || fail "job $job not CANCELLED within 2 s of cancel"
echo "ok   cancel: running job cancelled in $("$python" -c "print('%.2f' % ($(date +%s.%N) - $start))") s"

# A finished job, then one running when the server dies.
done_job=$("$cli" submit "$recipe" --watch --output json | tail -1 | "$python" -c "import json,sys; print(json.load(sys.stdin)['id'])" 2>/dev/null)
[ -n "$done_job" ] || done_job=$("$cli" list --output json | "$python" -c "import json,sys; print([j['id'] for j in json.load(sys.stdin) if j['state']=='SUCCEEDED'][0])")
events_before=$("$cli" watch "$done_job" --output json | wc -l)
running=$("$cli" submit "$recipe" --model "$src/zoo/resnet18.pt")
wait_state "$running" RUNNING 30 || fail "job $running never ran"
sleep 1
kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null
start_server
[ "$(state "$done_job")" = SUCCEEDED ] || fail "finished job $done_job lost: $(state "$done_job")"
[ "$("$cli" watch "$done_job" --output json | wc -l)" = "$events_before" ] || fail "events of $done_job changed"
"$cli" watch "$running" > /dev/null 2>&1 || fail "job $running did not succeed after the server restart ($(state "$running"))"
echo "ok   server killed mid-job: $done_job kept, $running ended $(state "$running")"

# Upload interrupted by SIGKILL: nothing partial is visible, and it resumes.
head -c 200000000 /dev/urandom > "$tmp/big.bin"
sha=$(sha256sum "$tmp/big.bin" | cut -d' ' -f1)
"$cli" upload "$tmp/big.bin" > /dev/null 2>&1 &
upload_pid=$!
for _ in $(seq 200); do
  [ -s "$tmp/data/uploads/$sha.part" ] && break
  sleep 0.02
done
kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null
wait "$upload_pid" 2>/dev/null
[ -e "$tmp/data/blobs/${sha:0:2}/$sha" ] && ! cmp -s "$tmp/data/blobs/${sha:0:2}/$sha" "$tmp/big.bin" \
  && fail "a partial blob is visible"
start_server
got=$("$cli" upload "$tmp/big.bin") || fail "upload did not resume"
[ "$got" = "$sha" ] || fail "upload returned $got, expected $sha"
cmp -s "$tmp/data/blobs/${sha:0:2}/$sha" "$tmp/big.bin" || fail "stored blob differs from the file"
echo "ok   server killed mid-upload: no partial blob visible, upload resumed to $sha"

echo "$failures failed"
[ "$failures" -eq 0 ]
