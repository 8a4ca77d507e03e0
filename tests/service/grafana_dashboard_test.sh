#!/usr/bin/env bash
# deploy/grafana/qopt-dashboard.json against a real qopt-server: after one job with
# analyze and mixed_precision steps through a local worker, every metric the dashboard
# queries is on the server's /metrics, every query parses, and both steps' durations were
# observed (dashboard_queries.py does the checking).
set -u
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

source "$src/scripts/qopt_server.sh"
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --local-workers 1 --metrics-listen 127.0.0.1:0 || exit 1
server_pid=$QOPT_SERVER_PID
[ -n "$QOPT_METRICS" ] || { echo "FAIL the server serves no metrics"; cat "$tmp/server.log"; exit 1; }

preprocess='"preprocess": {"mean": [0.2860], "std": [0.3530]}'
cat > "$tmp/recipe.json" <<JSON
{"name": "dashboard", "model": {"path": "$src/zoo/small_cnn.pt"},
 "calibration_data": {"path": "$data/train-images-idx3-ubyte.gz", "max_samples": 256, "batch_size": 64, $preprocess},
 "evaluation_data": {"path": "$data/t10k-images-idx3-ubyte.gz", "labels_path": "$data/t10k-labels-idx1-ubyte.gz",
                     "max_samples": 1000, "batch_size": 500, $preprocess},
 "steps": [{"calibrate": {}}, {"analyze": {"num_batches": 1, "activation_samples": 32}},
           {"mixed_precision": {"num_batches": 1}}, {"evaluate": {}}]}
JSON
job=$("$cli" submit "$tmp/recipe.json")
[ -n "$job" ] || { echo "FAIL submit printed no job id"; exit 1; }
"$cli" watch "$job" > "$tmp/watch.log" 2>&1
state=$("$cli" status "$job" --output json | "$python" -c "import json,sys; print(json.load(sys.stdin).get('state', ''))")
if [ "$state" != SUCCEEDED ]; then
  echo "FAIL job $job ended ${state:-in no state}, not SUCCEEDED:"
  tail -5 "$tmp/watch.log"
  exit 1
fi

"$python" "$src/tests/service/dashboard_queries.py" "$src/deploy/grafana/qopt-dashboard.json" \
  "http://$QOPT_METRICS/metrics" --step analyze --step mixed_precision
