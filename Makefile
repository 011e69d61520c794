# ccflow — see README.md. `make test` is the test command (CI runs it too).
GO       ?= go
BIN      ?= bin/ccflow
FUZZTIME ?= 60s
# Seconds each fuzz target runs inside `make test`.
FUZZTIME_TEST ?= 3s
BENCHTIME ?= 1s

.PHONY: all build test unit fuzz fuzz-short bench lint fmt docs clean kafka-up kafka-down demo bench-compare

all: build

build:
	$(GO) build -o $(BIN) ./cmd/ccflow

# The full test suite: lint, every package's tests (real exporters, real
# services started by scripts/test.sh), and a short run of every fuzz target.
test:
	./scripts/test.sh

# Go tests only, with whatever services the environment already names.
unit:
	$(GO) test -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# Every fuzz target for FUZZTIME (at least 60s each by default).
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

fuzz-short:
	./scripts/fuzz.sh $(FUZZTIME_TEST)

# -p 1: one package's benchmarks at a time, so that the loopback benchmark
# (bench/loopback) and the decode benchmarks do not share the CPUs.
bench:
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

# Regenerate the configuration reference and the sample configuration.
docs:
	$(GO) test ./cmd/ccflow -run 'TestConfigDocs' -update

# A real Kafka broker for tests (scripts/kafka.sh): the last line printed is
# KAFKA_ADDR=host:port; use it as CCFLOW_TEST_KAFKA.
kafka-up:
	@./scripts/kafka.sh up

kafka-down:
	@./scripts/kafka.sh down

# The README's first command: ccflow run fed by the traffic simulator for about
# two minutes, then its candidates, their evaluation and the Parquet files
# (scripts/demo.sh, docs/demo.md). DEMO_SECONDS and DEMO_SPEED shorten it.
demo:
	@./scripts/demo.sh

# ccflow's collector and goflow2 (pinned, installed into bin/tools) under the
# same NetFlow v9 load, one after the other; writes docs/bench-compare.md
# (bench/compare).
bench-compare:
	$(GO) run ./bench/compare -out docs/bench-compare.md

clean:
	rm -rf bin
