#!/usr/bin/env bash
# Debian's real Prometheus server scrapes qopt-server's /metrics; the value of
# qopt_jobs{state="SUCCEEDED"} read back through Prometheus' HTTP API matches the jobs run.
set -u
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
prometheus=$(command -v prometheus || echo /usr/bin/prometheus)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

source "$src/scripts/qopt_server.sh"
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --local-workers 1 --metrics-listen 127.0.0.1:0 || exit 1
pids+=("$QOPT_SERVER_PID")
metrics=$QOPT_METRICS
[ -n "$metrics" ] || { echo "server serves no metrics"; cat "$tmp/server.log"; exit 1; }

job=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json" --watch --output json | tail -1)
[ -n "$job" ] || { echo "job did not run"; exit 1; }

web_port=$("$python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
cat > "$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: qopt
    static_configs:
      - targets: ['$metrics']
YAML
"$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$web_port" > "$tmp/prometheus.log" 2>&1 &
pids+=($!)

"$python" - "$web_port" <<'PY'
import json, sys, time, urllib.parse, urllib.request
url = "http://127.0.0.1:%s/api/v1/query?query=%s" % (
    sys.argv[1], urllib.parse.quote('qopt_jobs{state="SUCCEEDED"}'))
deadline = time.time() + 60
while time.time() < deadline:
    try:
        answer = json.load(urllib.request.urlopen(url, timeout=2))
        result = answer["data"]["result"]
        if result and float(result[0]["value"][1]) >= 1:
            print("ok   prometheus scraped qopt: qopt_jobs{state=\"SUCCEEDED\"} = %s" % result[0]["value"][1])
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
print("FAIL prometheus never reported a succeeded job")
sys.exit(1)
PY
