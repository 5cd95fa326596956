#!/usr/bin/env bash
# `make bench`: builds the static release binary exactly as the Dockerfile does, then runs
# scripts/bench.py against its own local dynalite. Prints a Markdown table and writes
# target/bench/results.md and target/bench/results.json. See docs/performance.md.
#
#   BENCH_RUNS=N   timed pairs per overhead figure (default 40)
#   BENCH_QUICK=1  fewer samples; skips the 35 s renewal run (a 3.5 s one at --lease 3s
#                  instead) and the 30 s-lease takeover sample
# Extra arguments go to bench.py (e.g. --only overhead,rss).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf 'bench: %s\n' "$*" >&2; }

# GNU time, for its max-RSS row (optional: the row is skipped without it).
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing GNU time (apt package time)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; } >&2; then
      log "could not install GNU time; its row is skipped"
    fi
  else
    log "no /usr/bin/time (apt package time) and not root; its row is skipped"
  fi
fi

log "building the static release binary (target/x86_64-unknown-linux-gnu/release/lock-exec)"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target x86_64-unknown-linux-gnu

if [ -x .tools/venv/bin/python ]; then py=.tools/venv/bin/python; else py=python3; fi
exec "$py" scripts/bench.py "$@"
