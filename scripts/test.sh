#!/usr/bin/env bash
# Runs every test: format and lint checks, unit and integration tests, the Autobahn
# conformance suite, interop tests with third-party clients, and the browser tests.
# Installs what it needs (Debian's Chromium, npm and PyPI packages) on a fresh machine.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()
suite() {
  local name=$1
  shift
  echo
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

suite "cargo fmt" cargo fmt --all -- --check
suite "cargo clippy" cargo clippy --all-targets --locked -- -D warnings
suite "cargo test" cargo test --locked
suite "cargo run --release (the README's first command)" bash scripts/check-start.sh
suite "autobahn (RFC 6455 conformance)" bash scripts/autobahn.sh
suite "interop (python websockets, websocat)" bash tests/interop/run.sh
suite "browser (headless chromium)" bash tests/browser/run.sh

echo
if [ "$failed" -gt 0 ]; then
  echo "failed suites: ${failures[*]}"
fi
echo "test suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
