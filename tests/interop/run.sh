#!/usr/bin/env bash
# Interop tests with clients nobody here wrote: Python `websockets` (driven by pytest) and websocat
# (directly and through scripts/ws-*.sh). Installs what is missing, idempotently:
#   - a venv with requirements.txt in ${CAMRELAY_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camrelay-interop}
#   - websocat with `cargo install --locked websocat` (about 70 s, once) unless on PATH or in ~/.cargo/bin
# Builds the server (cargo build --release --locked) unless CAMRELAY_BIN is set; the tests start it
# themselves on port 0 (logs in target/interop/). Extra arguments go to pytest, e.g. -k late_join.
# Exit: pytest's code; "no tests collected" (pytest's 5) counts as a failure.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${CAMRELAY_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/camrelay-interop}"
VENV="$CACHE/venv"
STAMP="$VENV/.camrelay-stamp"

log() { echo "interop: $*" >&2; }
die() { echo "interop: ERROR: $*" >&2; exit 1; }

# --- Python venv with the pinned requirements ---------------------------------------------
PY3=""
for cand in python3 python; do
    if c="$(command -v "$cand" 2>/dev/null)" && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
        PY3="$c"; break
    fi
done
[ -n "$PY3" ] || die "needs Python >= 3.10 (websockets 17)"

# The venv is rebuilt when the pins or the interpreter change.
WANT="$(cat "$HERE/requirements.txt"; "$PY3" -c 'import sys; print(sys.executable, sys.version)')"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
# Several checkouts may share the cache: one installer at a time.
if command -v flock >/dev/null 2>&1; then flock -w 600 9 || die "timed out waiting for the lock on $CACHE"; fi
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    log "creating $VENV"
    rm -rf "$VENV"
    timeout 120 "$PY3" -m venv "$VENV" || die "$PY3 -m venv failed"
    timeout 600 "$VENV/bin/pip" install -q -r "$HERE/requirements.txt" || die "pip install -r requirements.txt failed"
    printf '%s' "$WANT" >"$STAMP"
fi

# --- websocat ----------------------------------------------------------------------------
command -v websocat >/dev/null 2>&1 || PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v websocat >/dev/null 2>&1; then
    log "websocat not found; cargo install --locked websocat (once, about 70 s)"
    timeout 900 cargo install --locked --quiet websocat || die "cargo install --locked websocat failed"
    command -v websocat >/dev/null 2>&1 || die "websocat installed but not on PATH (is ~/.cargo/bin missing?)"
fi
WEBSOCAT="$(command -v websocat)"
export WEBSOCAT PATH
exec 9>&-

# --- the server --------------------------------------------------------------------------
if [ -z "${CAMRELAY_BIN:-}" ]; then
    log "cargo build --release --locked"
    (cd "$ROOT" && cargo build --release --locked --quiet) || die "cargo build --release failed"
    CAMRELAY_BIN="$ROOT/target/release/camrelay"
fi
CAMRELAY_BIN="$(cd "$(dirname "$CAMRELAY_BIN")" && pwd)/$(basename "$CAMRELAY_BIN")"
[ -x "$CAMRELAY_BIN" ] || die "no server binary at $CAMRELAY_BIN"
export CAMRELAY_BIN
log "$("$VENV/bin/python" -c 'import websockets; print("websockets", websockets.__version__)'), $("$WEBSOCAT" --version), server $CAMRELAY_BIN"

# --- the tests ---------------------------------------------------------------------------
cd "$HERE"
rc=0
timeout --kill-after=10 "${INTEROP_TIMEOUT:-300}" \
    "$VENV/bin/python" -m pytest -p no:cacheprovider -ra --tb=short "$@" || rc=$?
case "$rc" in
    0) ;;
    5) die "pytest collected no tests (exit 5)" ;;
    124) die "pytest timed out after ${INTEROP_TIMEOUT:-300} s" ;;
    *) die "pytest failed (exit $rc)" ;;
esac
