#!/usr/bin/env bash
# The soak of issue 5: one publisher at 30 × 50 KB (key frame every 30 messages) to 200 watchers,
# a quarter of them joining, stalling and leaving at random, for SECONDS (default 600), against a
# fresh release server on a free port. Prints the server's RSS and connection count every 10 s,
# then a JSON line (stdout) and a table: well-behaved loss (must be 0), skips and 1008 closes of
# stalled watchers, RSS min/max after warm-up, the server's connection count at the end.
# Extra arguments go to relay-load (e.g. --seed 7 --churn 0.5 --report-every 30).
set -euo pipefail

SECS=${1:-600}
[[ $SECS =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/soak.sh [SECONDS] [relay-load options]" >&2; exit 2; }
shift $(($# > 0 ? 1 : 0))
cd "$(dirname "$0")/.."
ROOT=$PWD

echo "== building" >&2
cargo build --release --locked --bin camrelay --bin relay-load >&2

TMP=$(mktemp -d)
SERVER_PID=
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 5))
    while kill -0 "$SERVER_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/server.config" <<'CONF'
address = 127.0.0.1
port = 0
loglevel = warn
max_connections = 20000
CONF

: >"$TMP/server.log"
"$ROOT/target/release/camrelay" --config "$TMP/server.config" --public-dir "$ROOT/public" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
PORT=
deadline=$((SECONDS + 20))
while ((SECONDS < deadline)); do
  PORT=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$TMP/server.log" | head -n 1)
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.05
done
if [[ -z $PORT ]]; then
  echo "the server did not start; its output:" >&2
  cat "$TMP/server.log" >&2
  exit 1
fi
echo "== server pid $SERVER_PID on port $PORT; soak for $SECS s" >&2

status=0
"$ROOT/target/release/relay-load" --url "ws://127.0.0.1:$PORT" --soak --duration "$SECS" \
  --server-pid "$SERVER_PID" --label "soak-${SECS}s" "$@" || status=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "the server died during the soak; its output:" >&2
  cat "$TMP/server.log" >&2
  exit 1
fi
if [[ -s $TMP/server.log ]]; then
  echo "== server log (warnings and errors):" >&2
  grep -v '^listening on\|^broadcast:\|^watch:' "$TMP/server.log" | tail -n 20 >&2 || true
fi
exit "$status"
