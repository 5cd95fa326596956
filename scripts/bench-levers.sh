#!/usr/bin/env bash
# What each release-profile lever buys: builds the static binary once per cumulative
# variant (cargo's default release profile, then +strip, +opt-level s, +lto fat,
# +codegen-units 1, +panic abort = what Cargo.toml ships), measures its size, start-up
# overhead and peak RSS with scripts/bench.py, then profiles the shipped settings
# (valgrind massif, perf, strace) to show where the remaining time and memory go.
#
# Usage: scripts/bench-levers.sh [all|build|build-profiles|measure|table|analyse]  (default: all)
#   LEVERS_RUNS=N   rounds of overhead samples, every variant once per round (default 40)
#
# Every variant is built from one snapshot of the committed source (git archive HEAD into
# target/levers/src), so edits made while the builds run do not leak into some variants.
# Builds are cold (one target dir per variant under target/levers/), run ONE AT A TIME
# under `nice`, and take 3-6 minutes each on 2 cores. Output: target/levers/levers.md,
# target/levers/analysis/results.md (+ .json next to them).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

phase=${1:-all}
runs=${LEVERS_RUNS:-40}
triple=x86_64-unknown-linux-gnu
out=target/levers
static_flags='-C target-feature=+crt-static'
if [ -x .tools/venv/bin/python ]; then py=.tools/venv/bin/python; else py=python3; fi

log() { printf 'bench-levers: %s\n' "$*" >&2; }

# name opt-level lto codegen-units panic strip cargo-target-dir
# Each row adds one lever to the row above it; `shipped` equals Cargo.toml's
# [profile.release]. (Changing only `strip` still rebuilds every crate: it is part of
# each unit's fingerprint.)
variants=(
  "baseline 3 false 16 unwind false $out/baseline/cargo"
  "strip    3 false 16 unwind true  $out/strip/cargo"
  "opt-s    s false 16 unwind true  $out/opt-s/cargo"
  "lto-fat  s fat   16 unwind true  $out/lto-fat/cargo"
  "cgu1     s fat   1  unwind true  $out/cgu1/cargo"
  "shipped  s fat   1  abort  true  $out/shipped/cargo"
)

# build NAME OPT LTO CGU PANIC STRIP DIR [RUSTFLAGS] [DEBUG]
build() {
  local name=$1 opt=$2 lto=$3 cgu=$4 panic=$5 strip=$6 dir=$7
  local rustflags=${8-$static_flags} debug=${9:-false}
  mkdir -p "$out/$name"
  log "building $name (opt-level=$opt lto=$lto codegen-units=$cgu panic=$panic strip=$strip debug=$debug rustflags='$rustflags') in $dir"
  local start end
  start=$(date +%s)
  CARGO_TARGET_DIR=$dir RUSTFLAGS=$rustflags \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt CARGO_PROFILE_RELEASE_LTO=$lto \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$cgu CARGO_PROFILE_RELEASE_PANIC=$panic \
  CARGO_PROFILE_RELEASE_STRIP=$strip CARGO_PROFILE_RELEASE_DEBUG=$debug \
    nice -n 19 cargo build --release --locked --target "$triple" --quiet \
      --manifest-path "$out/src/Cargo.toml"
  end=$(date +%s)
  cp "$dir/$triple/release/lock-exec" "$out/$name/lock-exec"
  printf '%s\n' "$((end - start))" >"$out/$name/build-seconds"
  log "$name: $(stat -c %s "$out/$name/lock-exec") bytes, built in $((end - start)) s"
}

snapshot() {
  rm -rf "$out/src"
  mkdir -p "$out/src"
  # -m: files get the extraction time, not the commit time, so cargo sees them as changed.
  git archive HEAD Cargo.toml Cargo.lock src | tar -x -m -C "$out/src"
  git rev-parse HEAD >"$out/src/REVISION"
  log "source snapshot: $(cat "$out/src/REVISION") (committed HEAD; uncommitted edits are not in it)"
}

do_build() {
  local v
  snapshot
  for v in "${variants[@]}"; do
    # shellcheck disable=SC2086  # word splitting of the row is intended
    build $v
  done
  build_profiles
}

# For profiling: the shipped settings with symbols and line tables kept; one static (perf:
# the same start-up as the shipped binary) and one dynamically linked (valgrind can only
# replace malloc in a dynamic binary).
build_profiles() {
  [ -f "$out/src/Cargo.toml" ] || snapshot
  build profile-static s fat 1 abort false "$out/profile-static/cargo" "$static_flags" line-tables-only
  build profile s fat 1 abort false "$out/profile/cargo" "" line-tables-only
}

