#!/usr/bin/env bash
# Watch a stream with websocat and count messages and bytes.
#
#   scripts/ws-watch.sh URL [SECONDS]     e.g. ws://127.0.0.1:8888/ws/watch/demo 10
#
# Runs until the connection ends, SECONDS pass, COUNT binary messages arrived, or Ctrl-C; then prints
#   ws-watch: N messages, B bytes (binary), E events (text) in S s (R msg/s, M MB/s)
# Environment: COUNT=n stop after n binary messages; OUT=file write each binary message as a base64
# line (the format ws-publish.sh reads); EVENTS=1 print text events to stderr as they arrive;
# SUMMARY=file also write "messages bytes events seconds" to file; MAX_BYTES largest message (16 MiB).
# Uses websocat (installed with `cargo install --locked websocat` when missing).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage >&2; exit 2; fi
URL="$1" SECS="${2:-0}"
# websocat: on PATH, in ~/.cargo/bin, or installed once with cargo (about 70 s).
need_websocat() {
    command -v websocat >/dev/null 2>&1 || PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
    command -v websocat >/dev/null 2>&1 && return 0
    echo "ws-watch: websocat not found; running cargo install --locked websocat (once, about 70 s)" >&2
    if ! cargo install --locked --quiet websocat >&2 || ! command -v websocat >/dev/null 2>&1; then
        echo "ws-watch: could not install websocat" >&2
        exit 2
    fi
}
need_websocat
COUNT="${COUNT:-0}" OUT="${OUT:-}" EVENTS="${EVENTS:-0}" SUMMARY="${SUMMARY:-}"
MAX_BYTES="${MAX_BYTES:-16777216}"

tmp="$(mktemp -d)"
WS_PID="" AWK_PID=""
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    [ -z "$WS_PID" ] || kill "$WS_PID" 2>/dev/null || true
    [ -z "$AWK_PID" ] || wait "$AWK_PID" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap '[ -z "$WS_PID" ] || kill "$WS_PID" 2>/dev/null || true' INT TERM
mkfifo "$tmp/fifo"

# mawk reads pipes in large blocks unless told otherwise; lines must flow as they come.
# (No `| grep -q` here: with pipefail, awk's SIGPIPE would make the test fail.)
AWK=(awk)
case "$(awk -W version 2>&1 </dev/null || true)" in *mawk*) AWK=(awk -W interactive) ;; esac

now_us() { local t="${EPOCHREALTIME/./}"; echo "$((10#$t))"; }
t0="$(now_us)"

# -n: an empty stdin must not close the connection; -U: only server -> stdout; binary messages
# arrive as "B<base64>" lines, text events as "T<json>" lines.
ws_cmd=(websocat -t -U -n --base64 --binary-prefix=B --text-prefix=T -B "$MAX_BYTES" "$URL")
if [ "$SECS" != 0 ]; then ws_cmd=(timeout "$SECS" "${ws_cmd[@]}"); fi
"${ws_cmd[@]}" </dev/null >"$tmp/fifo" &
WS_PID=$!

# shellcheck disable=SC2016  # an awk program: $0 is awk's, not the shell's
"${AWK[@]}" -v count="$COUNT" -v out="$OUT" -v events="$EVENTS" -v res="$tmp/result" '
    BEGIN { if (out != "") printf "" > out }
    /^B/ { n++; l = length($0) - 1; pad = 0
           if (substr($0, length($0), 1) == "=") pad++
           if (substr($0, length($0) - 1, 1) == "=") pad++
           bytes += l / 4 * 3 - pad
           if (out != "") { print substr($0, 2) > out; fflush(out) }
           if (count > 0 && n >= count) exit
           next }
    /^T/ { e++; if (events) { print "ws-watch: event " substr($0, 2) > "/dev/stderr"; fflush("/dev/stderr") }; next }
    END { printf "%d %d %d\n", n, bytes, e > res }' <"$tmp/fifo" &
AWK_PID=$!

# `wait` returns early when a trapped signal arrives; keep waiting for the counter to finish.
while kill -0 "$AWK_PID" 2>/dev/null; do wait "$AWK_PID" 2>/dev/null || true; done
AWK_PID=""
if kill -0 "$WS_PID" 2>/dev/null; then kill "$WS_PID" 2>/dev/null || true; fi
ws_rc=0
wait "$WS_PID" 2>/dev/null || ws_rc=$?
WS_PID=""
t1="$(now_us)"

read -r n bytes e <"$tmp/result" || { n=0; bytes=0; e=0; }
secs="$(awk -v us="$((t1 - t0))" 'BEGIN { printf "%.2f", us / 1e6 }')"
awk -v n="$n" -v b="$bytes" -v e="$e" -v s="$secs" 'BEGIN {
    if (s <= 0) s = 0.01
    printf "ws-watch: %d messages, %d bytes (binary), %d events (text) in %.2f s (%.1f msg/s, %.2f MB/s)\n",
           n, b, e, s, n / s, b / s / 1e6 }'
[ -z "$SUMMARY" ] || echo "$n $bytes $e $secs" >"$SUMMARY"
# A watcher that was stopped on purpose (COUNT, SECONDS, Ctrl-C) succeeded; report real connection errors.
if [ "$COUNT" -gt 0 ] && [ "$n" -ge "$COUNT" ]; then exit 0; fi
case "$ws_rc" in 0|124|130|143) exit 0 ;; *) exit "$ws_rc" ;; esac
