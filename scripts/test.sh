#!/usr/bin/env bash
# The project's test command (`make test`): lint, all Go tests against the
# real components, then every fuzz target for a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
make lint
go test -count=1 -timeout 30m ./...
./scripts/fuzz.sh "${FUZZTIME_TEST:-3s}"
