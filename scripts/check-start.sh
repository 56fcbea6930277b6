#!/usr/bin/env bash
# The README's first command, as a newcomer types it: `cargo run --release` in the repo root must
# start the server with the repo's server.config and print its banner. Run with `--port 0` so it
# never collides with a server already on 8888; everything else is the default config. Then
# SIGTERM must end it with exit code 0.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --release --locked --quiet || exit 1
cargo run --release --locked --quiet -- --port 0 >"$log" 2>&1 &
pid=$!
deadline=$((SECONDS + 60))
until grep -q '^listening on http://127\.0\.0\.1:[0-9]' "$log"; do
  if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
    echo "check-start: \`cargo run --release\` printed no banner:" >&2
    cat "$log" >&2
    kill "$pid" 2>/dev/null
    exit 1
  fi
  sleep 0.1
done
grep -q '^broadcast: open http://127\.0\.0\.1:[0-9]*/capture' "$log" || { echo "check-start: no capture link" >&2; cat "$log" >&2; exit 1; }
# cargo runs the server as its child: signal the server itself, found by its parent.
server=$(pgrep -P "$pid" camrelay || echo "$pid")
kill -TERM "$server"
wait "$pid"
status=$?
[ "$status" -eq 0 ] || { echo "check-start: exit code $status after SIGTERM" >&2; cat "$log" >&2; exit 1; }
echo "check-start: \`cargo run --release\` served: $(head -n 1 "$log"); SIGTERM → exit 0"
