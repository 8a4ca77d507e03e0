# Sourced by service tests: a job that stays in AdaRound far longer than any test waits.
#
#   submit_long_adaround_job NAME  (needs $cli, $src, $tmp)
#
# Submits ResNet18 at W4A8 with a million AdaRound iterations, follows it with
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
