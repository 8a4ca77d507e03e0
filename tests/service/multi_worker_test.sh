#!/usr/bin/env bash
# Several workers share one server: qopt-server with no local workers, and two
# qopt-worker processes started on their own (as on two hosts: separate worker ids and
# blob caches, a worker token). Four jobs are queued at once; every job succeeds and both
# workers run some of them.
set -u
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
src=${QOPT_SOURCE_DIR:?}
worker_bin=${QOPT_WORKER_BIN:-$(dirname "$server_bin")/../worker/qopt-worker}
tmp=$(mktemp -d)
failures=0
QOPT_SERVER_PID=""
pids=()
trap 'kill ${pids[*]} $QOPT_SERVER_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
source "$src/scripts/qopt_server.sh"

cat > "$tmp/auth.json" <<'JSON'
{"tenants": {"token-a": "team-a"}, "worker_tokens": ["token-w"]}
JSON
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --auth-file "$tmp/auth.json" || exit 1
for host in host-a host-b; do
  QOPT_TOKEN=token-w "$worker_bin" --server "$QOPT_SERVER" --worker-id "$host" \
    --cache-dir "$tmp/cache-$host" > "$tmp/$host.log" 2>&1 &
  pids+=($!)
done

sed 's/max_samples: 512/max_samples: 128/' "$src/examples/recipes/fashion_mnist_w8a8.yaml" > "$tmp/recipe.yaml"
sed -i "s|\.\./\.\./zoo/|$src/zoo/|" "$tmp/recipe.yaml"
jobs=()
for i in 1 2 3 4; do
  jobs+=("$(QOPT_TOKEN=token-a "$cli" submit "$tmp/recipe.yaml" --request-id "multi-$i")")
done
for job in "${jobs[@]}"; do
  QOPT_TOKEN=token-a "$cli" watch "$job" > /dev/null 2>&1 || fail "job $job did not succeed"
done
a=$(grep -c "job .* leased" "$tmp/host-a.log")
b=$(grep -c "job .* leased" "$tmp/host-b.log")
[ $((a + b)) -eq 4 ] || fail "workers leased $a + $b jobs, expected 4"
{ [ "$a" -ge 1 ] && [ "$b" -ge 1 ]; } || fail "one worker ran every job (host-a $a, host-b $b)"
[ -n "$(ls "$tmp/cache-host-a")" ] && [ -n "$(ls "$tmp/cache-host-b")" ] || fail "a worker cached no blobs"
echo "ok   4 jobs on 2 workers: host-a ran $a, host-b ran $b"
echo "$failures failed"
[ "$failures" -eq 0 ]
