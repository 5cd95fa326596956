#!/usr/bin/env bash
# Static checks of the packaging (no Docker, no cluster needed):
#   - the Helm chart lints (helm 3 and helm 4) and renders,
#   - the rendered objects validate against the oldest and newest Kubernetes
#     API schemas that kubernetes-validate knows,
#   - values.schema.json rejects bad values,
#   - deploy/kubernetes/cronjob.yaml is what the chart renders (no drift),
#   - the IAM policies are valid JSON and grant exactly the calls the code makes;
#     deploy/terraform passes fmt and validate
#     (only where terraform and a provider mirror exist; SKIP otherwise),
#   - hadolint passes on the Dockerfile and shellcheck on scripts/*.sh.
# Tools come from .tools/ (scripts/install-tools.sh); shellcheck from PATH.
#
# Usage: scripts/check-packaging.sh [--update]
#   --update  rewrite deploy/kubernetes/cronjob.yaml instead of failing on drift.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

helm3=.tools/bin/helm
helm4=.tools/bin/helm4
venv=.tools/venv
chart=charts/lock-exec
test_values=$chart/ci/test-values.yaml
plain_values=deploy/kubernetes/values.yaml
plain_out=deploy/kubernetes/cronjob.yaml
# The exact command that generates $plain_out; it is also written into its header.
plain_cmd="helm template lock-exec $chart --namespace default -f $plain_values"

update=false
case "${1:-}" in
  --update) update=true ;;
  "") ;;
  -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passes=0
failures=0

# pass NAME / fail NAME [LOG]: one result line; a failure shows its log, indented.
pass() {
  printf 'PASS  %s\n' "$1"
  passes=$((passes + 1))
}
fail() {
  printf 'FAIL  %s\n' "$1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed 's/^/      /' "$2" | head -n 40; fi
  failures=$((failures + 1))
}

# check NAME CMD...: CMD must succeed.
check() {
  local name=$1
  shift
  if "$@" >"$tmp/log" 2>&1; then pass "$name"; else fail "$name" "$tmp/log"; fi
}

# reject NAME VALUES_YAML WHY [HELM]: `helm template` with the test values plus
# VALUES_YAML on top must fail, and its message must match the extended regex WHY (the
# schema's or the chart's own reason, not any failure).
reject() {
  local name=$1 values=$2 why=$3 helm=${4:-$helm3}
  printf '%s\n' "$values" >"$tmp/bad-values.yaml"
  if "$helm" template lock-exec "$chart" -f "$test_values" -f "$tmp/bad-values.yaml" >"$tmp/log" 2>&1; then
    fail "rejects $name" "$tmp/log"
  elif grep -qE "$why" "$tmp/log"; then
    pass "rejects $name"
  else
    fail "rejects $name (failed for another reason than /$why/)" "$tmp/log"
  fi
}

# A missing tool fails the run at once, with a hint.
missing=0
for tool in "$helm3" "$helm4" "$venv/bin/kubernetes-validate" "$venv/bin/hadolint" "$venv/bin/python"; do
  if [ ! -x "$tool" ]; then
    fail "tool $tool present (run scripts/install-tools.sh)"
    missing=1
  fi
done
if ! command -v shellcheck >/dev/null 2>&1; then
  fail "tool shellcheck present (run scripts/install-tools.sh)"
  missing=1
fi
if [ "$missing" = 1 ]; then exit 1; fi

