#!/usr/bin/env bash
# `make bench`: builds the static release binary exactly as the Dockerfile does and the
# floor client (scripts/bench-floor), then runs the benchmark, an ignored test on the test
# harness (tests/it/bench.rs), against its own local dynalite. Prints Markdown tables and
# writes target/bench/results.md and target/bench/results.json. See docs/performance.md.
#
#   LOCK_EXEC_BENCH_PEER=/path              the original Go tool's binary, measured in the
#                                           same rounds; without it: "peer not measured"
#   LOCK_EXEC_BENCH_VARIANTS=name=/path,... other lock-exec builds, measured likewise
#   LOCK_EXEC_BENCH_ROUNDS=N                timed rounds (default 30, after 20 warm-up rounds)
#
# It exits non-zero only when something is broken (dynalite did not start, a run failed or
# skipped its command), never because a target was missed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf 'bench: %s\n' "$*" >&2; }

# strace, for the CA files each run opens (optional: that column says "not measured").
if ! command -v strace >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing strace (apt)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace; } >&2; then
      log "could not install strace; the CA-files column is not measured"
    fi
  else
    log "no strace and not root; the CA-files column is not measured"
  fi
fi

target=x86_64-unknown-linux-gnu
log "building the static release binary (target/$target/release/lock-exec)"
RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs' \
  cargo build --release --locked --target "$target"
log "building the floor client (scripts/bench-floor)"
RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs' \
  cargo build --release --locked --target "$target" \
    --manifest-path scripts/bench-floor/Cargo.toml --target-dir target/bench-floor

if [ -n "${LOCK_EXEC_BENCH_PEER:-}" ]; then
  log "peer: $LOCK_EXEC_BENCH_PEER"
else
  log "peer not measured (set LOCK_EXEC_BENCH_PEER to the Go tool's binary)"
fi

LOCK_EXEC_BIN="$root/target/$target/release/lock-exec" \
LOCK_EXEC_BENCH_FLOOR="$root/target/bench-floor/$target/release/bench-floor" \
BENCH_COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown) \
  cargo nextest run --profile bench --run-ignored only --no-capture -E 'test(=bench::bench)'
