#!/usr/bin/env bash
# Publish a file of frames to a stream with websocat, at a given rate.
#
#   scripts/ws-publish.sh URL FILE RATE      e.g. ws://127.0.0.1:8888/ws/publish/demo frames.b64 30
#   scripts/ws-publish.sh --make N SIZE      print N base64 frame lines of SIZE bytes (to make a FILE)
#
# FILE holds one message per line, base64 (`base64 -w0` of the message bytes). Each message's first
# byte is its kind (1 init, 2 key frame, 3 delta, 4 audio); the server holds deltas back from a watcher
# until it has had a key frame, so a file should start with an init and a key frame (--make does).
# RATE is messages per second; 0 sends as fast as TCP allows.
# REPEAT=n sends the file n times (default 1). Prints messages, bytes, seconds and the achieved rate.
# Uses websocat (installed with `cargo install --locked websocat` when missing).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
bad_usage() { usage >&2; exit 2; }
# websocat: on PATH, in ~/.cargo/bin, or installed once with cargo (about 70 s).
need_websocat() {
    command -v websocat >/dev/null 2>&1 || PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
    command -v websocat >/dev/null 2>&1 && return 0
    echo "ws-publish: websocat not found; running cargo install --locked websocat (once, about 70 s)" >&2
    if ! cargo install --locked --quiet websocat >&2 || ! command -v websocat >/dev/null 2>&1; then
        echo "ws-publish: could not install websocat" >&2
        exit 2
    fi
}

if [ "${1:-}" = "--make" ]; then
    [ $# -eq 3 ] || bad_usage
    n="$2" size="$3"
    [ "$size" -ge 1 ] || { echo "SIZE must be >= 1" >&2; exit 2; }
    for ((i = 0; i < n; i++)); do
        if ((i == 0)); then kind=1; elif ((i % 30 == 1)); then kind=2; else kind=3; fi
        { printf '%b' "\\x0$kind"; head -c "$((size - 1))" /dev/urandom; } | base64 -w0
        echo
    done
    exit 0
fi

[ $# -eq 3 ] || bad_usage
URL="$1" FILE="$2" RATE="$3"
[ -r "$FILE" ] || { echo "ws-publish: cannot read $FILE" >&2; exit 2; }
[[ "$RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "ws-publish: RATE must be a number (messages/s, 0 = max)" >&2; exit 2; }
need_websocat
REPEAT="${REPEAT:-1}"

# websocat's -B bounds the line it reads (base64 text, prefix included), else it splits the line:
# size it from the longest line.
maxline="$(awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$FILE")"
BUF=$((maxline + 4096))
[ "$BUF" -ge 65536 ] || BUF=65536

# mawk reads pipes in large blocks unless told otherwise; lines must flow as they come.
# (No `| grep -q` here: with pipefail, awk's SIGPIPE would make the test fail.)
AWK=(awk)
case "$(awk -W version 2>&1 </dev/null || true)" in *mawk*) AWK=(awk -W interactive) ;; esac

now_us() { local t="${EPOCHREALTIME/./}"; echo "$((10#$t))"; }

# Emit "B<base64>" lines, paced: message i is due at start + i/RATE; sleep only when ahead.
feed() {
    local start i=0 due now ahead line
    local interval_us=0
    if [ "$RATE" != 0 ]; then interval_us="$(awk -v r="$RATE" 'BEGIN { printf "%d", 1000000 / r }')"; fi
    start="$(now_us)"
    for ((rep = 0; rep < REPEAT; rep++)); do
        while IFS= read -r line || [ -n "$line" ]; do
            [ -n "$line" ] || continue
            if [ "$interval_us" -gt 0 ]; then
                due=$((start + i * interval_us))
                now="$(now_us)"
                ahead=$((due - now))
                if [ "$ahead" -gt 2000 ]; then sleep "$(printf '%d.%06d' $((ahead / 1000000)) $((ahead % 1000000)))"; fi
            fi
            printf 'B%s\n' "$line"
            i=$((i + 1))
        done <"$FILE"
    done
}

# Count what is sent (decoded sizes) without slowing the feed.
count() {
    # shellcheck disable=SC2016  # an awk program: $0 is awk's, not the shell's
    "${AWK[@]}" '
        { n++; l = length($0) - 1; pad = 0
          if (substr($0, length($0), 1) == "=") pad++
          if (substr($0, length($0) - 1, 1) == "=") pad++
          bytes += l / 4 * 3 - pad; print; fflush() }
        END { printf "%d %d\n", n, bytes > "/dev/stderr" }'
}

t0="$(now_us)"
stats="$(mktemp)"
trap 'rm -f "$stats"' EXIT
rc=0
feed | count 2>"$stats" | websocat -u -t -B "$BUF" --binary-prefix=B --base64 --close-status-code 1000 "$URL" || rc=$?
t1="$(now_us)"
read -r n bytes <"$stats" || { n=0; bytes=0; }
awk -v n="$n" -v b="$bytes" -v us="$((t1 - t0))" 'BEGIN {
    s = us / 1e6; if (s <= 0) s = 1e-6
    printf "ws-publish: %d messages, %d bytes in %.2f s (%.1f msg/s, %.2f MB/s)\n", n, b, s, n / s, b / s / 1e6 }' >&2
exit "$rc"
