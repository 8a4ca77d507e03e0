#!/usr/bin/env bash
# The service end to end with real processes on loopback: qopt-server with a local
# worker, the qopt CLI, a job through to its artifacts, a corrupt model, a worker killed
# with SIGKILL mid-job, unknown ids, and tenants with bearer tokens.
set -u
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
fx=${QOPT_FIXTURES:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
server_pid=""
failures=0

cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL $*"; failures=$((failures + 1)); }

source "$src/scripts/qopt_server.sh"

# start_server DATA_DIR [extra args]: a server with one local worker; sets QOPT_SERVER.
start_server() {
  local data=$1
  shift
  start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$data" \
    --local-workers 1 --lease-ms 2000 "$@" || exit 1
  server_pid=$QOPT_SERVER_PID
  metrics_url=http://$QOPT_METRICS/metrics
}

stop_server() {
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=""
}

job_field() {  # job_field JOB_ID FIELD: a field of `qopt status --output json`
  "$cli" status "$1" --output json | "$python" -c "import json,sys; print(json.load(sys.stdin).get('$2', ''))"
}

# metric NAME_WITH_LABELS: its value on the server's /metrics page (0 when absent).
metric() {
  "$python" - "$metrics_url" "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
values = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(sys.argv[2] + " ")]
print(values[0] if values else 0)
PY
}

start_server "$tmp/data" --metrics-listen 127.0.0.1:0

# 1. A job end to end: the bundled recipe, files uploaded by the CLI, live watch,
#    artifacts downloaded and loaded by stock PyTorch.
job=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json" --request-id e2e-1)
[ -n "$job" ] || fail "submit printed no job id"
"$cli" watch "$job" > "$tmp/watch.log" 2>&1 || fail "watch of $job did not end in SUCCEEDED: $(tail -3 "$tmp/watch.log")"
[ "$(job_field "$job" state)" = SUCCEEDED ] || fail "job $job is $(job_field "$job" state)"
again=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json" --request-id e2e-1)
[ "$again" = "$job" ] || fail "resubmitting request_id e2e-1 made a new job $again"
"$cli" download "$job" model.pt -o "$tmp/model.pt" || fail "download model.pt"
"$cli" report "$job" > "$tmp/report.json" || fail "report"
"$cli" report "$job" --html -o "$tmp/report.html" > /dev/null || fail "report --html"
grep -q 'id="summary"' "$tmp/report.html" || fail "report --html wrote no report page"
"$cli" report "$job" -o "$tmp/x.html" > /dev/null 2>&1
[ $? -eq 2 ] || fail "report -o without --html is not a usage error"
"$python" - "$tmp/model.pt" "$tmp/report.json" <<'PY' || fail "artifacts of $job"
import json, sys, torch
model = torch.jit.load(sys.argv[1])
y = model(torch.zeros(2, 1, 28, 28))
assert y.shape == (2, 10), y.shape
m = json.load(open(sys.argv[2]))["metrics"]
assert m["top1"] > 0.85 and abs(m["top1"] - m["fp32_top1"]) < 0.01, m
print("ok   e2e: W8A8 top-1 %.4f (FP32 %.4f)" % (m["top1"], m["fp32_top1"]))
PY

# 1b. ONNX export through the service: model.onnx and its encodings downloaded by the CLI
#     run in ONNX Runtime with the TorchScript simulation's top class.
onnx_job=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8_onnx.json")
"$cli" watch "$onnx_job" > "$tmp/watch-onnx.log" 2>&1 || fail "ONNX job $onnx_job: $(tail -3 "$tmp/watch-onnx.log")"
mkdir -p "$tmp/onnx"
for f in model.onnx model.onnx.encodings model.pt; do
  "$cli" download "$onnx_job" "$f" -o "$tmp/onnx/$f" > /dev/null || fail "download $f of $onnx_job"
done
[ -s "$tmp/onnx/model.pt" ] &&
  { "$python" "$src/tests/service/check_downloaded_onnx.py" "$tmp/onnx" "qopt download" || fail "downloaded ONNX model"; }

# 2. Unknown ids are NOT_FOUND.
"$cli" status job-does-not-exist > /dev/null 2> "$tmp/err"
rc=$?
{ [ $rc -eq 1 ] && grep -q NOT_FOUND "$tmp/err"; } || fail "unknown job: rc $rc, $(cat "$tmp/err")"

