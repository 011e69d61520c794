#!/usr/bin/env bash
# The project's test command (`make test`): lint, all Go tests against the
# real components, then every fuzz target for a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
make lint
# A real Kafka broker for the bus tests, unless the environment names one.
if [ -z "${CCFLOW_TEST_KAFKA:-}" ]; then
  if out="$(./scripts/kafka.sh up)"; then
    trap './scripts/kafka.sh down' EXIT
    export CCFLOW_TEST_KAFKA="${out##*KAFKA_ADDR=}"
  else
    echo "test.sh: could not start the Kafka test broker; Kafka tests will skip (fail in CI)" >&2
  fi
fi
go test -count=1 -timeout 30m ./...
# The privacy stage's test-only identity hook exists only in this build.
go test -count=1 -tags ccflow_testhooks ./privacy/...
./scripts/fuzz.sh "${FUZZTIME_TEST:-3s}"
