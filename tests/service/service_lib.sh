# Sourced by service tests (after `set -u`): the binaries and sources from ctest's
# environment, a temporary folder, a cleanup that stops the server and `qopt watch` the
# test started ($server_pid, $watch_pid), a failure count, and:
#
#   fail MESSAGE                   counts a failure and prints it
#   job_field JOB_ID FIELD         a field of `qopt status --output json`
#   submit_long_adaround_job NAME  a job that stays in AdaRound far longer than any test waits
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
src=${QOPT_SOURCE_DIR:?}
python=${QOPT_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
server_pid=""
watch_pid=""
failures=0
cleanup() {
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
job_field() {  # job_field JOB_ID FIELD: a field of `qopt status --output json`
  "$cli" status "$1" --output json | "$python" -c "import json,sys; print(json.load(sys.stdin).get('$2', ''))"
}

# submit_long_adaround_job NAME: submits ResNet18 at W4A8 with a million AdaRound iterations, follows it with
# `qopt watch` into $tmp/watch.log and returns once AdaRound's first iteration progress is
# there (60 s at most; otherwise it fails the test). Sets job, watch_pid and progress (the
# first AdaRound progress line).
submit_long_adaround_job() {
  local data=/usr/share/datasets/fashion-mnist
  cat > "$tmp/adaround.json" <<JSON
{"name": "$1", "model": {"path": "$src/zoo/resnet18.pt"},
 "calibration_data": {"path": "$data/train-images-idx3-ubyte.gz", "max_samples": 256, "batch_size": 64,
                      "preprocess": {"mean": [0.2860], "std": [0.3530]}},
 "quantization": {"param_bitwidth": 4, "activation_bitwidth": 8, "per_channel": true},
 "steps": [{"fold_batch_norm": {}}, {"calibrate": {}}, {"adaround": {"num_iterations": 1000000}}, {"export": {}}]}
JSON
  job=$("$cli" submit "$tmp/adaround.json")
  [ -n "$job" ] || { echo "FAIL submit printed no job id"; exit 1; }
  "$cli" watch "$job" > "$tmp/watch.log" 2>&1 &
  watch_pid=$!
  progress=""
  for _ in $(seq 600); do
    progress=$(grep -m1 -E "conv1 \(1/[0-9]+\) iteration [0-9]+/1000000" "$tmp/watch.log")
    [ -n "$progress" ] && return 0
    sleep 0.1
  done
  echo "FAIL no AdaRound progress within 60 s:"
  tail -5 "$tmp/watch.log"
  exit 1
}
