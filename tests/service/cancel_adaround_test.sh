#!/usr/bin/env bash
# A job cancelled in the middle of AdaRound, through the service: the cancellation reaches
# the engine inside a layer's iterations (not at the end of the step), the job is
# CANCELLED within 2 s with no artifacts, `qopt watch` exits 4, and the same worker then
# runs the next job to SUCCEEDED.
set -u
source "${QOPT_SOURCE_DIR:?}/tests/service/service_lib.sh"

source "$src/scripts/qopt_server.sh"
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --local-workers 1 --lease-ms 2000 || exit 1
server_pid=$QOPT_SERVER_PID

submit_long_adaround_job cancel-mid-adaround

"$cli" cancel "$job" > /dev/null || fail "cancel $job"
start=$(date +%s.%N)
state=""
for _ in $(seq 20); do
  state=$(job_field "$job" state)
  [ "$state" = CANCELLED ] && break
  sleep 0.1
done
elapsed=$("$python" -c "print('%.2f' % ($(date +%s.%N) - $start))")
[ "$state" = CANCELLED ] || fail "job $job is $state 2 s after cancel"
wait "$watch_pid"
rc=$?
watch_pid=""
[ $rc -eq 4 ] || fail "qopt watch exited $rc for a cancelled job, expected 4"
artifacts=$("$cli" status "$job" --output json | "$python" -c "import json,sys; print(len(json.load(sys.stdin).get('artifacts', [])))")
[ "$artifacts" = 0 ] || fail "cancelled job $job has $artifacts artifacts"
# The last progress the job reported was inside AdaRound's first layer, short of its end.
last=$(grep -E "iteration [0-9]+/1000000" "$tmp/watch.log" | tail -1)
echo "$last" | grep -qE "\(1/[0-9]+\) iteration [0-9]+/1000000" || fail "last progress not in the first layer: $last"
echo "ok   cancel mid-AdaRound: CANCELLED in $elapsed s; last progress: ${last##*] }"

# The worker is free again: a small job runs to the end.
next=$("$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json")
"$cli" watch "$next" > /dev/null 2>&1 || fail "the job after the cancelled one did not succeed: $(job_field "$next" error)"
[ $failures -eq 0 ] && echo "ok   next job $next: $(job_field "$next" state)"
exit $failures
