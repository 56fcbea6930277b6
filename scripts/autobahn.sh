#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client (cases 1-11; 12.* and 13.* need
# permessage-deflate, which we do not negotiate) against the server's /ws/echo.
#
# Self-installing: needs CPython 2.7 (pyenv's versions/2.7.*, or python2 on PATH)
# and python3 (to bootstrap virtualenv<20.22). Without Python 2 it prints
# "SKIP: ..." and exits 0. The virtualenv is cached in
#   ${CAMRELAY_AUTOBAHN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camrelay-autobahn}
# Reports land in target/autobahn/reports/servers/ (index.html for humans).
#
# Environment:
#   CAMRELAY_BIN=path     use this server binary instead of `cargo build --release --locked`
#   AUTOBAHN_CASES='["1.*"]'  JSON list of cases to run (default ["*"])
#   AUTOBAHN_TIMEOUT=600  seconds allowed for wstest
# Exit: 0 all cases OK/NON-STRICT/INFORMATIONAL (or skipped), 1 failures/errors.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/autobahn"
CACHE="${CAMRELAY_AUTOBAHN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camrelay-autobahn}"
WORK="$ROOT/target/autobahn"
TIMEOUT="${AUTOBAHN_TIMEOUT:-600}"
CASES="${AUTOBAHN_CASES:-[\"*\"]}"

log() { echo "autobahn: $*" >&2; }
die() { echo "autobahn: ERROR: $*" >&2; exit 1; }

# --- find CPython 2.7 --------------------------------------------------------
is_py27() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; }

find_py27() {
    local root cand
    if command -v pyenv >/dev/null 2>&1 && root="$(pyenv root 2>/dev/null)"; then
        # Newest 2.7.x first.
        for cand in $(printf '%s\n' "$root"/versions/2.7.*/bin/python | sort -V -r); do
            if is_py27 "$cand"; then echo "$cand"; return 0; fi
        done
    fi
    for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7.*/bin/python; do
        if is_py27 "$cand"; then echo "$cand"; return 0; fi
    done
    for cand in python2.7 python2; do
        if cand="$(command -v "$cand" 2>/dev/null)" && is_py27 "$cand"; then echo "$cand"; return 0; fi
    done
    return 1
}

if ! PY27="$(find_py27)"; then
    echo "SKIP: no Python 2 (CPython 2.7) found (looked in \$(pyenv root)/versions/2.7.*, python2.7 and python2 on PATH); Autobahn|Testsuite needs it, so the conformance run is skipped."
    exit 0
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to bootstrap virtualenv for Python 2"
command -v cargo >/dev/null 2>&1 || [ -n "${CAMRELAY_BIN:-}" ] || die "cargo not found"
log "Python 2: $PY27 ($("$PY27" -V 2>&1))"

# --- cached virtualenv with autobahntestsuite --------------------------------
VENV="$CACHE/venv"
STAMP="$VENV/.camrelay-stamp"
WANT="$(cat "$HERE/requirements.txt" <(echo "$PY27"))"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null 2>&1; then
    flock -w 900 9 || die "timed out waiting for the lock on $CACHE"
fi
if [ ! -x "$VENV/bin/wstest" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    log "installing autobahntestsuite into $VENV (takes a minute or two, once)"
    rm -rf "$VENV" "$CACHE/virtualenv-pkg"
    timeout 300 python3 -m pip install -q --disable-pip-version-check --target "$CACHE/virtualenv-pkg" 'virtualenv<20.22' \
        || die "pip install virtualenv<20.22 failed"
    PYTHONPATH="$CACHE/virtualenv-pkg" timeout 300 python3 -m virtualenv -q -p "$PY27" "$VENV" \
        || die "virtualenv for $PY27 failed"
    PYTHONWARNINGS=ignore timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check --no-python-version-warning \
        -r "$HERE/requirements.txt" || die "pip install autobahntestsuite failed"
    "$VENV/bin/wstest" --help >/dev/null 2>&1 || die "wstest does not run after install"
    printf '%s' "$WANT" >"$STAMP"
fi
exec 9>&-

# --- build and start the server ----------------------------------------------
if [ -n "${CAMRELAY_BIN:-}" ]; then
    BIN="$CAMRELAY_BIN"
else
    log "cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked --quiet) || die "cargo build --release failed"
    BIN="$ROOT/target/release/camrelay"
fi
[ -x "$BIN" ] || die "server binary $BIN not found"

rm -rf "$WORK"
mkdir -p "$WORK"
cat >"$WORK/server.config" <<EOF
# written by scripts/autobahn.sh
address = 127.0.0.1
port = 0
echo_endpoint = true
max_message_bytes = 16777216
loglevel = info
EOF

SERVER_PID=""
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(cd "$ROOT" && exec "$BIN" --config "$WORK/server.config") >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

PORT=""
deadline=$((SECONDS + 30))
while [ -z "$PORT" ]; do
    PORT="$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$WORK/server.log" | head -n1)"
    [ -n "$PORT" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$WORK/server.log" >&2
        die "server exited before listening"
    fi
    [ "$SECONDS" -lt "$deadline" ] || { cat "$WORK/server.log" >&2; die "no 'listening on' line within 30 s"; }
    sleep 0.05
done
log "server pid $SERVER_PID on port $PORT (log: $WORK/server.log)"

# --- run the fuzzing client ----------------------------------------------------
AGENT=camrelay
cat >"$WORK/fuzzingclient.json" <<EOF
{
  "outdir": "$WORK/reports/servers",
  "servers": [{"agent": "$AGENT", "url": "ws://127.0.0.1:$PORT/ws/echo"}],
  "cases": $CASES,
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF

log "wstest -m fuzzingclient (cases $CASES minus 12.*, 13.*; timeout ${TIMEOUT}s)"
rc=0
started=$SECONDS
(cd "$WORK" && PYTHONWARNINGS=ignore timeout --kill-after=10 "$TIMEOUT" \
    "$VENV/bin/wstest" -m fuzzingclient -s "$WORK/fuzzingclient.json") >"$WORK/wstest.log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
    tail -n 30 "$WORK/wstest.log" >&2
    [ "$rc" -eq 124 ] && log "wstest timed out after ${TIMEOUT}s"
    die "wstest exited with $rc (full log: $WORK/wstest.log)"
fi

log "wstest finished in $((SECONDS - started)) s"

server_alive=1
kill -0 "$SERVER_PID" 2>/dev/null || server_alive=0

if [ "$server_alive" -eq 0 ]; then
    tail -n 30 "$WORK/server.log" >&2
    log "ERROR: the server died during the run (log: $WORK/server.log)"
fi
log "report: $WORK/reports/servers/index.html"
rc=0
"$VENV/bin/python" "$HERE/report.py" "$WORK/reports/servers" "$AGENT" || rc=$?
[ "$server_alive" -eq 1 ] || rc=1
exit "$rc"
