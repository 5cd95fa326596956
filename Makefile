# lock-exec developer commands. `make test` is THE test command (CI runs exactly it).
SHELL := /bin/bash
.DEFAULT_GOAL := help
TOOLS := $(CURDIR)/.tools

.PHONY: help tools build test lint unit packaging demo bench soak clean

help:
	@echo "make test   install test tools into .tools/, lint, run every test"
	@echo "make demo   local dynalite + two contending runs: one runs, one is skipped"
	@echo "make bench  release build + benchmark table (see docs/performance.md)"
	@echo "make soak   long randomized contention/fault soak (minutes)"

tools:
	@bash scripts/install-tools.sh

build:
	cargo build

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

packaging: tools
	bash scripts/check-packaging.sh

test: tools lint
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
