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
	$(SWIFT) test --skip-build

# An emulated Android device plus the agent: try flippio without a phone.
demo: deps
	$(SWIFT) build --product flippio
	$(SWIFT) build --product flippio-devsim
	$(SWIFT) build --product flippio-ios-standin
	scripts/demo

clean:
	rm -rf .build
