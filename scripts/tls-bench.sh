#!/usr/bin/env bash
# The TLS benchmark of issue 6: the same relay-load scenarios against a plain (ws://) server and
# a TLS (wss://, self-signed certificate) server, alternating plain and TLS runs, and the medians
# with the TLS/plain ratio of delivered MB/s and of server CPU per delivered message.
# Raw relay-load JSON lines go to target/bench/tls-DATE.jsonl.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/tls-bench.sh [--repeats N] [--duration SECS] [--only d,b]
  --repeats N       runs per scenario and server (default 3; the table shows medians)
  --duration SECS   measured seconds per run (default 10)
  --only LIST       scenarios: d = 10 watchers x 64 KB as fast as possible,
                    b = 200 watchers x 10 KB x 60/s (default d,b)
USAGE
}

cd "$(dirname "$0")/.."
ROOT=$PWD
REPEATS=3
DURATION=10
ONLY=d,b
while (($#)); do
  case $1 in
  --repeats) REPEATS=${2:?--repeats needs a number}; shift ;;
  --duration) DURATION=${2:?--duration needs seconds}; shift ;;
  --only) ONLY=${2:?--only needs a list}; shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ $REPEATS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
declare -A SCENARIO=(
  [d]="--watchers 10 --size 65536 --rate 0"
  [b]="--watchers 200 --size 10000 --rate 60"
)
IFS=, read -r -a scenarios <<<"$ONLY"
for s in "${scenarios[@]}"; do
  [[ -n ${SCENARIO[$s]:-} ]] || { echo "unknown scenario: $s (d, b)" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "tls-bench.sh needs python3 for the medians" >&2; exit 1; }

echo "== building" >&2
cargo build --release --locked --bin camrelay --bin relay-load >&2

OUT=$ROOT/target/bench
mkdir -p "$OUT"
RESULTS=$OUT/tls-$(date +%Y%m%d-%H%M%S).jsonl
: >"$RESULTS"
TMP=$(mktemp -d)
mkdir -p "$TMP/plain" "$TMP/tls"
BASE='address = 127.0.0.1
port = 0
loglevel = warn
max_connections = 20000
watcher_queue_bytes = 4194304
watcher_max_lag_ms = 2000'
printf '%s\n' "$BASE" >"$TMP/plain/server.config"
printf '%s\ntls_self_signed = true\n' "$BASE" >"$TMP/tls/server.config"

declare -A PID=() PORT=()
# shellcheck disable=SC2317  # called from the EXIT trap
stop_servers() {
  local kind
  for kind in "${!PID[@]}"; do
    kill -TERM "${PID[$kind]}" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 5))
  for kind in "${!PID[@]}"; do
    while kill -0 "${PID[$kind]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    kill -KILL "${PID[$kind]}" 2>/dev/null || true
    wait "${PID[$kind]}" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap stop_servers EXIT

start_server() { # plain|tls: starts it, sets PID[kind] and PORT[kind] from its first line
  local kind=$1 scheme=http log=$TMP/$1/server.log
  [[ $kind == tls ]] && scheme=https
  : >"$log"
  "$ROOT/target/release/camrelay" --config "$TMP/$kind/server.config" --public-dir "$ROOT/public" >"$log" 2>&1 &
  PID[$kind]=$!
  local deadline=$((SECONDS + 20)) port=
  while ((SECONDS < deadline)); do
    port=$(sed -n "s|^listening on $scheme://127\\.0\\.0\\.1:\\([0-9][0-9]*\\).*|\\1|p" "$log" | head -n 1)
    [[ -n $port ]] && break
    kill -0 "${PID[$kind]}" 2>/dev/null || break
    sleep 0.05
  done
  if [[ -z $port ]]; then
    echo "the $kind server did not start; its output:" >&2
    cat "$log" >&2
    return 1
  fi
  PORT[$kind]=$port
}

start_server plain
start_server tls
CERT=$TMP/tls/camrelay-self-signed.pem
[[ -s $CERT ]] || { echo "no certificate at $CERT" >&2; exit 1; }
echo "== plain ws://127.0.0.1:${PORT[plain]} (pid ${PID[plain]}), tls wss://127.0.0.1:${PORT[tls]} (pid ${PID[tls]})" >&2

for sc in "${scenarios[@]}"; do
  for run in $(seq 1 "$REPEATS"); do
    for kind in plain tls; do
      if [[ $kind == tls ]]; then
        url=(--url "wss://127.0.0.1:${PORT[tls]}" --ca "$CERT")
      else
        url=(--url "ws://127.0.0.1:${PORT[plain]}")
      fi
      echo "== scenario $sc, $kind, run $run/$REPEATS" >&2
      # Word splitting of the scenario's flags is wanted.
      # shellcheck disable=SC2086
      "$ROOT/target/release/relay-load" "${url[@]}" ${SCENARIO[$sc]} --duration "$DURATION" \
        --server-pid "${PID[$kind]}" --label "$sc:$kind:$run" --json-only | tee -a "$RESULTS"
    done
  done
done

echo "== results in $RESULTS" >&2
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
cells = {}
for r in rows:
    sc, kind, _ = r["label"].split(":")
    cells.setdefault(sc, {}).setdefault(kind, []).append(r)
desc = {"d": "10 watchers x 64 KB, as fast as possible", "b": "200 watchers x 10 KB x 60/s"}
def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None
def fmt(v, d):
    return "-" if v is None else f"{v:.{d}f}"
for sc, kinds in cells.items():
    p, t = kinds.get("plain", []), kinds.get("tls", [])
    print(f"\n### scenario {sc}: {desc.get(sc, sc)} (medians of {len(p)} plain and {len(t)} TLS runs)\n")
    print("| | plain | TLS | TLS/plain |")
    print("|---|---:|---:|---:|")
    for key, name, d in [("delivered_mb_s", "delivered MB/s", 1), ("msgs_per_s", "delivered msg/s", 0),
                         ("cpu_us_per_msg", "server CPU us/msg", 2), ("lat_p50_us", "latency p50 us", 0),
                         ("lat_p99_us", "latency p99 us", 0), ("lost", "lost", 0)]:
        a, b = med(p, key), med(t, key)
        ratio = f"{b / a:.2f}" if a and b is not None else "-"
        print(f"| {name} | {fmt(a, d)} | {fmt(b, d)} | {ratio} |")
print("\nLatency over plain runs to the kernel's receive time, over TLS to the return of the read that")
print("decrypted the message (records carry no receive timestamp), so the TLS figure includes the")
print("generator's own decryption and turn-taking. CPU per message is the server's alone.")
PY
