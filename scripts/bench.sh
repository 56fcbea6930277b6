#!/usr/bin/env bash
# The benchmark table of issue 4: every scenario against camrelay, each peer relay in bench/peers
# and the minimal-writer limit, in one run on this machine, each cell on a fresh server process.
# Prints one markdown table per scenario (medians of the repeats) and the targets' verdicts;
# raw relay-load JSON lines go to target/bench/results-DATE.jsonl. See docs/benchmarks.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/bench.sh [--quick] [--only SCENARIOS] [--servers LIST] [--repeats N] [--duration SECS]
  --quick           one run per cell (default: 3, and the table shows medians)
  --only a,c        only these scenarios (a-f, see docs/benchmarks.md)
  --servers LIST    comma-separated, from: ours,tokio,node,tornado,limit (default: all)
  --repeats N       runs per cell (overrides --quick)
  --duration SECS   measured seconds per run (default 10)
EOF
}

cd "$(dirname "$0")/.."
ROOT=$PWD
REPEATS=3
DURATION=10
ONLY=a,b,c,d,e,f
SERVERS=ours,tokio,node,tornado,limit
while (($#)); do
  case $1 in
  --quick) REPEATS=1 ;;
  --only) ONLY=${2:?--only needs a list}; shift ;;
  --servers) SERVERS=${2:?--servers needs a list}; shift ;;
  --repeats) REPEATS=${2:?--repeats needs a number}; shift ;;
  --duration) DURATION=${2:?--duration needs seconds}; shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ $REPEATS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }

# scenario -> relay-load arguments (one stream; sizes in bytes; rate 0 = as fast as TCP allows).
declare -A SCENARIO=(
  [a]="--watchers 10 --size 100000 --rate 60"
  [b]="--watchers 200 --size 10000 --rate 60"
  [c]="--watchers 1000 --size 1000 --rate 30"
  [d]="--watchers 10 --size 65536 --rate 0"
  [e]="--watchers 1000 --size 100 --rate 0"
  [f]="--watchers 10000 --idle"
)
IFS=, read -r -a scenarios <<<"$ONLY"
IFS=, read -r -a servers <<<"$SERVERS"
for s in "${scenarios[@]}"; do
  [[ -n ${SCENARIO[$s]:-} ]] || { echo "unknown scenario: $s (a-f)" >&2; exit 2; }
done
for s in "${servers[@]}"; do
  case $s in ours | tokio | node | tornado | limit) ;; *) echo "unknown server: $s" >&2; exit 2 ;; esac
done

# Warm-up 1 s, connecting, drain 2 s, start and stop: about 9 s a run beyond its duration here.
# A relay that cannot keep up with (e) is drained for up to relay-load's 60 s cap.
cells=$((${#scenarios[@]} * ${#servers[@]} * REPEATS))
seconds=$((cells * (DURATION + 9)))
if [[ ,$ONLY, == *,e,* ]]; then
  for s in "${servers[@]}"; do
    case $s in tokio | node | tornado) seconds=$((seconds + 60 * REPEATS)) ;; esac
  done
fi
echo "== $cells runs of ${DURATION} s (scenarios ${ONLY}; servers ${SERVERS}; ${REPEATS} each): about $(((seconds + 59) / 60)) min after the build"

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/camrelay-bench
OUT=$ROOT/target/bench
mkdir -p "$CACHE" "$OUT"
# Two runs at once would measure each other.
exec 9>"$OUT/bench.lock"
flock -n 9 || { echo "another scripts/bench.sh is running" >&2; exit 1; }
RESULTS=$OUT/results-$(date +%Y%m%d-%H%M%S).jsonl
LOGS=$OUT/logs
mkdir -p "$LOGS"
: >"$RESULTS"
echo "== machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r)"

apt_install() {
  echo "== installing $* (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
need_apt() { # command package: install a Debian package when its command is missing
  command -v "$1" >/dev/null || apt_install "$2"
}

uses() { [[ ,$SERVERS, == *,$1,* ]]; }

echo "== building"
# The main crate: the server and the load generator, copied so that a build elsewhere in this
# tree during the run cannot swap them between cells.
cargo build --release --locked --bin camrelay --bin relay-load
BIN=$OUT/bin
mkdir -p "$BIN"
cp target/release/camrelay target/release/relay-load "$BIN/"
echo "== camrelay and relay-load built from $(git describe --always --dirty 2>/dev/null || echo 'an unknown revision')"
# Each Rust peer is its own workspace with its own lock file and target dir (bench/.gitignore).
for crate in tokio-relay limit; do
  if { [[ $crate == tokio-relay ]] && uses tokio; } || { [[ $crate == limit ]] && uses limit; }; then
    cargo build --release --locked --manifest-path "bench/peers/$crate/Cargo.toml"
  fi
done
if uses node; then
  need_apt node nodejs
  need_apt npm npm
  # npm ci wipes node_modules: only when the lock file changed since the last install.
  if ! cmp -s bench/peers/node-ws/package-lock.json bench/peers/node-ws/node_modules/.bench-lock; then
    (cd bench/peers/node-ws && npm ci --no-audit --no-fund --loglevel=error &&
      cp package-lock.json node_modules/.bench-lock)
  fi
fi
# The Tornado peer and the contract check (bench/check_relay.py) both run in this venv.
VENV=$CACHE/tornado-venv
if ! cmp -s bench/peers/tornado/requirements.txt "$VENV/.bench-requirements"; then
  need_apt python3 python3
  python3 -m venv "$VENV" || { apt_install python3-venv && python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check -r bench/peers/tornado/requirements.txt
  cp bench/peers/tornado/requirements.txt "$VENV/.bench-requirements"
fi

# 10 000 idle watchers plus the load generator's own sockets need more than the usual 1024 fds.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < 12000)); then
  echo "warning: ulimit -n is $(ulimit -n); scenario (f) needs about 10 100 descriptors" >&2
fi

# The bench config for ours: room for scenario (f) and quiet logs. The queue bounds are the
# defaults, written out: when every watcher is past them the publisher is held back by TCP, and a
# message of kind 5 is cut only at twice the byte bound, which a watcher that keeps reading never
# reaches. Larger bounds only add latency and memory at the as-fast-as-possible scenarios.
cat >"$OUT/bench.config" <<'EOF'
address = 127.0.0.1
port = 0
loglevel = warn
max_connections = 20000
watcher_queue_bytes = 4194304
watcher_max_lag_ms = 2000
EOF

server_cmd() { # name -> the command line that starts it on port 0
  case $1 in
  ours) echo "$BIN/camrelay --config $OUT/bench.config --port 0" ;;
  tokio) echo "$ROOT/bench/peers/tokio-relay/target/release/tokio-relay 0" ;;
  node) echo "node $ROOT/bench/peers/node-ws/relay.js 0" ;;
  tornado) echo "$VENV/bin/python $ROOT/bench/peers/tornado/relay.py 0" ;;
  limit) echo "$ROOT/bench/peers/limit/target/release/relay-limit 0" ;;
  esac
}