do_measure() {
  local v name args=()
  for v in "${variants[@]}"; do
    name=${v%% *}
    [ -x "$out/$name/lock-exec" ] || { log "no $out/$name/lock-exec: run the build phase first"; exit 1; }
    args+=(--variant "$name=$out/$name/lock-exec")
  done
  log "measuring ${#variants[@]} variants side by side ($runs rounds)"
  "$py" scripts/bench.py --only levers "${args[@]}" --runs "$runs" --out "$out/measure" >/dev/null
  do_table
}

# The levers table from the measure phase's results.json.
do_table() {
  "$py" - "$out" "${variants[@]}" <<'PY'
import json, os, sys

out, rows = sys.argv[1], [r.split() for r in sys.argv[2:]]
MiB = 1024 * 1024
with open(os.path.join(out, "measure", "results.json")) as f:
    doc = json.load(f)
res, meta = doc["results"]["levers"], doc["meta"]
spread = lambda s, d=2: f"{s['p10']:.{d}f}–{s['p90']:.{d}f} p10–p90" if s["n"] >= 10 else f"{s['min']:.{d}f}–{s['max']:.{d}f} min–max"
lines = [
    f"Measured {meta['date']}, {meta['cpus']} shared CPUs, load average {meta['loadavg_start'][0]:.2f} → "
    f"{meta['loadavg_end'][0]:.2f}; {meta['runs']} rounds, each running every variant once (rotated order), "
    "each run right after its own `/bin/true` reference; medians with spread.",
    "",
    "| Variant (cumulative) | opt-level | lto | codegen-units | panic | strip | Binary size | Δ size vs previous "
    "| Overhead of `run K -- true` over `/bin/true` (host CA layout) | Same, image CA layout | CPU time (user+sys) "
    "| Peak RSS (VmHWM) | RSS anon + file while the child runs |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
data, prev = [], None
for name, opt, lto, cgu, panic, strip, _dir in rows:
    v = res[name]
    size = v["size_bytes"]
    delta = "—" if prev is None else f"{(size - prev) / MiB:+.2f} MiB ({(size - prev) / prev * 100:+.0f} %)"
    prev = size
    ov, img, cpu, rss = v["overhead_ms"], v["overhead_image_ca_ms"], v["cpu_ms"], v["vmhwm_kib"]
    lines.append(
        f"| {name} | {opt} | {lto} | {cgu} | {panic} | {strip} | {size / MiB:.2f} MiB ({size} B) | {delta} "
        f"| {ov['median']:.2f} ms ({spread(ov)}) | {img['median']:.2f} ms ({spread(img)}) "
        f"| {cpu['median']:.2f} ms ({spread(cpu)}) "
        f"| {rss['median'] / 1024:.2f} MiB ({spread({k: x / 1024 if k != 'n' else x for k, x in rss.items()})}) "
        f"| {v['rss_anon_kib']['median'] / 1024:.2f} + {v['rss_file_kib']['median'] / 1024:.2f} MiB |")
    data.append({"name": name, "opt_level": opt, "lto": lto, "codegen_units": cgu, "panic": panic,
                 "strip": strip, **v})
lines.append("")
try:
    with open(os.path.join(out, "src", "REVISION")) as f:
        lines.append(f"All variants built from commit {f.read().strip()[:12]} (target/levers/src).")
except OSError:
    pass
lines.append("Runtime lever (tokio current_thread vs multi_thread): not measured, it needs a source change "
             "(src/main.rs builds the runtime).")
text = "\n".join(lines) + "\n"
with open(os.path.join(out, "levers.md"), "w") as f:
    f.write(text)
with open(os.path.join(out, "levers.json"), "w") as f:
    json.dump(data, f, indent=2)
print(text)
PY
}

do_analyse() {
  [ -x "$out/profile/lock-exec" ] || { log "no $out/profile/lock-exec: run the build phase first"; exit 1; }
  log "profiling (massif, perf, strace, log timeline)"
  [ -x "$out/profile-static/lock-exec" ] || { log "no $out/profile-static/lock-exec: run the build phase first"; exit 1; }
  "$py" scripts/bench.py --only analysis --binary "$out/profile/lock-exec" \
    --perf-binary "$out/profile-static/lock-exec" --static-binary "$out/shipped/lock-exec" \
    --runs "$runs" --out "$out/analysis"
}

case $phase in
  build) do_build ;;
  build-profiles) build_profiles ;;
  measure) do_measure ;;
  table) do_table ;;
  analyse | analyze) do_analyse ;;
  all) do_build; do_measure; do_analyse ;;
  *) log "unknown phase '$phase': use all, build, measure or analyse"; exit 2 ;;
esac
