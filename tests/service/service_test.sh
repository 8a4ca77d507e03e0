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

# 3b. A user's first hour (issue 16): `qopt list` says when each job was made, how long
#     it ran, what it did and how it went; it filters by state and name; a finished job's
#     artifacts come down at once; progress lines in a log name their stage.
"$cli" list > "$tmp/list.txt" || fail "list"
"$python" - "$tmp/list.txt" "$job" "$bad" "$tmp/report.json" <<'PY' || fail "list columns: $(cat "$tmp/list.txt")"
import json, re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
job, bad, metrics = sys.argv[2], sys.argv[3], json.load(open(sys.argv[4]))["metrics"]
assert lines[0].split()[:6] == ["ID", "STATE", "CREATED", "DURATION", "NAME", "TECHNIQUE"], lines[0]
row = lambda job_id: next(l for l in lines if l.startswith(job_id + " "))
top1 = "%.1f → %.1f" % (100 * metrics["fp32_top1"], 100 * metrics["top1"])
ok = row(job)
assert re.match(r"\S+ +SUCCEEDED +\d{4}-\d\d-\d\d \d\d:\d\d +\d+s +fashion_mnist_w8a8 +fold_batch_norm\+calibrate +" +
                re.escape(top1) + "$", ok), ok
failed = row(bad)
assert re.search(r" FAILED .* error: not a TorchScript model", failed) and "starting" not in failed, failed
print("ok   list: " + re.sub(" +", " ", ok))
print("ok   list: " + re.sub(" +", " ", failed)[:110])
PY
[ "$(job_field "$bad" stage)" = failed ] || fail "a failed job's stage is '$(job_field "$bad" stage)'"
only_failed=$("$cli" list --state FAILED | tail -n +2 | awk '{print $1}')
[ "$only_failed" = "$bad" ] || fail "list --state FAILED: $only_failed"
both=$("$cli" list --state failed,succeeded --name MNIST_W8A8 | tail -n +2 | awk '{print $1}' | sort | tr '\n' ' ')
want=$(printf '%s\n' "$job" "$onnx_job" "$bad" | sort | tr '\n' ' ')
[ "$both" = "$want" ] || fail "list --state failed,succeeded --name MNIST_W8A8: $both, expected $want"
onnx_only=$("$cli" list --name _Onnx | tail -n +2 | awk '{print $1}')
[ "$onnx_only" = "$onnx_job" ] || fail "list --name _Onnx: $onnx_only"
none=$("$cli" list --name no-such-name --state QUEUED --state RUNNING | tail -n +2)
[ -z "$none" ] || fail "list --name no-such-name: $none"
"$cli" list --state FAILED --output json |
  "$python" -c "import json,sys; j=json.load(sys.stdin); assert [x['id'] for x in j]==['$bad'] and j[0]['technique']=='fold_batch_norm+calibrate', j" ||
  fail "list --state FAILED --output json"
echo "ok   list filters: --state FAILED, --state failed,succeeded --name MNIST_W8A8, --name _Onnx, --output json"
"$cli" download "$job" --all -o "$tmp/all/$job" > "$tmp/all.txt" || fail "download --all"
names=$("$cli" status "$job" --output json | "$python" -c "import json,sys; print(' '.join(a['name'] for a in json.load(sys.stdin)['artifacts']))")
for name in $names; do
  "$cli" download "$job" "$name" -o "$tmp/single-$name" > /dev/null || fail "download $name"
  cmp -s "$tmp/all/$job/$name" "$tmp/single-$name" || fail "download --all: $name differs from its single download"
done
[ "$(ls -A "$tmp/all/$job" | sort | tr '\n' ' ')" = "$(printf '%s\n' $names | sort | tr '\n' ' ')" ] ||
  fail "download --all wrote $(ls -A "$tmp/all/$job")"
"$cli" download "$bad" --all -o "$tmp/all/$bad" > /dev/null 2> "$tmp/err"
rc=$?
{ [ $rc -eq 1 ] && grep -q "FAILED_PRECONDITION: .*has no artifacts" "$tmp/err" && [ ! -e "$tmp/all/$bad" ]; } ||
  fail "download --all of a failed job: rc $rc, $(cat "$tmp/err")"
"$cli" download "$job" model.pt --all > /dev/null 2>&1
[ $? -eq 2 ] || fail "download NAME --all is not a usage error"
echo "ok   download --all: $names (each as its single download); a failed job: $(cat "$tmp/err")"
grep -qE "^(calibrate|evaluate): batch [0-9]+/[0-9]+$" "$tmp/watch.log" ||
  fail "no progress line with its stage in a piped watch: $(grep -m3 batch "$tmp/watch.log")"
echo "ok   piped watch: $(grep -m1 -E "^(calibrate|evaluate): batch" "$tmp/watch.log")"

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