# 3. A corrupt model fails its job with the engine's message; the service carries on.
bad=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json" --model "$fx/not_torchscript.pt")
"$cli" watch "$bad" > /dev/null 2>&1
rc=$?
[ $rc -eq 3 ] || fail "corrupt model job: watch exit $rc, expected 3"
job_field "$bad" error | grep -q "not a TorchScript model" || fail "corrupt model error: $(job_field "$bad" error)"
echo "ok   corrupt model: $(job_field "$bad" error)"

# 4. kill -9 of the worker mid-job: the lease expires, the job is leased again and succeeds.
slow=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json" --model "$src/zoo/resnet18.pt")
for _ in $(seq 300); do
  [ "$(job_field "$slow" state)" = RUNNING ] && break
  sleep 0.1
done
sleep 1
pkill -9 -f "qopt-worker --server $QOPT_SERVER" || fail "no worker process to kill"
"$cli" watch "$slow" > /dev/null 2>&1 || fail "job $slow did not succeed after its worker was killed"
attempts=$(job_field "$slow" attempts)
[ "$attempts" -ge 2 ] 2>/dev/null || fail "job $slow ran $attempts times; expected a second lease"
echo "ok   worker killed: job $slow succeeded on attempt $attempts"

# 5. Metrics on their own port.
sleep 0.5
for m in 'qopt_jobs{state="SUCCEEDED"}' 'qopt_jobs{state="FAILED"}' 'qopt_lease_expiries_total' \
         'qopt_bytes_total{direction="in"}' 'qopt_bytes_total{direction="out"}' 'qopt_live_workers' \
         'qopt_rpc_duration_seconds_count{method="SubmitJob"}' 'qopt_job_duration_seconds_count{state="SUCCEEDED",technique="fold_batch_norm+calibrate"}'; do
  v=$(metric "$m")
  "$python" -c "import sys; sys.exit(0 if float('$v') >= 1 else 1)" || fail "metric $m is $v"
done
[ "$(metric 'qopt_jobs_by_technique{state="SUCCEEDED",technique="fold_batch_norm+calibrate"}')" != 0 ] ||
  fail "no SUCCEEDED fold_batch_norm+calibrate job in qopt_jobs_by_technique"
echo "ok   metrics: SUCCEEDED $(metric 'qopt_jobs{state="SUCCEEDED"}'), lease expiries $(metric qopt_lease_expiries_total), bytes in $(metric 'qopt_bytes_total{direction="in"}')"
stop_server

# 6. Tenants: bearer tokens, no token, another tenant's job.
cat > "$tmp/auth.json" <<'JSON'
{"tenants": {"token-a": "team-a", "token-b": "team-b"}, "worker_tokens": ["token-w"]}
JSON
start_server "$tmp/data2" --auth-file "$tmp/auth.json"
"$cli" list > /dev/null 2> "$tmp/err"
grep -q UNAUTHENTICATED "$tmp/err" || fail "no token: $(cat "$tmp/err")"
QOPT_TOKEN=wrong "$cli" list > /dev/null 2> "$tmp/err"
grep -q UNAUTHENTICATED "$tmp/err" || fail "wrong token: $(cat "$tmp/err")"
mine=$(QOPT_TOKEN=token-a "$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.yaml")
QOPT_TOKEN=token-b "$cli" status "$mine" > /dev/null 2> "$tmp/err"
grep -q NOT_FOUND "$tmp/err" || fail "other tenant's job: $(cat "$tmp/err")"
QOPT_TOKEN=token-a "$cli" watch "$mine" > /dev/null 2>&1 || fail "tenant a's job with a worker token"
echo "ok   tenants: no/wrong token UNAUTHENTICATED, other tenant NOT_FOUND"
stop_server

# 7. Uploads over the server's size limit are RESOURCE_EXHAUSTED.
start_server "$tmp/data3" --max-upload-bytes 4096
head -c 5000 /dev/urandom > "$tmp/too_big.bin"
"$cli" upload "$tmp/too_big.bin" > /dev/null 2> "$tmp/err"
rc=$?
{ [ $rc -eq 1 ] && grep -q RESOURCE_EXHAUSTED "$tmp/err"; } || fail "oversized upload: rc $rc, $(cat "$tmp/err")"
head -c 4000 /dev/urandom > "$tmp/small.bin"
"$cli" upload "$tmp/small.bin" > /dev/null || fail "upload under the limit"
echo "ok   upload limit: $(cat "$tmp/err")"

echo "$failures failed"
[ "$failures" -eq 0 ]
