#!/usr/bin/env python3
"""Print what the lock-exec chart's job container would execute, as JSON.

Reads `helm template` output (one or more YAML documents) on stdin, finds the
CronJob and its job container, and prints

    {"command": [argv...], "env": {"NAME": "value", ...}}

- "command" is the container's full argv: `command` followed by `args`, with
  Kubernetes' `$(VAR)` references expanded the way the kubelet does (a reference
  to an unknown or valueFrom variable stays as written, `$$` becomes `$`).
  argv[0] is /lock-exec-bin/lock-exec; a test substitutes its local binary.
- "env" maps each `env` entry to its value, in order, a later entry of the same
  name replacing an earlier one (as in Kubernetes). Values are expanded like the
  command. Entries with `valueFrom` (LOCK_EXEC_OWNER from metadata.name, secrets,
  ...) are present with the value null: they only exist in a real pod, and a
  caller decides what to put there. `envFrom` is ignored.

With --pod it prints instead the pod the Job controller would create from the
CronJob's pod template, as a `Pod` object (JSON, which `podman kube play` reads
as YAML): the template's metadata and spec, unchanged. The controller's own
additions (the pod's name, the job-name labels) are the caller's to make.

Usage:
    helm template x charts/lock-exec -f values.yaml | scripts/render-job.py
    ... | scripts/render-job.py --container job --cronjob NAME
    ... | scripts/render-job.py --pod

Needs PyYAML (in .tools/venv, a dependency of kubernetes-validate); otherwise
the Python standard library only. Exit status 2 on bad input.
"""

import argparse
import json
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.exit("render-job.py: PyYAML is missing; run it with .tools/venv/bin/python "
             "(scripts/install-tools.sh creates it)")

# $$ (an escaped dollar) or $(NAME): the two forms the kubelet treats specially.
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


def expand(text, env):
    """Expand $(NAME) references like Kubernetes' expansion package.

    Known NAMEs (with a string value) are replaced, `$$` becomes `$`, anything
    else, including an unterminated `$(`, is left unchanged.
    """

    def replace(match):
        if match.group(0) == "$$":
            return "$"
        value = env.get(match.group(1))
        return value if isinstance(value, str) else match.group(0)

    return _REFERENCE.sub(replace, text)


def fail(message):
    print(f"render-job.py: {message}", file=sys.stderr)
    sys.exit(2)


def find_cronjob(documents, name):
    cronjobs = [d for d in documents if isinstance(d, dict) and d.get("kind") == "CronJob"]
    if name is not None:
        cronjobs = [d for d in cronjobs if d.get("metadata", {}).get("name") == name]
    if len(cronjobs) != 1:
        names = [d.get("metadata", {}).get("name") for d in cronjobs]
        fail(f"expected exactly one CronJob{'' if name is None else ' named ' + name}, found {names}")
    return cronjobs[0]


def find_container(pod_spec, name):
    containers = pod_spec.get("containers") or []
    for container in containers:
        if container.get("name") == name:
            return container
    fail(f"no container named {name!r} (have {[c.get('name') for c in containers]})")


def render(container):
    env = {}
    for entry in container.get("env") or []:
        if "valueFrom" in entry:
            env[entry["name"]] = None
        else:
            env[entry["name"]] = expand(str(entry.get("value", "")), env)
    argv = [expand(str(a), env) for a in (container.get("command") or []) + (container.get("args") or [])]
    return {"command": argv, "env": env}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cronjob", help="name of the CronJob when there are several")
    parser.add_argument("--container", default="job", help="container name (default: job)")
    parser.add_argument("--pod", action="store_true", help="print the job's pod as a Pod object")
    options = parser.parse_args()

    try:
        documents = list(yaml.safe_load_all(sys.stdin))
    except yaml.YAMLError as error:
        fail(f"stdin is not YAML: {error}")
    cronjob = find_cronjob(documents, options.cronjob)
    try:
        template = cronjob["spec"]["jobTemplate"]["spec"]["template"]
        pod_spec = template["spec"]
    except (KeyError, TypeError):
        fail("the CronJob has no spec.jobTemplate.spec.template.spec")
    if options.pod:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": template.get("metadata") or {}, "spec": pod_spec}
        json.dump(pod, sys.stdout, indent=2)
    else:
        json.dump(render(find_container(pod_spec, options.container)), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
