#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and prints runs, executions and
# crashes per target. Not part of the test command: fuzzing is open-ended and CPU-hungry.
#
#   bash scripts/fuzz.sh 300            # five minutes per target
#   bash scripts/fuzz.sh 60 ws_receiver # one target
#
# cargo-fuzz needs nightly compiler flags; the machine has one stable toolchain, so the build
# uses RUSTC_BOOTSTRAP=1 for the fuzz crate only (the server itself never needs it).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(http_request ws_receiver config static_path)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (once)..."
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

mkdir -p artifacts
status=0
summary=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log="artifacts/$target.log"
  echo "=== $target: ${seconds}s"
  if cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 \
    >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see $log and fuzz/artifacts/$target/)"
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  corpus=$(find "corpus/$target" -type f | wc -l)
  summary+=("$(printf '%-14s %6ss %12s execs %6s corpus files  %s' "$target" "$seconds" "$execs" "$corpus" "$result")")
done
echo
printf '%s\n' "${summary[@]}"
exit $status
