# flippio: the two commands a newcomer needs are `make demo` and `make test`.
SWIFT ?= swift
BIN := $(shell pwd)/.build/debug

# `make install` puts flippio under PREFIX (default ~/.local; `sudo make install PREFIX=/usr/local`
# for everyone). DESTDIR is prepended to every installed path, for packagers.
PREFIX ?= $(HOME)/.local
DESTDIR ?=
# The release build has a scratch folder of its own, so it never disturbs the debug build of
# `make build` / `make test` (and is gitignored like every .build*/ folder).
RELEASE_SCRATCH := .build-release
RELEASE_BIN := $(RELEASE_SCRATCH)/release/flippio
BINDIR := $(DESTDIR)$(PREFIX)/bin
MAN1DIR := $(DESTDIR)$(PREFIX)/share/man/man1
BASHDIR := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR := $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d

.PHONY: all deps build test demo bench clean install uninstall release

all: build

deps:
	@scripts/install-deps

build: deps
	$(SWIFT) build --build-tests

# Every test: unit tests plus end-to-end tests that drive the real `adb` against flippio-devsim,
# then `make install` into a temporary PREFIX and the installed binary run without the toolchain
# (scripts/test-install: one release build, ~3 minutes).
test: build
	$(SWIFT) test --skip-build --no-parallel
	scripts/test-install

# The release binary with the Swift runtime linked in (runs without the toolchain), and its man page,
# generated from the command definitions by swift-argument-parser's generate-manual: the tool behind
# its `swift package plugin generate-manual`, built from the package's own checkout (offline) and run
# on the binary we install. Not the plugin itself: it first builds the whole package again in plain
# release mode, which shares no object file with the --static-swift-stdlib build (every module is
# compiled with different flags) and doubled the time of `make install` (measured: +10 minutes here).
MANUAL_TOOL_SCRATCH := $(RELEASE_SCRATCH)/generate-manual
MANUAL_DIR := $(RELEASE_SCRATCH)/manual
release: deps
	$(SWIFT) build -c release --static-swift-stdlib --product flippio --scratch-path $(RELEASE_SCRATCH)
	$(SWIFT) build --package-path $(RELEASE_SCRATCH)/checkouts/swift-argument-parser \
		--scratch-path $(MANUAL_TOOL_SCRATCH) --product generate-manual
	rm -rf $(MANUAL_DIR) && mkdir -p $(MANUAL_DIR)
	$(MANUAL_TOOL_SCRATCH)/debug/generate-manual $(RELEASE_BIN) --output-directory $(MANUAL_DIR) \
		--authors "the flippio authors"

# Installs flippio, its man page and bash/zsh/fish completions under PREFIX. The completions call back
# into the installed flippio (`flippio ---completion ...`) for device serials, app ids and tracked files.
install: release
	install -d $(BINDIR) $(MAN1DIR) $(BASHDIR) $(ZSHDIR) $(FISHDIR)
	install -m 0755 $(RELEASE_BIN) $(BINDIR)/flippio
	# Debug info is most of the binary's size (116 MB -> 89 MB); symbols stay, so backtraces keep names.
	if command -v strip >/dev/null 2>&1; then strip --strip-debug $(BINDIR)/flippio; fi
	install -m 0644 $(MANUAL_DIR)/flippio.1 $(MAN1DIR)/flippio.1
	$(RELEASE_BIN) --generate-completion-script bash > $(BASHDIR)/flippio
	$(RELEASE_BIN) --generate-completion-script zsh > $(ZSHDIR)/_flippio
	$(RELEASE_BIN) --generate-completion-script fish > $(FISHDIR)/flippio.fish
	@echo "installed $(BINDIR)/flippio; make sure $(PREFIX)/bin is on PATH. Next: flippio service install"

# Removes what `make install` put under PREFIX (the systemd unit, if any: `flippio service uninstall` first).
uninstall:
	rm -f $(BINDIR)/flippio $(MAN1DIR)/flippio.1 $(BASHDIR)/flippio $(ZSHDIR)/_flippio $(FISHDIR)/flippio.fish

# An emulated Android device plus the agent: try flippio without a phone.
demo: deps
	$(SWIFT) build --product flippio
	$(SWIFT) build --product flippio-devsim
	$(SWIFT) build --product flippio-ios-standin
	scripts/demo

# Performance: the microbenchmarks (Benchmarks/, a package of its own so that `make test` and CI
# never build ordo-one/benchmark), then the end-to-end run against flippio-devsim with release
# binaries (scripts/bench-e2e writes docs/PERFORMANCE.md, scripts/bench-delta replaces its "Delta push"
# section, scripts/bench-pull prints the pull against the raw transfer). Takes a while: release
# builds, then ~20 minutes.
bench: deps
	mkdir -p .build-bench
	cd Benchmarks && $(SWIFT) package benchmark --no-progress --format markdown > ../.build-bench/benchmarks.txt 2>&1 \
		|| { cat ../.build-bench/benchmarks.txt; exit 1; }
	cat .build-bench/benchmarks.txt
	scripts/bench-e2e
	FLIPPIO_BENCH_BIN=$(CURDIR)/Benchmarks/.build/release scripts/bench-delta
	scripts/bench-pull

clean:
	rm -rf .build $(RELEASE_SCRATCH)
