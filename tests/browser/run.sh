#!/usr/bin/env bash
# Real-browser end-to-end test: headless Chromium with a fake camera and microphone drives the
# capture and cast pages against the real server. Installs what is missing, idempotently:
#   - Debian's chromium (apt-get, about 40 s) when /usr/bin/chromium is missing
#   - playwright-core with `npm ci` here (never a browser download), cache under ~/.cache
# Then builds the server, starts it on port 0 with a temporary config, runs e2e.mjs against it,
# and stops it. Screenshots and figures land in tests/browser/output/; with DOCS_SCREENSHOTS=1 the
# pictures in docs/screenshots/ are refreshed too (tracked files, so not on every run).
# Exit code: e2e.mjs's (0 = every check passed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/camrelay-browser"
OUT="$HERE/output"

log() { echo "browser: $*" >&2; }
die() { echo "browser: ERROR: $*" >&2; exit 1; }

# Root needs no sudo; everyone else does (and a fresh image may not even have sudo as root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Chromium and Node -------------------------------------------------------------------
apt_install() {
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}
if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
    || die "playwright-core needs Node >= 20, found $(node --version)"

# --- playwright-core ---------------------------------------------------------------------
# `npm ci` wipes node_modules, so it runs only when the lock file changed since the last install.
mkdir -p "$CACHE"
STAMP="$HERE/node_modules/.camrelay-lock"
if ! cmp -s "$HERE/package-lock.json" "$STAMP" 2>/dev/null; then
    log "npm ci (playwright-core)"
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core downloads nothing, but be explicit about it.
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm_config_cache="$CACHE/npm" \
        timeout 300 npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
    cp "$HERE/package-lock.json" "$STAMP"
fi

# --- the server --------------------------------------------------------------------------
if [ -z "${CAMRELAY_BIN:-}" ]; then
    # Only the server binary: the test needs nothing else, and builds no more than it must.
    log "cargo build --release --locked --bin camrelay"
    (cd "$ROOT" && cargo build --release --locked --quiet --bin camrelay) || die "cargo build --release failed"
    CAMRELAY_BIN="$ROOT/target/release/camrelay"
fi
[ -x "$CAMRELAY_BIN" ] || die "no server binary at $CAMRELAY_BIN"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/camrelay-browser.XXXXXX")"
SERVER_PID=""
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        # The server closes its sockets and exits within 2 s of SIGTERM; do not leave it behind.
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every key at its default except where it listens and what it serves.
cat >"$TMP/server.config" <<EOF
# camrelay browser test (tests/browser/run.sh)
address = 127.0.0.1
port = 0
public_dir = "$ROOT/public"
loglevel = info
EOF
mkdir -p "$OUT"
SERVER_LOG="$OUT/server.log"
"$CAMRELAY_BIN" --config "$TMP/server.config" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

# Wait for the startup line (the real port) or the server's death, whichever comes first.
URL=""
for _ in $(seq 200); do
    URL="$(sed -n 's|^listening on \(http://[^ ]*\).*|\1|p' "$SERVER_LOG" | head -n 1)"
    [ -n "$URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "the server exited before listening"; }
    sleep 0.1
done
[ -n "$URL" ] || { cat "$SERVER_LOG" >&2; die "no 'listening on' line within 20 s"; }
log "server $CAMRELAY_BIN at $URL (log: $SERVER_LOG)"

# --- the test ----------------------------------------------------------------------------
rc=0
(cd "$HERE" && timeout --kill-after=10 "${BROWSER_TIMEOUT:-240}" node e2e.mjs "$URL") || rc=$?
[ "$rc" -ne 124 ] || log "e2e.mjs timed out after ${BROWSER_TIMEOUT:-240} s"
exit "$rc"
