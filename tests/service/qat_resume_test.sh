#!/usr/bin/env bash
# A QAT job whose worker dies resumes on another worker from its last epoch checkpoint:
#  - worker host-a runs the job; once the server has stored a checkpoint (event
#    "checkpoint stored"), host-a is killed with SIGKILL (its zygote and the job's child die
#    with it);
#  - host-b starts; the lease expires, the job is queued again and host-b leases it with
#    the checkpoint, fetches it and the qat step logs "resumed from epoch N";
#  - the job SUCCEEDS on its second attempt, and no epoch up to N is trained again.
# Exits 77 (skipped) when this build has no qat step.
set -u
source "${QOPT_SOURCE_DIR:?}/tests/service/service_lib.sh"
source "$src/scripts/qopt_server.sh"
worker_bin=${QOPT_WORKER_BIN:?}
worker_pids=()
trap 'kill -9 ${worker_pids[*]} 2>/dev/null; cleanup' EXIT

cat > "$tmp/auth.json" <<'JSON'
{"tenants": {"token-a": "team-a"}, "worker_tokens": ["token-w"]}
JSON
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --auth-file "$tmp/auth.json" --lease-ms 6000 || exit 1
server_pid=$QOPT_SERVER_PID
export QOPT_TOKEN=token-a
start_worker() {  # start_worker NAME: a worker of its own host (own id and blob cache)
  QOPT_TOKEN=token-w "$worker_bin" --server "$QOPT_SERVER" --worker-id "$1" --cache-dir "$tmp/cache-$1" \
    > "$tmp/$1.log" 2>&1 &
  worker_pids+=($!)
}
# The final state of a job, waiting at most $2 seconds.
wait_final() {
  local state=""
  for _ in $(seq $(($2 * 5))); do
    state=$(job_field "$1" state)
    case "$state" in SUCCEEDED|FAILED|CANCELLED) break ;; esac
    sleep 0.2
  done
  echo "$state"
}

start_worker host-a
host_a=${worker_pids[0]}
data=/usr/share/datasets/fashion-mnist
cat > "$tmp/qat.json" <<JSON
{"name": "qat-resume", "model": {"path": "$src/zoo/resnet18.pt"},
 "calibration_data": {"path": "$data/train-images-idx3-ubyte.gz", "labels_path": "$data/train-labels-idx1-ubyte.gz",
                      "max_samples": 2560, "shuffle": true, "seed": 1, "batch_size": 64,
                      "preprocess": {"mean": [0.2860], "std": [0.3530]}},
 "evaluation_data": {"path": "$data/t10k-images-idx3-ubyte.gz", "labels_path": "$data/t10k-labels-idx1-ubyte.gz",
                     "max_samples": 1000, "batch_size": 500, "preprocess": {"mean": [0.2860], "std": [0.3530]}},
 "quantization": {"param_bitwidth": 8, "activation_bitwidth": 8, "per_channel": true},
 "steps": [{"fold_batch_norm": {}}, {"calibrate": {}},
           {"qat": {"epochs": 3, "batch_size": 64, "max_steps_per_epoch": 40}}, {"evaluate": {}}]}
JSON
if ! job=$("$cli" submit "$tmp/qat.json" 2> "$tmp/submit.err"); then
  if grep -q qat "$tmp/submit.err"; then
    echo "SKIP this build has no qat step: $(cat "$tmp/submit.err")"
    exit 77
  fi
  echo "FAIL submit: $(cat "$tmp/submit.err")"
  exit 1
fi
"$cli" watch "$job" > "$tmp/watch.log" 2>&1 &
watch_pid=$!

# host-a trains until the server holds a checkpoint (and the epoch's line, which comes
# with the next heartbeat, is in the history), then dies without a word.
stored=""
for _ in $(seq 3000); do  # 300 s
  grep -q "checkpoint stored" "$tmp/watch.log" && grep -q "^qat: epoch" "$tmp/watch.log" && { stored=yes; break; }
  kill -0 "$watch_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$stored" ]; then
  echo "FAIL no checkpoint stored within 300 s (job $(job_field "$job" state): $(job_field "$job" error)):"
  tail -5 "$tmp/watch.log" "$tmp/host-a.log"
  exit 1
fi
host_a_children=$(pgrep -P "$host_a" | tr '\n' ' ')
kill -9 "$host_a"
wait "$host_a" 2>/dev/null
state=$(job_field "$job" state)
[ "$state" = RUNNING ] || { echo "FAIL job $job is $state when host-a died: the epochs are too short for this test"; exit 1; }
grep -q "job $job leased" "$tmp/host-a.log" || fail "host-a did not run the job"
grep -q "job $job: checkpoint uploaded" "$tmp/host-a.log" || fail "host-a did not say it uploaded the checkpoint"
sleep 1
for pid in $host_a_children; do
  # A zombie (state Z) has died; only its parent's reaper has not collected it yet.
  pstate=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
  [ -n "$pstate" ] && [ "$pstate" != Z ] && [ "$pstate" != X ] &&
    fail "process $pid of host-a ($(tr '\0' ' ' < "/proc/$pid/cmdline")) outlived it"
done
epochs_before=$(grep -o "^qat: epoch [0-9]*/3" "$tmp/watch.log" | uniq | wc -l)
echo "ok   host-a killed after $epochs_before epoch(s) with a checkpoint stored"

start_worker host-b
state=$(wait_final "$job" 600)
wait "$watch_pid" 2>/dev/null
watch_pid=""
"$cli" watch "$job" > "$tmp/history.log" 2>&1  # the whole history, replayed
[ "$state" = SUCCEEDED ] || fail "job $job ended $state: $(job_field "$job" error)"
attempts=$(job_field "$job" attempts)
[ "$attempts" = 2 ] || fail "job $job took $attempts attempts, expected 2"
grep -q "leased by host-b; it resumes from the job's checkpoint" "$tmp/history.log" ||
  fail "host-b's lease does not say it resumes: $(grep "leased by" "$tmp/history.log")"
grep -q "job $job: resuming from the checkpoint of an earlier attempt" "$tmp/host-b.log" ||
  fail "host-b did not fetch the checkpoint: $(grep "job $job" "$tmp/host-b.log")"
resumed=$(grep -o -m1 "resumed from epoch [0-9]*" "$tmp/history.log" | grep -o "[0-9]*$")
if [ -z "$resumed" ]; then
  fail "no 'resumed from epoch N' in the job's history"
else
  [ "$resumed" -ge 1 ] || fail "resumed from epoch $resumed"
  # After the resume, the epochs still to train and none of those the checkpoint holds
  # (uniq: a status line may repeat an epoch's line).
  after=$(sed -n "/resumed from epoch $resumed/,\$p" "$tmp/history.log" | grep -o "^qat: epoch [0-9]*/3" | uniq |
          grep -o "[0-9]*/" | tr -d / | tr '\n' ' ')
  expected=$(seq -s ' ' $((resumed + 1)) 3)
  [ "${after% }" = "$expected" ] || fail "epochs after resuming from epoch $resumed: '$after', expected '$expected'"
fi
[ $failures -eq 0 ] && echo "ok   host-b resumed job $job from epoch $resumed of 3; SUCCEEDED after $attempts attempts"
exit $failures
