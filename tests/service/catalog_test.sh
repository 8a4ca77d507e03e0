#!/usr/bin/env bash
# Named models and datasets, per-tenant storage and the quota, through the qopt CLI
# against a real qopt-server with a local worker: records by name in a recipe, another
# tenant's names and blobs out of reach, RESOURCE_EXHAUSTED past the quota, and storage
# freed by deleting jobs and records.
set -u
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
failures=0
QOPT_SERVER_PID=""
trap '[ -n "$QOPT_SERVER_PID" ] && kill $QOPT_SERVER_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
source "$src/scripts/qopt_server.sh"

fm=/usr/share/datasets/fashion-mnist
model=$src/zoo/small_cnn.pt
model_bytes=$(stat -c %s "$model")
test_bytes=$(( $(stat -c %s $fm/t10k-images-idx3-ubyte.gz) + $(stat -c %s $fm/t10k-labels-idx1-ubyte.gz) ))
# Room for the model, the test set and the job's artifacts, not for the training set.
quota=$(( model_bytes + test_bytes + 4 * 1024 * 1024 ))
cat > "$tmp/auth.json" <<'JSON'
{"tenants": {"token-a": "team-a", "token-b": "team-b"}, "worker_tokens": ["token-w"]}
JSON
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --local-workers 1 --auth-file "$tmp/auth.json" --quota-bytes "$quota" || exit 1
a() { QOPT_TOKEN=token-a "$cli" "$@"; }
b() { QOPT_TOKEN=token-b "$cli" "$@"; }
used() { "$@" usage --output json | "$python" -c "import json,sys; print(json.load(sys.stdin)['used_bytes'])"; }

# 1. Records: create, idempotent re-create, conflicting re-create, list.
a models create small-cnn "$model" --description "zoo small CNN" > /dev/null || fail "models create"
a models create small-cnn "$model" --description "zoo small CNN" > /dev/null || fail "same record again"
a models create small-cnn $fm/t10k-labels-idx1-ubyte.gz > /dev/null 2> "$tmp/err"
grep -q ALREADY_EXISTS "$tmp/err" || fail "conflicting record: $(cat "$tmp/err")"
a datasets create fmnist-test $fm/t10k-images-idx3-ubyte.gz --labels $fm/t10k-labels-idx1-ubyte.gz \
  --format idx > /dev/null || fail "datasets create"
a models list | grep -q "^small-cnn .*zoo small CNN" || fail "models list: $(a models list)"
a datasets get fmnist-test --output json | grep -q '"format":"idx"' || fail "datasets get: $(a datasets get fmnist-test --output json)"
a models create "bad/name" "$model" > /dev/null 2> "$tmp/err"
grep -q "INVALID_ARGUMENT.*bad name" "$tmp/err" || fail "bad record name: $(cat "$tmp/err")"
echo "ok   records: create, idempotent, ALREADY_EXISTS, list, get, bad names"

# 2. A job whose recipe names the records; the server pins their blobs.
cat > "$tmp/named.yaml" <<'YAML'
name: named_records
model: {name: small-cnn}
calibration_data: {name: fmnist-test, max_samples: 256, batch_size: 64, preprocess: {mean: [0.2860], std: [0.3530]}}
evaluation_data: {name: fmnist-test, max_samples: 1000, batch_size: 500, preprocess: {mean: [0.2860], std: [0.3530]}}
steps: [{fold_batch_norm: {}}, {calibrate: {}}, {evaluate: {}}, {export: {}}]
YAML
job=$(a submit "$tmp/named.yaml")
a watch "$job" --output json > "$tmp/watch" 2> "$tmp/watch.err" || fail "named-record job: $(tail -3 "$tmp/watch.err")"
# WatchJob carries the engine's log lines and the figures of the evaluate step.
"$python" - "$tmp/watch" <<'PY' || fail "watch events: $(head -c 600 "$tmp/watch")"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
lines = [e.get("message", "") for e in events]
for prefix in ("loaded:", "fold_batch_norm:", "calibrate:", "evaluate:", "export:"):
    assert any(l.startswith(prefix) for l in lines), (prefix, lines)
