# lock-exec developer commands. `make test` is THE test command (CI runs exactly it).
SHELL := /bin/bash
.DEFAULT_GOAL := help
TOOLS := $(CURDIR)/.tools

.PHONY: help tools build image test lint unit packaging demo bench soak clean

help:
	@echo "make test   install test tools into .tools/, lint, run every test"
	@echo "make image  build localhost/lock-exec:dev from the Dockerfile, offline (podman, else docker)"
	@echo "make demo   local dynalite + two contending runs: one runs, one is skipped"
	@echo "make bench  static release build + side-by-side benchmark (LOCK_EXEC_BENCH_PEER=go-binary; docs/performance.md)"
	@echo "make soak   long randomized contention/fault soak (minutes)"

tools:
	@bash scripts/install-tools.sh

build:
	cargo build

# The container tests (tests/it/containers.rs) run this image, so `make test` builds it.
image: tools
	bash scripts/build-image.sh localhost/lock-exec:dev

lint:
	cargo fmt --all -- --check
	cargo fmt --manifest-path scripts/bench-floor/Cargo.toml -- --check
	cargo clippy --all-targets -- -D warnings

packaging: tools
	bash scripts/check-packaging.sh

test: tools lint image
	cargo nextest run --no-fail-fast
	bash scripts/check-packaging.sh

demo: tools
	@bash scripts/demo.sh

bench: tools
	@bash scripts/bench.sh

soak: tools
	cargo nextest run --profile soak --run-ignored only --no-capture soak

clean:
	cargo clean
	rm -rf $(TOOLS)
