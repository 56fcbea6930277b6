#!/usr/bin/env bash
# Real-browser end-to-end test: headless Chromium with a fake camera and microphone drives the
# capture and cast pages against the real server. Installs what is missing, idempotently:
#   - Debian's chromium (apt-get, about 40 s) when /usr/bin/chromium is missing
#   - playwright-core with `npm ci` here (never a browser download), cache under ~/.cache
# Then builds the server, starts it twice on port 0 with temporary configs (plain HTTP, and HTTPS
# with a self-signed certificate made in the temporary folder), runs e2e.mjs against both, and
# stops them. Screenshots and figures land in tests/browser/output/; with DOCS_SCREENSHOTS=1 the
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
SERVER_PIDS=()
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # The server closes its sockets and exits within 2 s of SIGTERM; do not leave one behind.
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
    if [ -n "${LAN_NS:-}" ]; then ip netns del "$LAN_NS" 2>/dev/null || true; ip link del "crh$$" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every key at its default except where it listens, what it serves and (second server) TLS.
# The self-signed certificate is made beside the config, so in $TMP/https/ and gone afterwards.
mkdir -p "$TMP/http" "$TMP/https" "$OUT"
write_config() {   # DIR [EXTRA LINE]
    cat >"$1/server.config" <<EOF
# camrelay browser test (tests/browser/run.sh)
address = 127.0.0.1
port = 0
public_dir = "$ROOT/public"
loglevel = info
${2:-}
EOF
}
write_config "$TMP/http"
write_config "$TMP/https" "tls_self_signed = true"

# Both start at once; each prints its real port on its first line.
start_server() {   # CONFIG LOG
    "$CAMRELAY_BIN" --config "$1" >"$2" 2>&1 &
    SERVER_PIDS+=("$!")
}
# Waits for the startup line of the given scheme (the real port) or the server's death.
wait_url() {   # PID LOG SCHEME
    local url=""
    for _ in $(seq 200); do
        url="$(sed -n "s|^listening on \\($3://[^ ]*\\).*|\\1|p" "$2" | head -n 1)"
        [ -n "$url" ] && { echo "$url"; return 0; }
        kill -0 "$1" 2>/dev/null || { cat "$2" >&2; die "the $3 server exited before listening"; }
        sleep 0.1
    done
    cat "$2" >&2
    die "no 'listening on $3://' line within 20 s"
}
# --- a second machine on a LAN (issue 6) --------------------------------------------------
# A network namespace joined to this one by a veth pair is another host as far as IP goes: its
# Chromium reaches the server only at LAN_HOST, never on loopback. Made before the servers start,
# so the LAN server's self-signed certificate names LAN_HOST. Needs root (ip netns); else skipped.
LAN_HOST=10.231.0.1
LAN_PEER=10.231.0.2
make_lan() {
    [ "$(id -u)" -eq 0 ] || return 1
    command -v ip >/dev/null 2>&1 || apt_install iproute2
    local ns="camrelay-lan-$$" host="crh$$" peer="crp$$"
    ip netns add "$ns" 2>/dev/null || return 1
    LAN_NS="$ns"
    ip link add "$host" type veth peer name "$peer" &&
        ip link set "$peer" netns "$ns" &&
        ip addr add "$LAN_HOST/30" dev "$host" && ip link set "$host" up &&
        ip netns exec "$ns" ip addr add "$LAN_PEER/30" dev "$peer" &&
        ip netns exec "$ns" ip link set "$peer" up &&
        ip netns exec "$ns" ip link set lo up || return 1
    # What Playwright starts as "the browser" on the other host.
    printf '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' "$ns" "${CHROMIUM:-/usr/bin/chromium}" >"$TMP/chromium-lan"
    chmod +x "$TMP/chromium-lan"
}
LAN_NS=""
if make_lan; then
    mkdir -p "$TMP/lan"
    write_config "$TMP/lan" "tls_self_signed = true"
    sed -i "s/^address = .*/address = $LAN_HOST/" "$TMP/lan/server.config"
else
    if [ -n "$LAN_NS" ]; then ip netns del "$LAN_NS" 2>/dev/null || true; ip link del "crh$$" 2>/dev/null || true; LAN_NS=""; fi
    log "no network namespace (needs root and iproute2): the second-machine scenario will be skipped"
fi

SERVER_LOG="$OUT/server.log"
TLS_LOG="$OUT/server-https.log"
start_server "$TMP/http/server.config" "$SERVER_LOG"
start_server "$TMP/https/server.config" "$TLS_LOG"
URL="$(wait_url "${SERVER_PIDS[0]}" "$SERVER_LOG" http)"
TLS_URL="$(wait_url "${SERVER_PIDS[1]}" "$TLS_LOG" https)"
if [ -n "$LAN_NS" ]; then
    LAN_LOG="$OUT/server-lan.log"
    start_server "$TMP/lan/server.config" "$LAN_LOG"
    LAN_URL="$(wait_url "${SERVER_PIDS[2]}" "$LAN_LOG" https)"
    log "server $CAMRELAY_BIN at $LAN_URL for a browser in network namespace $LAN_NS (log: $LAN_LOG)"
    export CAMRELAY_LAN_URL="$LAN_URL" CAMRELAY_LAN_CHROMIUM="$TMP/chromium-lan" CAMRELAY_LAN_LOG="$LAN_LOG" \
        CAMRELAY_LAN_PEER="$LAN_PEER" CAMRELAY_LAN_CERT="$TMP/lan/camrelay-self-signed.pem"
fi
TLS_CERT="$TMP/https/camrelay-self-signed.pem"
[ -s "$TLS_CERT" ] || { cat "$TLS_LOG" >&2; die "the https server made no certificate at $TLS_CERT"; }
log "server $CAMRELAY_BIN at $URL (log: $SERVER_LOG)"
log "server $CAMRELAY_BIN at $TLS_URL, self-signed (log: $TLS_LOG)"

# --- the test ----------------------------------------------------------------------------
rc=0
(cd "$HERE" && timeout --kill-after=10 "${BROWSER_TIMEOUT:-240}" node e2e.mjs "$URL" "$TLS_URL" "$TLS_CERT") || rc=$?
[ "$rc" -ne 124 ] || log "e2e.mjs timed out after ${BROWSER_TIMEOUT:-240} s"
exit "$rc"