figures = [e["metrics"] for e in events if e.get("metrics")]
assert figures and "top1" in figures[0] and "output_sqnr_db" in figures[0], figures
assert events[-1]["state"] == "SUCCEEDED", events[-1]
seqs = [int(e["sequence"]) for e in events]
assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
print("ok   watch: %d events, log lines %s, figures %s" % (
    len(events), [l.split(":")[0] for l in lines if ":" in l], sorted(figures[0])[:4]))
PY
a report "$job" | "$python" -c "
import json, sys
m = json.load(sys.stdin)['metrics']
assert 0.5 < m['top1'] <= 1.0, m
print('ok   job from named records: top1', m['top1'])" || fail "report of the named-record job"

# The server checks a recipe's shape at submit: nothing malformed is queued.
jobs_before=$(a list | wc -l)
sed 's/^steps:/quantization: {param_bitwidth: 1}\nsteps:/' "$tmp/named.yaml" > "$tmp/bad.yaml"
a submit "$tmp/bad.yaml" > /dev/null 2> "$tmp/err"
grep -q "INVALID_ARGUMENT.*quantization.param_bitwidth must be in 2..16" "$tmp/err" || fail "malformed recipe: $(cat "$tmp/err")"
[ "$(a list | wc -l)" = "$jobs_before" ] || fail "a malformed recipe was queued"
echo "ok   malformed recipe rejected at submit: $(cat "$tmp/err")"

# 3. Tenant b sees none of it, by name or by hash.
b models get small-cnn > /dev/null 2> "$tmp/err"
grep -q NOT_FOUND "$tmp/err" || fail "b reads a's model: $(cat "$tmp/err")"
[ -z "$(b models list)" ] || fail "b lists a's models"
sha=$(sha256sum "$model" | cut -d' ' -f1)
b models create stolen "$sha" > /dev/null 2> "$tmp/err"
grep -q "FAILED_PRECONDITION.*not been uploaded" "$tmp/err" || fail "b names a's blob by hash: $(cat "$tmp/err")"
b submit "$tmp/named.yaml" > /dev/null 2> "$tmp/err"
grep -q "NOT_FOUND.*small-cnn" "$tmp/err" || fail "b submits with a's names: $(cat "$tmp/err")"
echo "ok   tenants: b cannot reach a's records or blobs"

# 4. The quota: the training set does not fit; usage is reported.
before=$(used a)
a upload $fm/train-images-idx3-ubyte.gz > /dev/null 2> "$tmp/err"
rc=$?
{ [ $rc -eq 1 ] && grep -q "RESOURCE_EXHAUSTED.*quota" "$tmp/err"; } || fail "over quota: rc $rc, $(cat "$tmp/err")"
[ "$(used a)" = "$before" ] || fail "a rejected upload changed usage"
[ "$(used b)" = 0 ] || fail "b's usage is $(used b)"
b upload "$model" > /dev/null || fail "b's own upload"
[ "$(used b)" = "$model_bytes" ] || fail "b's usage $(used b), expected $model_bytes"
echo "ok   quota: $(head -c 160 "$tmp/err")"

# 5. Deleting frees storage: the job (artifacts), then the records (inputs).
a delete "$job" > /dev/null 2> "$tmp/err" || fail "delete job: $(cat "$tmp/err")"
a status "$job" > /dev/null 2> "$tmp/err"
grep -q NOT_FOUND "$tmp/err" || fail "deleted job still there"
after_job=$(used a)
[ "$after_job" -lt "$before" ] || fail "deleting the job freed nothing ($before -> $after_job)"
a models delete small-cnn > /dev/null || fail "models delete"
a datasets delete fmnist-test > /dev/null || fail "datasets delete"
[ "$(used a)" = 0 ] || fail "a still holds $(used a) bytes"
[ "$(used b)" = "$model_bytes" ] || fail "a's deletes touched b's model"
ls "$tmp/data/blobs/${sha:0:2}/$sha" > /dev/null 2>&1 || fail "b's model file was removed"
echo "ok   deletes: $before -> $after_job -> 0 bytes for a; b keeps its copy"

echo "$failures failed"
[ "$failures" -eq 0 ]
