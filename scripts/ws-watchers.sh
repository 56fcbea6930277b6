#!/usr/bin/env bash
# Open N websocat watchers on a stream and report what each received.
#
#   scripts/ws-watchers.sh URL N [SECONDS]    e.g. ws://127.0.0.1:8888/ws/watch/demo 50 30
#
# Each watcher is scripts/ws-watch.sh (one websocat process each: fine for tens or a few hundred
# watchers; use a dedicated load generator for thousands). Runs until SECONDS pass, every watcher's
# connection ends, or Ctrl-C; then prints per-watcher min/max and totals:
#   ws-watchers: N watchers (F failed): M messages, B bytes in all; per watcher min/max messages ...
# COUNT=n makes each watcher stop after n binary messages. Uses websocat (installed with
# `cargo install --locked websocat` when missing).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage >&2; exit 2; fi
URL="$1" N="$2" SECS="${3:-0}"
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then usage >&2; exit 2; fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# websocat: on PATH, in ~/.cargo/bin, or installed once with cargo (about 70 s).
need_websocat() {
    command -v websocat >/dev/null 2>&1 || PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
    command -v websocat >/dev/null 2>&1 && return 0
    echo "ws-watchers: websocat not found; running cargo install --locked websocat (once, about 70 s)" >&2
    if ! cargo install --locked --quiet websocat >&2 || ! command -v websocat >/dev/null 2>&1; then
        echo "ws-watchers: could not install websocat" >&2
        exit 2
    fi
}
# Install once here, not in N watchers at the same time; they inherit PATH.
need_websocat
export PATH

tmp="$(mktemp -d)"
pids=()
stop_all() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap 'rm -rf "$tmp"' EXIT
trap stop_all INT TERM

for ((i = 0; i < N; i++)); do
    SUMMARY="$tmp/$i.sum" "$HERE/ws-watch.sh" "$URL" "$SECS" >"$tmp/$i.out" 2>"$tmp/$i.err" &
    pids+=($!)
done
echo "ws-watchers: $N watchers started on $URL" >&2

failed=0
for i in "${!pids[@]}"; do
    rc=0
    # `wait` returns early (>128) when a trapped signal arrives: wait again until the watcher is gone.
    while :; do
        rc=0; wait "${pids[$i]}" 2>/dev/null || rc=$?
        kill -0 "${pids[$i]}" 2>/dev/null || break
    done
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 127 ]; then
        failed=$((failed + 1))
        echo "ws-watchers: watcher $i failed (exit $rc): $(tail -n 1 "$tmp/$i.err" 2>/dev/null)" >&2
    fi
done

cat "$tmp"/*.sum 2>/dev/null | awk -v n="$N" -v f="$failed" '
    { c++; m += $1; b += $2; if (c == 1 || $1 < mn) mn = $1; if ($1 > mx) mx = $1; if ($4 > s) s = $4 }
    END {
        if (s <= 0) s = 0.01
        printf "ws-watchers: %d watchers (%d failed): %d messages, %d bytes in all in %.2f s (%.2f MB/s); per watcher min %d max %d messages\n",
               n, f, m, b, s, b / s / 1e6, mn, mx }'
[ "$failed" -eq 0 ]