SERVER_PID=
PORT=
start_server() { # name log: starts it, sets SERVER_PID and PORT once it prints its address
  local cmd
  cmd=$(server_cmd "$1")
  # Created here, not by the background job's redirection, which may come after the first read.
  : >"$2"
  # Word splitting of $cmd is wanted: paths here have no spaces (checked below).
  # shellcheck disable=SC2086
  $cmd >"$2" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + 20))
  PORT=
  while ((SECONDS < deadline)); do
    PORT=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$2" | head -n 1)
    [[ -n $PORT ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "server $1 did not start; its output:" >&2
  cat "$2" >&2
  return 1
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  # Ours drains for up to 2 s on SIGTERM; past 5 s, stop waiting.
  local deadline=$((SECONDS + 5))
  while kill -0 "$SERVER_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
trap stop_server EXIT
[[ $ROOT != *" "* && $VENV != *" "* ]] || { echo "bench.sh needs paths without spaces" >&2; exit 1; }

# A peer that does not relay byte-identically would make its figures meaningless: check each once.
echo "== checking the relay contract"
for s in "${servers[@]}"; do
  start_server "$s" "$LOGS/check-$s.log"
  printf '%-8s ' "$s"
  timeout 30 "$VENV/bin/python" bench/check_relay.py "ws://127.0.0.1:$PORT"
  stop_server
done

echo "== raw results: $RESULTS"
# The machine may be shared: a busy one shows in latency first, so say how busy it was.
echo "== load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for sc in "${scenarios[@]}"; do
  for run in $(seq "$REPEATS"); do
    # Servers alternate within each repeat, so a slow minute on this shared machine is spread over all.
    for s in "${servers[@]}"; do
      start_server "$s" "$LOGS/$sc-$s-$run.server.log"
      # shellcheck disable=SC2086 # the scenario's arguments are meant to split
      # The time limit only guards against a hung run; a normal one ends 3 s after its duration.
      if ! timeout $((DURATION + 120)) "$BIN/relay-load" --url "ws://127.0.0.1:$PORT" ${SCENARIO[$sc]} \
        --duration "$DURATION" --server-pid "$SERVER_PID" --label "$sc:$s:$run" --json-only \
        >>"$RESULTS" 2>"$LOGS/$sc-$s-$run.load.log"; then
        echo "relay-load failed for $sc/$s run $run (see $LOGS/$sc-$s-$run.load.log)" >&2
      fi
      stop_server
      printf '%s/%s/%s ' "$sc" "$s" "$run"
    done
  done
  echo
done

echo "== load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 bench/report.py "$RESULTS"
