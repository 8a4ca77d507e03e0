# Sourced by the demo and the service tests:
#   start_qopt_server BINARY LOG [qopt-server options...]
# starts qopt-server in the background, waits until it listens and sets QOPT_SERVER
# (exported), QOPT_SERVER_PID and QOPT_METRICS (HOST:PORT of /metrics, when served).
start_qopt_server() {
  local binary=$1 log=$2
  shift 2
  "$binary" "$@" > "$log" 2>&1 &
  QOPT_SERVER_PID=$!
  QOPT_SERVER=""
  QOPT_METRICS=""
  for _ in $(seq 100); do
    QOPT_SERVER=$(sed -n 's/^qopt-server listening on \([^,]*\),.*/\1/p' "$log")
    QOPT_METRICS=$(sed -n 's/^qopt-server metrics on \([^/]*\)\/metrics$/\1/p' "$log")
    [ -n "$QOPT_SERVER" ] && break
    sleep 0.1
  done
  if [ -z "$QOPT_SERVER" ]; then
    echo "qopt-server did not start:"
    cat "$log"
    return 1
  fi
  export QOPT_SERVER
}
