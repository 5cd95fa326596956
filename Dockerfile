# syntax=docker/dockerfile:1
#
# lock-exec container image: a fully static binary on an empty base.
#
# Two ways to build the same image:
#   - from source, inside rust:1.95-bookworm (needs that image from a registry):
#       docker build -t ghcr.io/lock-exec/lock-exec:0.1.0 \
#         --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   - from a static binary built on this machine, pulling nothing (`make image`, see
#     scripts/build-image.sh): it puts the binary and the host's CA bundle in
#     target/image/ and builds with --build-arg LOCK_EXEC_FROM=prebuilt.
# Both need BuildKit or podman/buildah, which build only the stages the final one uses.
#
# Contents of the final image (nothing else: no shell, no cp, no libc):
#   /lock-exec                           the binary (ENTRYPOINT)
#   /etc/ssl/certs/ca-certificates.crt   CA roots; the AWS SDK reads them from the
#                                        OS, without them every call fails UnknownIssuer
# Use `lock-exec install <DIR>` (e.g. from an init container) to copy the binary
# into another image, or `COPY --from=<this image> /lock-exec ...` in a Dockerfile.

# Which stage supplies /lock-exec and the CA bundle: build (from source) or prebuilt.
ARG LOCK_EXEC_FROM=build

FROM rust:1.95-bookworm AS build

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The newest CA bundle from Debian, not a pinned (soon stale) one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# (.dockerignore lets target/image/ in for the prebuilt stage; /src/target is a cache
# mount below, so that copy is hidden from cargo.)
COPY . .

# Dependencies and build artefacts live in BuildKit cache mounts, so a source
# change recompiles only this crate. --target keeps RUSTFLAGS (crt-static) away
# from build scripts and proc macros. pack-relative-relocs (RELR) keeps the
# static-PIE binary's address randomisation but shrinks its start-up relocation
# table from 0.5 MB to 6 KB (docs/performance.md). The target dir is a cache
# mount, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && cp target/x86_64-unknown-linux-gnu/release/lock-exec /lock-exec \
 && if readelf -l /lock-exec | grep -q 'program interpreter'; then \
      echo 'lock-exec is dynamically linked; it would not run FROM scratch' >&2; exit 1; \
    fi

# The same two files, prepared in the build context by scripts/build-image.sh: a static
# binary built with the command above and the CA bundle of the (Debian) build machine.
FROM scratch AS prebuilt
COPY target/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY target/image/lock-exec /lock-exec

FROM ${LOCK_EXEC_FROM} AS binary

FROM scratch

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lock-exec" \
      org.opencontainers.image.description="Run a command under a DynamoDB lock with a renewing lease; PID-1-safe container entrypoint" \
      org.opencontainers.image.source="https://github.com/lock-exec/lock-exec" \
      org.opencontainers.image.url="https://github.com/lock-exec/lock-exec" \
      org.opencontainers.image.documentation="https://github.com/lock-exec/lock-exec/blob/main/docs/kubernetes.md" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="scratch"

COPY --from=binary /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary /lock-exec /lock-exec

# The "nonroot" user of distroless images; the chart runs pods as this uid.
USER 65532:65532
ENTRYPOINT ["/lock-exec"]