kv=$venv/bin/kubernetes-validate
read -r k8s_oldest k8s_newest < <("$venv/bin/python" -c '
import kubernetes_validate.utils as u
v = sorted(set(u.all_versions()), key=lambda s: tuple(int(p) for p in s.split(".")))
print(v[0], v[-1])')
if [ "$k8s_oldest" = "$k8s_newest" ]; then
  fail "kubernetes-validate knows two Kubernetes versions (oldest $k8s_oldest, newest $k8s_newest)"
fi

# --- helm 3 ------------------------------------------------------------------
check "helm3 lint --strict (ci/test-values.yaml)" "$helm3" lint --strict "$chart" -f "$test_values"
check "helm3 lint --strict ($plain_values)" "$helm3" lint --strict "$chart" -f "$plain_values"
render_test() { "$1" template lock-exec "$chart" --namespace batch -f "$test_values" >"$2"; }
check "helm3 template (ci/test-values.yaml)" render_test "$helm3" "$tmp/test.yaml"

for version in "$k8s_oldest" "$k8s_newest"; do
  check "kubernetes-validate --strict $version (ci/test-values.yaml)" \
    "$kv" --strict --quiet -k "$version" "$tmp/test.yaml"
done

# The Rust integration tests run what render-job.py prints; check its shape here.
render_job_smoke() {
  "$venv/bin/python" scripts/render-job.py <"$tmp/test.yaml" >"$tmp/job.json" &&
    "$venv/bin/python" - "$tmp/job.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
want = ["/lock-exec-bin/lock-exec", "run", "nightly-report", "--", "sh", "-c", "echo hello", "extra arg"]
assert job["command"] == want, job["command"]
assert job["env"]["LOCK_EXEC_TABLE"] == "lock-exec", job["env"]
assert job["env"]["LOCK_EXEC_CLUSTER"] == "eu-west-1-blue", job["env"]
assert job["env"]["LOCK_EXEC_OWNER"] is None, job["env"]
assert job["env"]["GREETING"] == "hello world", job["env"]
PY
}
check "render-job.py prints the job's argv and env" render_job_smoke
# The container tests play what `render-job.py --pod` prints with `podman kube play`.
render_pod_smoke() {
  "$venv/bin/python" scripts/render-job.py --pod <"$tmp/test.yaml" >"$tmp/pod.json" &&
    "$venv/bin/python" - "$tmp/pod.json" <<'PY'
import json, sys
pod = json.load(open(sys.argv[1]))
assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod"), pod
assert pod["spec"]["restartPolicy"] == "Never", pod["spec"]
assert [c["name"] for c in pod["spec"]["initContainers"]] == ["lock-exec-install"], pod["spec"]
assert [c["name"] for c in pod["spec"]["containers"]] == ["job"], pod["spec"]
assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == "lock-exec", pod["metadata"]
PY
}
check "render-job.py --pod prints the job's pod" render_pod_smoke

# --- schema: bad values must make `helm template` fail ------------------------
# The defaults alone lack schedule, job.image and job.command.
if "$helm3" template lock-exec "$chart" >"$tmp/log" 2>&1; then
  fail "rejects the default values alone" "$tmp/log"
elif grep -qE "job.image is required|schedule is required|at '\/schedule'" "$tmp/log"; then
  pass "rejects the default values alone"
else
  fail "rejects the default values alone (for another reason)" "$tmp/log"
fi
schema="schema"
reject "job.command missing" $'job:\n  command: null' "job.command is required|$schema"
reject "job.command empty" $'job:\n  command: []' "job.command is required|$schema"
reject "job.image missing" $'job:\n  image: null' "job.image is required|$schema"
reject "schedule empty" 'schedule: ""' "schedule is required|$schema"
reject "lock.lease as a number (5)" $'lock:\n  lease: 5' "$schema"
reject "lock.expire without a unit (\"3600\")" $'lock:\n  expire: "3600"' "$schema"
reject "lock.minHold as prose (\"5 minutes\")" $'lock:\n  minHold: 5 minutes' "$schema"
reject "lock.key starting with \"-\"" $'lock:\n  key: --force' "$schema"
reject "lock.lockedExitCode 256" $'lock:\n  lockedExitCode: 256' "$schema"
reject "lock.waitExitCode -1" $'lock:\n  waitExitCode: -1' "$schema"
reject "an unknown top-level key" 'shedule: "@hourly"' "$schema"
reject "an unknown key under lock" $'lock:\n  leese: 30s' "$schema"
reject "concurrencyPolicy not in Allow/Forbid/Replace" 'concurrencyPolicy: Sometimes' "$schema"
# lock-exec's own rules, at render time rather than in the pod.
reject "lock.expire not above lock.lease" $'lock:\n  lease: 30s\n  expire: 20s' "lock.expire \\(20s\\) must be longer than lock.lease"
reject "lock.heartbeat half of lock.lease" $'lock:\n  heartbeat: 15s' "must be less than half of lock.lease"
reject "no room for grace and skew" $'lock:\n  grace: 20s' "must be less than lock.lease \\(30s\\)"
reject "lock.lease below 1s" $'lock:\n  lease: 800ms' "at least 1s"
reject "lock.minHold above lock.expire" $'lock:\n  minHold: 2h' "must not exceed lock.expire"
reject "activeDeadlineSeconds below lock-exec's own limits" 'activeDeadlineSeconds: 3600' "activeDeadlineSeconds \\(3600\\) must be at least"
reject "an empty jobNameLabel" $'lock:\n  jobNameLabel: ""' "$schema"

# --- plain YAML: generated from the chart, must not drift ---------------------
render_plain() {
  printf '# GENERATED FILE - DO NOT EDIT. Edit %s, then run scripts/check-packaging.sh --update.\n' "$plain_values"
  printf '# Generated from the Helm chart with:\n#   %s\n' "$plain_cmd"
  printf '# Apply with: kubectl apply -f %s (namespace "default"; change metadata.namespace for another).\n' "$plain_out"
  "$helm3" template lock-exec "$chart" --namespace default -f "$plain_values"
}
if ! render_plain >"$tmp/plain.yaml" 2>"$tmp/log"; then
  fail "render $plain_out" "$tmp/log"
elif $update; then
  cp "$tmp/plain.yaml" "$plain_out"
  pass "$plain_out regenerated"
elif diff -u "$plain_out" "$tmp/plain.yaml" >"$tmp/log" 2>&1; then
  pass "$plain_out up to date"
else
  fail "$plain_out differs from the chart (run scripts/check-packaging.sh --update)" "$tmp/log"
fi
for version in "$k8s_oldest" "$k8s_newest"; do
  check "kubernetes-validate --strict $version ($plain_out)" "$kv" --strict --quiet -k "$version" "$plain_out"
done

# --- helm 4 ------------------------------------------------------------------
helm4_version=$("$helm4" version --template '{{.Version}}' 2>/dev/null || echo unknown)
check "helm4 ($helm4_version) lint --strict (ci/test-values.yaml)" "$helm4" lint --strict "$chart" -f "$test_values"
check "helm4 ($helm4_version) lint --strict ($plain_values)" "$helm4" lint --strict "$chart" -f "$plain_values"
# helm 4 separates documents with an extra blank line; otherwise output must match helm 3.
same_as_helm3() {
  render_test "$helm4" "$tmp/test4.yaml" &&
    diff -u <(grep -v '^$' "$tmp/test.yaml") <(grep -v '^$' "$tmp/test4.yaml")
}
check "helm4 template renders what helm3 renders" same_as_helm3
reject "lock.lease as a number (helm4)" $'lock:\n  lease: 5' "$schema" "$helm4"
reject "an unknown key under lock (helm4)" $'lock:\n  leese: 30s' "$schema" "$helm4"
reject "lock.expire not above lock.lease (helm4)" $'lock:\n  lease: 30s\n  expire: 20s' "must be longer than lock.lease" "$helm4"

# --- AWS: IAM policies and Terraform -------------------------------------------
for policy in deploy/iam/*.json; do
  check "$policy is valid JSON" "$venv/bin/python" -m json.tool "$policy"
done
# The policies grant exactly what the code calls: the DynamoDB operations in
# src/lock/dynamo.rs (run, unlock, status; Scan is list's) and src/commands/create_table.rs.
iam_matches_code() {
  "$venv/bin/python" - <<'PY'
import json, re, sys
def calls(path):
    ops = re.findall(r"\.(get_item|update_item|put_item|delete_item|scan|query|create_table|describe_table|update_time_to_live|describe_time_to_live)\(\)", open(path).read())
    return {"dynamodb:" + "".join(w.capitalize() for w in op.split("_")) for op in ops}
def actions(path):
    return {a for st in json.load(open(path))["Statement"] for a in st["Action"]}
store = calls("src/lock/dynamo.rs")
run, listing = store - {"dynamodb:Scan"}, store & {"dynamodb:Scan"}
admin = calls("src/commands/create_table.rs")
checks = [
    ("deploy/iam/lock-exec-policy.json", run, "=="),
    ("deploy/iam/lock-exec-prefix-policy.json", run, "=="),
    ("deploy/iam/lock-exec-list-policy.json", listing, "=="),
    ("deploy/iam/lock-exec-admin-policy.json", admin, ">="),
]
bad = False
for path, want, how in checks:
    got = actions(path)
    ok = got == want if how == "==" else got >= want
    print(f"{path}: grants {sorted(got)}, code calls {sorted(want)}")
    bad |= not ok
prefix = json.load(open("deploy/iam/lock-exec-prefix-policy.json"))["Statement"][0]
if "dynamodb:LeadingKeys" not in json.dumps(prefix.get("Condition", {})):
    print("the prefix policy has no dynamodb:LeadingKeys condition"); bad = True
tf = open("deploy/terraform/main.tf").read()
block = tf[tf.index('data "aws_iam_policy_document" "run"'):tf.index('data "aws_iam_policy_document" "list"')]
tf_run = set(re.findall(r'"(dynamodb:[A-Za-z]+)"', block[block.index("actions"):block.index("]")]))
print(f"deploy/terraform run policy: {sorted(tf_run)}")
bad |= tf_run != run
sys.exit(1 if bad else 0)
PY
}
check "IAM policies grant exactly the DynamoDB calls the code makes" iam_matches_code
# terraform is not installed by scripts/install-tools.sh (no registry here ships
# it); validate when this machine has it and a provider mirror (TF_PLUGIN_DIR).
tf_plugins=${TF_PLUGIN_DIR:-/opt/tf-plugins}
terraform_validate() {
  mkdir -p "$tmp/tf"
  cp deploy/terraform/*.tf "$tmp/tf/"
  (
    cd "$tmp/tf"
    export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1
    terraform init -backend=false -input=false -no-color -plugin-dir="$tf_plugins" &&
      terraform validate -no-color
  )
}
if command -v terraform >/dev/null 2>&1 && [ -d "$tf_plugins" ]; then
  check "terraform fmt -check deploy/terraform" env TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -diff deploy/terraform
  check "terraform validate deploy/terraform" terraform_validate
else
  printf 'SKIP  terraform fmt/validate (needs terraform and a provider mirror in %s)\n' "$tf_plugins"
fi

# --- Dockerfile and scripts ---------------------------------------------------
check "hadolint Dockerfile" "$venv/bin/hadolint" Dockerfile

# The image, the benchmark and the README's install line build the one static binary:
# the same RUSTFLAGS everywhere (the benchmark must measure what ships).
static_flags_agree() {
  local want="RUSTFLAGS='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs'"
  local file n ok=0
  # Each place that builds (or tells how to build) the binary, and how often it does.
  for file in Dockerfile:1 scripts/build-image.sh:1 scripts/bench.sh:2 README.md:1; do
    n=$(grep -cF -- "$want" "${file%%:*}")
    printf '%s: %s of %s\n' "${file%%:*}" "$n" "${file##*:}"
    [ "$n" -eq "${file##*:}" ] || ok=1
  done
  # And no other RUSTFLAGS anywhere in them.
  if grep -ho "RUSTFLAGS='[^']*'" Dockerfile scripts/build-image.sh scripts/bench.sh README.md | grep -vqxF -- "$want"; then
    echo "another RUSTFLAGS value:"; grep -n "RUSTFLAGS=" Dockerfile scripts/build-image.sh scripts/bench.sh README.md
    ok=1
  fi
  return "$ok"
}
check "one set of static RUSTFLAGS (Dockerfile, build-image.sh, bench.sh, README)" static_flags_agree
check "shellcheck scripts/*.sh" shellcheck scripts/*.sh

# The closing line has the "N passed, N failed" form that CI summaries read.
printf 'check-packaging: %d passed, %d failed\n' "$passes" "$failures"
[ "$failures" -eq 0 ]
