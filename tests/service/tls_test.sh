#!/usr/bin/env bash
# qopt-server over TLS from a certificate / key pair: the CLI and the server's local
# worker trusting that certificate run a job; a plaintext client is refused.
set -u
server_bin=${QOPT_SERVER_BIN:?}
cli=${QOPT_CLI:?}
src=${QOPT_SOURCE_DIR:?}
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2> /dev/null || { echo "openssl failed"; exit 1; }
source "$src/scripts/qopt_server.sh"
start_qopt_server "$server_bin" "$tmp/server.log" --listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --local-workers 1 --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" || exit 1
server_pid=$QOPT_SERVER_PID

if "$cli" list > /dev/null 2> "$tmp/err"; then
  echo "FAIL a plaintext client was served"; exit 1
fi
grep -q UNAVAILABLE "$tmp/err" || { echo "FAIL plaintext client: $(cat "$tmp/err")"; exit 1; }
QOPT_TLS_CA=$tmp/cert.pem "$cli" submit "$src/examples/recipes/fashion_mnist_w8a8.json" --watch > "$tmp/watch.log" 2>&1 \
  || { echo "FAIL job over TLS: $(tail -3 "$tmp/watch.log")"; exit 1; }
echo "ok   TLS: job succeeded over TLS, plaintext client refused"
