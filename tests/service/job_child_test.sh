#!/usr/bin/env bash
# Each job runs in a sandboxed child forked from the worker's zygote. Through the service:
#  - kill -9 of the job's child in the middle of AdaRound fails that job with the child's
#    fate ("killed by SIGKILL"); the worker process lives on and runs the next job;
#  - a hostile model (aten::from_file) fails with the op named and the model named as the
#    caller knows it, never the worker's cache or job folder;
#  - no event, error or report of any of these jobs shows a worker path;
#  - a server that stops answering for longer than the lease makes the worker stop the job.
set -u
source "${QOPT_SOURCE_DIR:?}/tests/service/service_lib.sh"
fixtures=${QOPT_FIXTURES:?}
wait_done() {  # wait_done JOB_ID: its final state, waiting at most 120 s
  local state=""
  for _ in $(seq 600); do
    state=$(job_field "$1" state)
    case "$state" in SUCCEEDED|FAILED|CANCELLED) break ;; esac
    sleep 0.2
  done
  echo "$state"
}

source "$src/scripts/qopt_server.sh"
# The workers' folders live under this TMPDIR: nothing the callers see may name it.
export TMPDIR=$tmp/worker-tmp
mkdir -p "$TMPDIR"
chmod 755 "$tmp" "$TMPDIR"
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --local-workers 1 --lease-ms 2000 || exit 1
server_pid=$QOPT_SERVER_PID

# The worker the server started, its zygote, and (once a job runs) the job's child.
child_of() { pgrep -P "$1" | head -1; }
worker=""
for _ in $(seq 100); do
  worker=$(child_of "$server_pid")
  [ -n "$worker" ] && break
  sleep 0.1
done
[ -n "$worker" ] || { echo "FAIL the server started no worker"; exit 1; }

submit_long_adaround_job killed-child

zygote=$(pgrep -P "$worker" -f "qopt-worker zygote" | head -1)
[ -n "$zygote" ] || { echo "FAIL worker $worker has no zygote: $(pgrep -a -P "$worker")"; exit 1; }
child=$(child_of "$zygote")
[ -n "$child" ] || { echo "FAIL the zygote has no job child"; exit 1; }
child_uid=$(awk '/^Uid:/ {print $2}' "/proc/$child/status")
kill -9 "$child"
state=$(wait_done "$job")
wait "$watch_pid" 2>/dev/null
watch_pid=""
error=$(job_field "$job" error)
[ "$state" = FAILED ] || fail "job $job is $state after its child was killed"
echo "$error" | grep -q "killed by SIGKILL" || fail "error of the killed job: $error"
kill -0 "$worker" 2>/dev/null || fail "the worker $worker exited with its job's child"
[ "$(child_of "$server_pid")" = "$worker" ] || fail "the server had to start another worker"
[ $failures -eq 0 ] && echo "ok   kill -9 of the job's child (uid $child_uid): job FAILED: $error; worker $worker lives on"

# A model that reads a file at import: refused, named as the caller knows it.
hostile=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json" --model "$fixtures/hostile_from_file.pt")
state=$(wait_done "$hostile")
herror=$(job_field "$hostile" error)
[ "$state" = FAILED ] || fail "hostile job $hostile is $state"
echo "$herror" | grep -q "aten::from_file" || fail "hostile job's error does not name the op: $herror"
echo "$herror" | grep -qE "model|blob" || fail "hostile job's error does not name the model: $herror"
[ $failures -eq 0 ] && echo "ok   hostile model refused: $herror"

# The same worker then runs a job to the end (a fresh zygote child).
next=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json")
"$cli" watch "$next" > "$tmp/next.log" 2>&1 || fail "the next job did not succeed: $(job_field "$next" error)"
[ "$(child_of "$server_pid")" = "$worker" ] || fail "the next job ran on another worker"

# Nothing the callers saw names the worker's folders.
for j in "$job" "$hostile" "$next"; do
  "$cli" status "$j" --output json > "$tmp/status-$j.json"
  "$cli" watch "$j" > "$tmp/events-$j.log" 2>&1  # a finished job's events, replayed
  "$cli" report "$j" >> "$tmp/events-$j.log" 2>&1
done
if grep -l -E "$TMPDIR|qopt-worker-cache|qopt-worker-[0-9]+" "$tmp"/watch.log "$tmp"/next.log "$tmp"/status-*.json \
    "$tmp"/events-*.log; then
  fail "worker paths shown to callers: $(grep -h -o -E "[^ \"]*($TMPDIR|qopt-worker-cache|qopt-worker-[0-9]+)[^ \"]*" \
    "$tmp"/watch.log "$tmp"/next.log "$tmp"/status-*.json "$tmp"/events-*.log | sort -u | head -5)"
else
  echo "ok   no worker path in $(cat "$tmp"/watch.log "$tmp"/next.log "$tmp"/status-*.json "$tmp"/events-*.log | wc -l) lines of events, errors and reports"
fi

# A server that stops answering (SIGSTOP) for longer than the lease: the worker stops the
# job, which the server gives out again once it answers, instead of computing for nothing.
kill "$watch_pid" 2>/dev/null
submit_long_adaround_job server-gone
child=$(child_of "$zygote")
kill -STOP "$server_pid"
gone=""
for _ in $(seq 250); do  # the lease (2 s, floored at 10 s by the worker) plus a heartbeat's deadline
  kill -0 "$child" 2>/dev/null || { gone=yes; break; }
  sleep 0.1
done
kill -CONT "$server_pid"
[ -n "$gone" ] || fail "the job's child still runs 25 s after the server stopped answering"
grep -q "job $job: the server was unreachable" "$tmp/server.log" || fail "the worker did not say why it stopped the job"
"$cli" cancel "$job" > /dev/null
[ $failures -eq 0 ] && echo "ok   server unreachable past the lease: the worker stopped the job's child $child"
exit $failures
