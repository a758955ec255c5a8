# flippio: the two commands a newcomer needs are `make demo` and `make test`.
SWIFT ?= swift
BIN := $(shell pwd)/.build/debug

.PHONY: all deps build test demo bench clean

all: build

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build --build-tests

# Every test: unit tests plus end-to-end tests that drive the real `adb` against flippio-devsim.
test: build
	$(SWIFT) test --skip-build --no-parallel

# An emulated Android device plus the agent: try flippio without a phone.
demo: deps
	$(SWIFT) build --product flippio
	$(SWIFT) build --product flippio-devsim
	$(SWIFT) build --product flippio-ios-standin
	scripts/demo

# Performance: the microbenchmarks (Benchmarks/, a package of its own so that `make test` and CI
# never build ordo-one/benchmark), then the end-to-end run against flippio-devsim with release
# binaries. Writes docs/PERFORMANCE.md. Takes a while: two release builds, then ~10 minutes.
bench: deps
	mkdir -p .build-bench
	cd Benchmarks && $(SWIFT) package benchmark --no-progress --format markdown > ../.build-bench/benchmarks.txt 2>&1 \
		|| { cat ../.build-bench/benchmarks.txt; exit 1; }
	cat .build-bench/benchmarks.txt
	scripts/bench-e2e

clean:
	rm -rf .build
