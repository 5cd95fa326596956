#!/usr/bin/env bash
# Builds the lock-exec image from the repository's Dockerfile without pulling any image:
# the static binary is compiled here (the same cargo command as the Dockerfile's build
# stage), put in the build context with this machine's CA bundle, and the Dockerfile's
# final stage takes both from there (--build-arg LOCK_EXEC_FROM=prebuilt).
#
# Usage: scripts/build-image.sh [TAG]      (default localhost/lock-exec:dev; `make image`)
# Engine: podman where installed, else docker; LOCK_EXEC_ENGINE=docker|podman chooses.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

tag=${1:-localhost/lock-exec:dev}
target=x86_64-unknown-linux-gnu
binary=target/$target/release/lock-exec
bundle=/etc/ssl/certs/ca-certificates.crt
stage=target/image

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if [ -n "${LOCK_EXEC_ENGINE:-}" ]; then
  engine=$LOCK_EXEC_ENGINE
elif command -v podman >/dev/null 2>&1; then
  engine=podman
elif command -v docker >/dev/null 2>&1; then
  engine=docker
else
  die "neither podman nor docker found (scripts/install-tools.sh installs podman)"
fi
command -v "$engine" >/dev/null 2>&1 || die "$engine not found"
extra=()
if [ "$engine" = podman ]; then
  # One layer, no intermediate images left behind, and no build cache: buildah 1.28's
  # cache ignores build arguments in LABEL (the revision label would go stale).
  extra+=(--squash-all)
  # The project's containers.conf (runc, rlimits this machine allows) unless the caller
  # has one: host configuration must not decide whether the build works.
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/tests/fixtures/containers.conf}
fi

log "cargo build --release --target $target (static)"
RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs' cargo build --release --locked --target "$target"
# The image is FROM scratch: a binary that needs a dynamic loader would not even start.
if readelf -l "$binary" | grep -q 'program interpreter'; then
  die "$binary is dynamically linked; it would not run FROM scratch"
fi
[ -f "$bundle" ] || die "no CA bundle at $bundle (apt-get install ca-certificates)"

mkdir -p "$stage"
cp "$binary" "$stage/lock-exec"
cp "$bundle" "$stage/ca-certificates.crt"

# The image this build replaces, removed below once nothing is tagged with it any more.
previous=$("$engine" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
log "$engine build -t $tag (LOCK_EXEC_FROM=prebuilt, version $version)"
"$engine" build --quiet "${extra[@]}" \
  --build-arg LOCK_EXEC_FROM=prebuilt \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$revision" \
  -t "$tag" . >/dev/null
current=$("$engine" image inspect --format '{{.Id}}' "$tag")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  # Fails harmlessly when a container still uses it or another tag names it.
  "$engine" image rm "$previous" >/dev/null 2>&1 || true
fi
log "built $tag ($current)"
