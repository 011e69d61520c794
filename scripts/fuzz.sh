#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time each (default 60s).
# Minimizing a new interesting input is capped at 5 s, so that a target spends
# its time fuzzing rather than minimizing.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-60s}
n=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== fuzz $pkg $target ($t)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" -fuzzminimizetime 5s "$pkg"
    n=$((n+1))
  done
done
echo "fuzz: $n targets ran for $t each"
