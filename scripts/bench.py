#!/usr/bin/env python3
"""lock-exec benchmark: start-up overhead, memory, size, DynamoDB requests, takeover time
and lost-lease behaviour, measured against a local dynalite (stdlib only).

Every figure is a median with its spread over repeated runs; timed runs are interleaved
with their reference (reference, subject, reference, subject...). Prints a Markdown table
and writes it to <out>/results.md, with every sample in <out>/results.json.

Usage:
  scripts/bench.py                      all standard sections (see docs/performance.md)
  scripts/bench.py --only overhead,rss --binary PATH --runs 30 --out DIR   (one other build)
  scripts/bench.py --only levers --variant NAME=PATH [--variant ...]       (builds side by side)
  scripts/bench.py --only analysis --binary DYNAMIC_PROFILE_BUILD --perf-binary STATIC_PROFILE_BUILD
                   --static-binary SHIPPED --out DIR      (where time and memory go)
  The last two are what scripts/bench-levers.sh runs.

Environment: BENCH_RUNS (default 40), BENCH_QUICK=1 (fewer samples, no 35 s / 30 s runs).
Exit status: 0 after printing, whatever the figures; non-zero only when something is
broken (dynalite did not start, lock-exec failed or misbehaved).
"""

from __future__ import annotations

import argparse
import atexit
import calendar
import collections
import datetime
import gzip
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = ROOT / "target/x86_64-unknown-linux-gnu/release/lock-exec"
DYNALITE = ROOT / ".tools/npm/node_modules/.bin/dynalite"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TABLE = "bench"
MiB = 1024 * 1024

# Figures given in the project's issue for the original Go tool; NOT measured here.
GO_GIVEN = {"overhead_ms": 23.5, "peak_rss_mib": 13.3, "binary_mib": 10.2}
TARGETS = {"overhead_ms": 10.0, "peak_rss_mib": 8.0, "peak_rss_aim_mib": 6.0, "binary_mib": 8.0}

STANDARD = ["size", "overhead", "rss", "requests", "takeover", "leaselost"]
ALL_SECTIONS = STANDARD + ["analysis", "levers"]


class Broken(Exception):
    """Something is wrong with lock-exec or the set-up (not noise)."""


# --------------------------------------------------------------------------- cleanup

_cleanup_pids: set[int] = set()
_cleanup_procs: list[subprocess.Popen] = []
_cleanup_lock = threading.Lock()


def track(pid: int) -> None:
    with _cleanup_lock:
        _cleanup_pids.add(pid)


def _cleanup() -> None:
    with _cleanup_lock:
        pids = list(_cleanup_pids)
        procs = list(_cleanup_procs)
    for pid in pids:  # only processes this script started (lock-exec runs and their children)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:  # servers, started in their own session
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


# --------------------------------------------------------------------------- statistics


def summary(xs: list[float]) -> dict:
    xs = [float(x) for x in xs]
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    if len(s) >= 2:
        q = statistics.quantiles(s, n=10, method="inclusive")
        p10, p90 = q[0], q[8]
    else:
        p10 = p90 = s[0]
    return {"n": len(s), "median": statistics.median(s), "p10": p10, "p90": p90, "min": s[0], "max": s[-1]}


def spread(s: dict, unit: str = "", digits: int = 1, scale: float = 1.0) -> str:
    """p10–p90 for 10+ samples, otherwise min–max; says which."""
    if not s.get("n"):
        return "n/a"
    f = lambda v: f"{v * scale:.{digits}f}"  # noqa: E731
    if s["n"] >= 10:
        return f"{f(s['p10'])}–{f(s['p90'])}{unit} (p10–p90, n={s['n']})"
    if s["n"] == 1:
        return "single sample"
    return f"{f(s['min'])}–{f(s['max'])}{unit} (min–max, n={s['n']})"


def med(s: dict, unit: str = "", digits: int = 1, scale: float = 1.0) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['median'] * scale:.{digits}f}{unit}"


def mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗")


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wall_ns() -> int:
    return time.time_ns()


def parse_rfc3339_ns(s: str) -> int:
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z", s)
    if not m:
        raise ValueError(f"not an RFC 3339 UTC time: {s!r}")
    y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "0")[:9].ljust(9, "0")
    return calendar.timegm((y, mo, d, h, mi, sec)) * 1_000_000_000 + int(frac)


def log_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def log_event(lines: list[dict], message: str) -> dict | None:
    return next((l for l in lines if l.get("message") == message), None)


def proc_status(pid: int) -> dict | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def kib(st: dict | None, field: str) -> int | None:
    if not st or field not in st:
        return None
    return int(st[field].split()[0])


def first_child(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def dead(pid: int) -> bool:
    """Gone, or a zombie (it no longer runs)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    state = stat[stat.rindex(")") + 2 :].split()[0]
    return state in ("Z", "X")


def wait_file(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            text = path.read_text().strip()
            if text:
                return text
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise Broken(f"lock-exec exited ({proc.returncode}) before {path.name} appeared")
        time.sleep(0.002)
    raise Broken(f"{path.name} did not appear within {timeout:.0f} s")


# --------------------------------------------------------------------------- dynalite


class Dynalite:
    def __init__(self, logdir: Path):
        if not DYNALITE.exists():
            raise Broken(f"{DYNALITE} is missing: run `make tools` first")
        self.port = free_port()
        self.log = open(logdir / "dynalite.log", "wb")
        self.proc = subprocess.Popen(
            [str(DYNALITE), "--host", "127.0.0.1", "--port", str(self.port), "--createTableMs", "0"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        with _cleanup_lock:
            _cleanup_procs.append(self.proc)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise Broken(f"dynalite exited with {self.proc.returncode} (see {self.log.name})")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise Broken("dynalite did not start listening within 30 s")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_item(self, key: str) -> dict | None:
        """GetItem straight from dynalite (it does not check signatures)."""
        import http.client

        body = json.dumps({"TableName": TABLE, "Key": {"key": {"S": key}}, "ConsistentRead": True})
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("POST", "/", body, {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.GetItem",
            "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20240101/us-east-1/dynamodb/aws4_request, "
                             "SignedHeaders=host, Signature=00",
            "X-Amz-Date": "20240101T000000Z",
        })
        r = c.getresponse()
        data = json.loads(r.read() or b"{}")
        c.close()
        return data.get("Item")


def item_size(item: dict) -> int:
    """An item's size by DynamoDB's rules (names + values; numbers ~ 1 byte per 2 digits + 1)."""
    def value(v: dict) -> int:
        (t, x), = v.items()
        if t == "S":
            return len(x.encode())
        if t == "N":
            digits = len(x.lstrip("-").replace(".", "").lstrip("0")) or 1
            return (digits + 1) // 2 + 1
        if t in ("BOOL", "NULL"):
            return 1
        if t == "B":
            return len(x) * 3 // 4
        if t == "M":
            return 3 + sum(len(k.encode()) + 1 + value(w) for k, w in x.items())
        if t == "L":
            return 3 + sum(1 + value(w) for w in x)
        if t in ("SS", "NS", "BS"):
            return sum(value({t[0]: w}) for w in x)
        return 0

    return sum(len(k.encode()) + value(v) for k, v in item.items())


# --------------------------------------------------------------------------- proxy


def http_message_len(buf: bytes) -> int | None:
    """Length of the first complete HTTP/1.1 message in buf (Content-Length framing)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1")
    length = 0
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    total = end + 4 + length
    return total if len(buf) >= total else None


class Proxy:
    """Counting / fault TCP proxy in front of dynalite. Counts each request whose request
    line starts with `POST ` (by X-Amz-Target), measures the server's response time, and
    in blackhole mode keeps every connection open but forwards nothing either way."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.blackhole = False
        self.closed = False
        self.conns: set[socket.socket] = set()
        self.reset()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self.lock:
            self.blackhole = False
            self.requests: list[str] = []   # X-Amz-Target of each POST seen
            self.dropped = 0                # of those, swallowed by the blackhole
            self.server_ms: list[float] = []
            conns, self.conns = self.conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def set_blackhole(self, on: bool) -> None:
        with self.lock:
            self.blackhole = on

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.closed = True
        self.lsock.close()
        self.reset()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), 2)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.update((c, u))
            pending: collections.deque = collections.deque()
            threading.Thread(target=self._requests, args=(c, u, pending), daemon=True).start()
            threading.Thread(target=self._responses, args=(u, c, pending), daemon=True).start()

    def _requests(self, c: socket.socket, u: socket.socket, pending) -> None:
        buf = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                buf += data
                while (n := http_message_len(buf)) is not None:
                    msg, buf = buf[:n], buf[n:]
                    target = ""
                    m = re.search(rb"(?im)^x-amz-target:\s*\S+\.(\w+)", msg)
                    if m:
                        target = m.group(1).decode()
                    with self.lock:
                        hole = self.blackhole
                        if msg.startswith(b"POST "):
                            self.requests.append(target)
                            if hole:
                                self.dropped += 1
                    if not hole:
                        pending.append(time.perf_counter())
                        u.sendall(msg)
        except OSError:
            pass
        self._close(c, u)

    def _responses(self, u: socket.socket, c: socket.socket, pending) -> None:
        buf = b""
        try:
            while True:
                data = u.recv(65536)
                now = time.perf_counter()
                if not data:
                    with self.lock:
                        hole = self.blackhole
                    if hole:  # keep the client's side open; it hears nothing more
                        return
                    break
                with self.lock:
                    hole = self.blackhole
                if hole:
                    continue
                if not buf and pending:
                    with self.lock:
                        self.server_ms.append((now - pending.popleft()) * 1000)
                buf += data
                while (n := http_message_len(buf)) is not None:
                    buf = buf[n:]
                c.sendall(data)
        except OSError:
            pass
        self._close(c, u)

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self.lock:
                self.conns.discard(s)


# --------------------------------------------------------------------------- lock-exec runner


class Bench:
    def __init__(self, args):
        self.args = args
        self.binary = Path(args.binary).resolve()
        if not self.binary.exists() and args.variant:  # levers: any build can create the table
            self.binary = Path(args.variant[0].partition("=")[2]).resolve()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="lock-exec-bench-"))
        atexit.register(shutil.rmtree, self.tmp, True)
        self.quick = args.quick
        self.runs = args.runs
        self.warmup = 2 if self.quick else 5
        self.results: dict = {}
        self.errors: list[str] = []
        self.db: Dynalite | None = None
        self._stderr = tempfile.TemporaryFile(dir=self.tmp)
        self._keyseq = 0

    # A clean environment: what a cron job or pod would have, not this shell's extras
    # (e.g. SSL_CERT_DIR), so the CA loading is the system default.
    def env(self, endpoint: str | None = None, **extra) -> dict:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "LOCK_EXEC_TABLE": TABLE,
            "LOCK_EXEC_ENDPOINT_URL": endpoint or self.db.endpoint,
            "LOCK_EXEC_LOG_FORMAT": "json",
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def key(self, prefix: str) -> str:
        self._keyseq += 1
        return f"bench-{prefix}-{os.getpid()}-{self._keyseq}"

    def timed(self, argv: list[str], env: dict | None) -> dict:
        """Runs argv to completion; wall time (perf_counter), rusage via wait4, stderr."""
        self._stderr.seek(0)
        self._stderr.truncate()
        t0 = time.perf_counter_ns()
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=self._stderr)
        _, status, ru = os.wait4(p.pid, 0)
        t1 = time.perf_counter_ns()
        p.returncode = os.waitstatus_to_exitcode(status)
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")
        return {"ms": (t1 - t0) / 1e6, "rc": p.returncode, "stderr": err,
                "cpu_ms": (ru.ru_utime + ru.ru_stime) * 1000, "maxrss_kib": ru.ru_maxrss,
                "minflt": ru.ru_minflt}

    def lock_exec(self, args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.binary), *args], env=env, capture_output=True, text=True, timeout=timeout)
        return r

    def status(self, key: str) -> dict:
        r = self.lock_exec(["status", key, "-o", "json"], self.env())
        if r.returncode != 0:
            raise Broken(f"lock-exec status {key} exited {r.returncode}: {r.stderr.strip()[-300:]}")
        return json.loads(r.stdout)

    def spawn(self, args: list[str], env: dict) -> subprocess.Popen:
        p = subprocess.Popen([str(self.binary), *args], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        track(p.pid)
        return p

    def check_ran(self, r: dict, what: str, code: int = 0) -> None:
        lines = log_lines(r["stderr"])
        exited = log_event(lines, "command exited")
        if r["rc"] != code or exited is None or exited.get("code") != code:
            raise Broken(f"{what}: lock-exec exited {r['rc']} (expected {code}, with the command run); "
                         f"stderr: {r['stderr'].strip()[-400:]}")

    # ----------------------------------------------------------------------- sections

    def setup(self) -> None:
        if not self.binary.exists():
            raise Broken(f"{self.binary} does not exist: build it first (scripts/bench.sh)")
        self.db = Dynalite(self.tmp)
        r = self.lock_exec(["create-table"], self.env())
        if r.returncode != 0:
            raise Broken(f"lock-exec create-table exited {r.returncode}: {r.stderr.strip()[-400:]}")
        # dynalite (node) answers faster once its JIT has warmed up: without this, the first
        # section measured pays for it (about 2 ms per run here).
        key = self.key("warmup")
        for _ in range(10 if self.quick else 40):
            r = self.timed([str(self.binary), "run", key, "--", "true"], self.env())
            self.check_ran(r, "warm-up run")

    def section_size(self) -> None:
        size = self.binary.stat().st_size
        res = {"binary": str(self.binary), "binary_bytes": size}
        strip = shutil.which("strip")
        if strip:
            copy = self.tmp / "lock-exec.stripped"
            subprocess.run([strip, "-o", str(copy), str(self.binary)], check=True)
            res["strip_copy_bytes"] = copy.stat().st_size
        with open(self.binary, "rb") as f:
            elf = f.read(1 << 16)
        res["static"] = not elf_has_interp(elf)
        if CA_BUNDLE.exists():
            ca = CA_BUNDLE.resolve()
            res["ca_bundle_bytes"] = ca.stat().st_size
            res["image_bytes"] = size + res["ca_bundle_bytes"]
            # The layer as a registry would store it: a tar of the two files, gzipped.
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(str(self.binary), arcname="lock-exec")
                tar.add(str(ca), arcname="etc/ssl/certs/ca-certificates.crt")
            res["image_tar_bytes"] = len(buf.getvalue())
            res["image_tar_gz_bytes"] = len(gzip.compress(buf.getvalue(), 6))
        self.results["size"] = res

    def _pairs(self, name: str, ref_argv, subject, n: int, check) -> dict:
        """Interleaved reference/subject runs; subject(i) returns (argv, env). The reference
        gets the same clean environment as lock-exec's child."""
        ref_env = self.env()
        ref, sub, diff, ref_cpu, sub_cpu, sub_flt = [], [], [], [], [], []
        for i in range(self.warmup + n):
            r = self.timed(ref_argv, ref_env)
            if r["rc"] != 0:
                raise Broken(f"{name}: reference {ref_argv} exited {r['rc']}")
            argv, env = subject(i)
            s = self.timed(argv, env)
            check(s, i)
            if i < self.warmup:
                continue
            ref.append(r["ms"])
            sub.append(s["ms"])
            diff.append(s["ms"] - r["ms"])
            ref_cpu.append(r["cpu_ms"])
            sub_cpu.append(s["cpu_ms"])
            sub_flt.append(s["minflt"])
        return {"reference_ms": summary(ref), "subject_ms": summary(sub), "diff_ms": summary(diff),
                "reference_cpu_ms": summary(ref_cpu), "subject_cpu_ms": summary(sub_cpu),
                "subject_minor_faults": summary(sub_flt),
                "samples": {"reference_ms": ref, "subject_ms": sub, "subject_cpu_ms": sub_cpu}}

    def section_overhead(self) -> None:
        b = str(self.binary)
        env = self.env()
        res = {"n": self.runs, "warmup_discarded": self.warmup}

        key = self.key("overhead")  # the same key every run, as a cron job re-runs one key
        res["plain"] = self._pairs(
            "overhead", ["/bin/true"], lambda i: ([b, "run", key, "--", "true"], env), self.runs,
            lambda s, i: self.check_ran(s, "run K -- true"))
        res["plain"]["key"] = "same key every run"

        # --min-hold keeps each key locked for 1 s after the run: distinct keys, so no run
        # is skipped; each run is checked to have run its command (log + exit code) and,
        # untimed, that the key is held with fence 1 afterwards.
        keys = []

        def minhold(i):
            keys.append(self.key("minhold"))
            return [b, "run", keys[-1], "--min-hold", "1s", "--", "sh", "-c", "exit 0"], env

        def check_minhold(s, i):
            self.check_ran(s, "run K --min-hold 1s -- sh -c 'exit 0'")
            st = self.status(keys[-1])
            if st.get("state") != "held" or st.get("fence") != 1:
                raise Broken(f"--min-hold run left {keys[-1]} as {st}, expected held with fence 1")

        res["minhold"] = self._pairs("minhold", ["/bin/sh", "-c", "exit 0"], minhold, self.runs, check_minhold)
        res["minhold"]["key"] = "a fresh key every run"

        # The scratch image has one CA file and nothing else in /etc/ssl/certs; the TLS
        # stack reads both the bundle and that directory. Same layout, via the env vars
        # rustls-native-certs honours.
        if CA_BUNDLE.exists():
            cadir = self.tmp / "image-certs"
            cadir.mkdir(exist_ok=True)
            shutil.copy(CA_BUNDLE.resolve(), cadir / "ca-certificates.crt")
            env_img = self.env(SSL_CERT_FILE=cadir / "ca-certificates.crt", SSL_CERT_DIR=cadir)
            key2 = self.key("overhead-img")
            res["image_ca"] = self._pairs(
                "overhead-image-ca", ["/bin/true"], lambda i: ([b, "run", key2, "--", "true"], env_img),
                self.runs, lambda s, i: self.check_ran(s, "run K -- true (image CA layout)"))
        self.results["overhead"] = res

    def _poll_rss(self, p: subprocess.Popen, child_too: bool) -> dict:
        """Polls VmHWM (and the child's) every ~5 ms until p exits; last values win."""
        own = child = rss = anon = file_ = None
        threads = 0
        cpid = None
        while p.poll() is None:
            st = proc_status(p.pid)
            v = kib(st, "VmHWM")
            if v is not None:
                own, rss = v, kib(st, "VmRSS")
                anon, file_ = kib(st, "RssAnon"), kib(st, "RssFile")
                threads = max(threads, int(st.get("Threads", "0")))
            if child_too:
                cpid = cpid or first_child(p.pid)
                if cpid:
                    c = kib(proc_status(cpid), "VmHWM")
                    if c is not None and not dead(cpid):
                        child = c
            time.sleep(0.005)
        return {"vmhwm": own, "vmrss": rss, "rss_anon": anon, "rss_file": file_, "threads": threads,
                "child_vmhwm": child}

    def section_rss(self) -> None:
        n = 3 if self.quick else max(3, min(10, self.runs // 4))
        env = self.env()
        key = self.key("rss")
        own, child, bare, anon, file_, idle, threads = [], [], [], [], [], [], []
        for _ in range(n):
            p = subprocess.Popen(["sleep", "1"], env=env, stdin=subprocess.DEVNULL)
            r = self._poll_rss(p, False)
            bare.append(r["vmhwm"])
            self._stderr.seek(0)
            self._stderr.truncate()
            p = subprocess.Popen([str(self.binary), "run", key, "--", "sleep", "1"], env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
            track(p.pid)
            r = self._poll_rss(p, True)
            if p.returncode != 0:
                raise Broken(f"run K -- sleep 1 exited {p.returncode}")
            own.append(r["vmhwm"])
            child.append(r["child_vmhwm"])
            anon.append(r["rss_anon"])
            file_.append(r["rss_file"])
            idle.append(r["vmrss"])
            threads.append(r["threads"])
        res = {"n": n, "lock_exec_vmhwm_kib": summary(own), "child_vmhwm_kib": summary([c for c in child if c]),
               "bare_sleep_vmhwm_kib": summary(bare), "lock_exec_rss_while_child_runs_kib": summary(idle),
               "rss_anon_kib": summary(anon), "rss_file_kib": summary(file_), "threads": summary(threads),
               "samples": {"lock_exec_vmhwm_kib": own, "child_vmhwm_kib": child, "bare_sleep_vmhwm_kib": bare}}
        gnu_time = Path("/usr/bin/time")
        if gnu_time.exists():
            gt, gt_ref = [], []
            for _ in range(n):
                f = self.tmp / "time.out"
                subprocess.run([str(gnu_time), "-f", "%M", "-o", str(f), "sleep", "1"], env=env, check=True)
                gt_ref.append(int(f.read_text().split()[-1]))
                r = subprocess.run([str(gnu_time), "-f", "%M", "-o", str(f), str(self.binary), "run", key, "--",
                                    "sleep", "1"], env=env, capture_output=True)
                if r.returncode != 0:
                    raise Broken(f"/usr/bin/time lock-exec run K -- sleep 1 exited {r.returncode}")
                gt.append(int(f.read_text().split()[-1]))
            res["gnu_time_maxrss_kib"] = summary(gt)
            res["gnu_time_bare_sleep_kib"] = summary(gt_ref)
        self.results["rss"] = res

    def section_requests(self) -> None:
        """Requests per short run, through the counting proxy (renewals: see long_renewals)."""
        n = 3 if self.quick else 10
        proxy = Proxy(self.db.port)
        try:
            env = self.env(proxy.endpoint)
            key = self.key("requests")
            counts, ops = [], collections.Counter()
            for _ in range(n):
                proxy.reset()
                r = self.timed([str(self.binary), "run", key, "--", "true"], env)
                self.check_ran(r, "run K -- true through the proxy")
                with proxy.lock:
                    counts.append(len(proxy.requests))
                    ops.update(proxy.requests)
            item = self.db.get_item(key) or {}
            # A run that finds the key held and skips (no --wait).
            skipped, skipped_ops = [], collections.Counter()
            hkey = self.key("requests-held")
            pidfile = self.tmp / f"{hkey}.pid"
            holder, child = self._holder(hkey, None, pidfile, self.env(), f"echo $$ > {pidfile}; exec sleep 600")
            try:
                for _ in range(n):
                    proxy.reset()
                    r = self.timed([str(self.binary), "run", hkey, "--", "true"], env)
                    if r["rc"] != 0 or log_event(log_lines(r["stderr"]), "command started"):
                        raise Broken(f"run on a held key exited {r['rc']} or ran its command: {r['stderr'][-300:]}")
                    with proxy.lock:
                        skipped.append(len(proxy.requests))
                        skipped_ops.update(proxy.requests)
            finally:
                os.kill(child, signal.SIGTERM)
                holder.communicate(timeout=30)
            self.results["requests"] = {
                "skipped_run": summary(skipped), "skipped_run_ops": {k: v / n for k, v in skipped_ops.items()},
                "short_run": summary(counts), "short_run_samples": counts,
                "short_run_ops": {k: v / n for k, v in ops.items()},
                "item_bytes": item_size(item) if item else None,
                "item_attributes": sorted(item) if item else None,
            }
        finally:
            proxy.close()

    def long_renewals(self) -> dict:
        """One long run at the default lease/heartbeat through its own counting proxy."""
        proxy = Proxy(self.db.port)
        try:
            if self.quick:
                lease, hb, sleep_s, args = 3.0, 1.0, 3.5, ["--lease", "3s"]
            else:
                lease, hb, sleep_s, args = 30.0, 10.0, 35, []
            env = self.env(proxy.endpoint, LOCK_EXEC_LOG="debug")
            key = self.key("renewals")
            p = self.spawn(["run", key, *args, "--", "sleep", str(sleep_s)], env)
            _, err = p.communicate(timeout=sleep_s + 60)
            r = {"rc": p.returncode, "stderr": err}
            self.check_ran(r, f"run K -- sleep {sleep_s}")
            lines = log_lines(err)
            with proxy.lock:
                reqs = list(proxy.requests)
            return {"lease_s": lease, "heartbeat_s": hb, "child_seconds": sleep_s, "requests": len(reqs),
                    "ops": dict(collections.Counter(reqs)),
                    "renewals_logged": sum(1 for l in lines if l.get("message") == "lease renewed"),
                    "expected_requests": 2 + int(sleep_s // hb),
                    "derived_requests_per_hour": 3600 / hb}
        finally:
            proxy.close()

    def _holder(self, key: str, lease: str | None, pidfile: Path, env: dict, script: str):
        args = ["run", key] + (["--lease", lease] if lease else []) + ["--", "sh", "-c", script]
        p = self.spawn(args, env)
        child = int(wait_file(pidfile, 20, p))
        track(child)
        return p, child

    def _takeover_sample(self, lease: str | None, hold_s: float) -> dict:
        key = self.key("takeover")
        pidfile, startfile = self.tmp / f"{key}.pid", self.tmp / f"{key}.start"
        env = self.env()
        holder, child = self._holder(key, lease, pidfile, env, f"echo $$ > {pidfile}; exec sleep 600")
        time.sleep(hold_s)
        t_kill = wall_ns()
        os.kill(holder.pid, signal.SIGKILL)
        os.kill(child, signal.SIGKILL)
        holder.wait()
        contender = self.spawn(["run", key, "--wait", "90s", "--", "sh", "-c", f"date +%s%N > {startfile}"], env)
        st = self.status(key)  # the killed holder's record (the contender cannot take it yet)
        try:
            _, err = contender.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            contender.kill()
            raise Broken("takeover: the contender did not get the key within 120 s")
        if contender.returncode != 0:
            raise Broken(f"takeover: contender exited {contender.returncode}: {err.strip()[-300:]}")
        t_start = int(startfile.read_text())
        started = log_event(log_lines(err), "command started")
        expires = parse_rfc3339_ns(st["expires_at"])
        return {"kill_to_child_start_ms": (t_start - t_kill) / 1e6,
                "kill_to_lease_end_ms": (expires - t_kill) / 1e6,
                "lease_end_to_child_start_ms": (t_start - expires) / 1e6,
                "kill_to_command_started_log_ms":
                    (parse_rfc3339_ns(started["timestamp"]) - t_kill) / 1e6 if started else None,
                "held_before_kill_s": hold_s}

    def section_takeover(self) -> None:
        n = 3 if self.quick else 5
        samples = []
        for i in range(n):
            # Kill at different points of the 1 s heartbeat cycle.
            samples.append(self._takeover_sample("3s", 1.2 + i * 1.0 / n + random.uniform(0, 0.05)))
        res = {"lease_3s": {"kill_to_child_start_ms": summary([s["kill_to_child_start_ms"] for s in samples]),
                            "kill_to_lease_end_ms": summary([s["kill_to_lease_end_ms"] for s in samples]),
                            "lease_end_to_child_start_ms": summary([s["lease_end_to_child_start_ms"] for s in samples]),
                            "samples": samples}}
        if not self.quick:
            s = self._takeover_sample(None, 2.0)
            res["lease_30s"] = {"kill_to_child_start_ms": summary([s["kill_to_child_start_ms"]]), "samples": [s]}
        self.results["takeover"] = res

    def _leaselost_sample(self, proxy: Proxy, script_tail: str) -> dict:
        key = self.key("leaselost")
        pidfile = self.tmp / f"{key}.pid"
        proxy.reset()
        env = self.env(proxy.endpoint)
        holder, child = self._holder(key, "3s", pidfile, env, f"echo $$ > {pidfile}; {script_tail}")
        time.sleep(1.5)
        t_cut = wall_ns()
        proxy.set_blackhole(True)
        end = time.monotonic() + 30
        while not dead(child):
            if time.monotonic() > end:
                raise Broken("lost lease: the child was still alive 30 s after the cut")
            time.sleep(0.002)
        t_dead = wall_ns()
        try:
            _, err = holder.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()
            raise Broken("lost lease: lock-exec did not exit within 30 s of its child")
        t_exit = wall_ns()
        dropped = proxy.dropped
        proxy.reset()
        st = self.status(key)  # straight from dynalite, not through the proxy
        expires = parse_rfc3339_ns(st["expires_at"])
        lines = log_lines(err)
        stop = log_event(lines, "stopping the command: SIGTERM now, SIGKILL when the grace period ends")
        kill = log_event(lines, "command still running after the grace period; sending SIGKILL")
        ts = lambda l: (parse_rfc3339_ns(l["timestamp"]) - t_cut) / 1e6 if l else None  # noqa: E731
        return {"exit_code": holder.returncode, "cut_to_child_dead_ms": (t_dead - t_cut) / 1e6,
                "child_dead_before_lease_end_ms": (expires - t_dead) / 1e6,
                "cut_to_sigterm_log_ms": ts(stop), "cut_to_sigkill_log_ms": ts(kill),
                "cut_to_lock_exec_exit_ms": (t_exit - t_cut) / 1e6,
                "requests_dropped_by_blackhole": dropped}

    def section_leaselost(self) -> None:
        n = 3 if self.quick else 5
        proxy = Proxy(self.db.port)
        try:
            ignore = [self._leaselost_sample(proxy, "trap '' TERM; exec sleep 600") for _ in range(n)]
            handle = [self._leaselost_sample(proxy, "trap 'exit 0' TERM; while :; do sleep 0.05; done")]
        finally:
            proxy.close()
        for s in ignore + handle:
            if s["exit_code"] != 125:
                self.errors.append(f"lost lease: lock-exec exited {s['exit_code']}, expected 125")
        agg = lambda ss, k: summary([s[k] for s in ss if s[k] is not None])  # noqa: E731
        keys = ["cut_to_child_dead_ms", "child_dead_before_lease_end_ms", "cut_to_sigterm_log_ms",
                "cut_to_sigkill_log_ms", "cut_to_lock_exec_exit_ms"]
        self.results["leaselost"] = {
            "ignores_term": {k: agg(ignore, k) for k in keys} | {"samples": ignore},
            "handles_term": {k: agg(handle, k) for k in keys} | {"samples": handle},
        }

    # ----------------------------------------------------------------------- levers

    def section_levers(self) -> None:
        """Several builds side by side (bench-levers.sh): every round runs each variant once
        (in a rotated order), each right after its own /bin/true reference, in the host's
        default CA layout and in the image's; then peak RSS per variant."""
        variants = {}
        for v in self.args.variant:
            name, _, path = v.partition("=")
            variants[name] = Path(path).resolve()
            if not variants[name].exists():
                raise Broken(f"variant {name}: {path} does not exist")
        if not variants:
            raise Broken("the levers section needs --variant NAME=PATH (one or more)")
        cadir = self.tmp / "image-certs"
        cadir.mkdir(exist_ok=True)
        shutil.copy(CA_BUNDLE.resolve(), cadir / "ca-certificates.crt")
        layouts = {"host": self.env(),
                   "image_ca": self.env(SSL_CERT_FILE=cadir / "ca-certificates.crt", SSL_CERT_DIR=cadir)}
        ref_env = self.env()
        names = list(variants)
        keys = {n: self.key("lever") for n in names}
        data = {n: {l: {"diff": [], "cpu": []} for l in layouts} for n in names}
        for i in range(self.warmup + self.runs):
            order = names[i % len(names):] + names[: i % len(names)]
            for n in order:
                for layout, env in layouts.items():
                    r = self.timed(["/bin/true"], ref_env)
                    s_ = self.timed([str(variants[n]), "run", keys[n], "--", "true"], env)
                    self.check_ran(s_, f"variant {n}")
                    if i >= self.warmup:
                        data[n][layout]["diff"].append(s_["ms"] - r["ms"])
                        data[n][layout]["cpu"].append(s_["cpu_ms"])
        out = {}
        for n in names:
            rss = []
            anon, filed = [], []
            for _ in range(3 if self.quick else 5):
                p = subprocess.Popen([str(variants[n]), "run", keys[n], "--", "sleep", "1"], env=ref_env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                track(p.pid)
                r = self._poll_rss(p, False)
                if p.returncode != 0:
                    raise Broken(f"variant {n}: run K -- sleep 1 exited {p.returncode}")
                rss.append(r["vmhwm"])
                anon.append(r["rss_anon"])
                filed.append(r["rss_file"])
            out[n] = {"binary": str(variants[n]), "size_bytes": variants[n].stat().st_size,
                      "overhead_ms": summary(data[n]["host"]["diff"]),
                      "overhead_image_ca_ms": summary(data[n]["image_ca"]["diff"]),
                      "cpu_ms": summary(data[n]["host"]["cpu"]),
                      "vmhwm_kib": summary(rss), "rss_anon_kib": summary(anon), "rss_file_kib": summary(filed)}
        self.results["levers"] = out

    # ----------------------------------------------------------------------- analysis

    def section_analysis(self) -> None:
        """Where time and memory go (bench-levers.sh): log timeline, server time, CA
        loading cost, strace, perf, massif. --binary: a build with symbols;
        --static-binary: the shipped one (timeline, CA cost, strace use it)."""
        shipped = Path(self.args.static_binary or self.binary).resolve()
        prof = self.binary
        perf_bin = Path(self.args.perf_binary or self.binary).resolve()
        res = {"profile_binary": str(prof), "shipped_binary": str(shipped)}
        n = self.runs

        # 1. Timeline from lock-exec's own log lines (wall clock, µs), shipped binary.
        key = self.key("timeline")
        env = self.env()
        phases = collections.defaultdict(list)
        for i in range(self.warmup + n):
            t0 = wall_ns()
            r = self.timed([str(shipped), "run", key, "--", "true"], env)
            t_end = t0 + int(r["ms"] * 1e6)
            self.check_ran(r, "timeline run")
            if i < self.warmup:
                continue
            lines = log_lines(r["stderr"])
            t = {m: parse_rfc3339_ns(log_event(lines, m)["timestamp"])
                 for m in ("lock acquired", "command started", "command exited", "lock released")}
            phases["spawn → 'lock acquired' (start-up, client, acquire)"].append((t["lock acquired"] - t0) / 1e6)
            phases["'lock acquired' → 'command started' (fork/exec)"].append((t["command started"] - t["lock acquired"]) / 1e6)
            phases["'command started' → 'command exited' (the child, /bin/true)"].append((t["command exited"] - t["command started"]) / 1e6)
            phases["'command exited' → 'lock released' (leftover scan, release)"].append((t["lock released"] - t["command exited"]) / 1e6)
            phases["'lock released' → exit seen by the parent"].append((t_end - t["lock released"]) / 1e6)
        res["timeline_ms"] = {k: summary(v) for k, v in phases.items()}

        # 2. dynalite's own response time per request, measured at the proxy.
        proxy = Proxy(self.db.port)
        try:
            envp = self.env(proxy.endpoint)
            key = self.key("server")
            server = collections.defaultdict(list)
            for i in range(self.warmup + n):
                proxy.reset()
                r = self.timed([str(shipped), "run", key, "--", "true"], envp)
                self.check_ran(r, "server-time run")
                with proxy.lock:
                    ms = list(proxy.server_ms)
                if i >= self.warmup and len(ms) == 2:
                    server["acquire (UpdateItem)"].append(ms[0])
                    server["release (UpdateItem)"].append(ms[1])
            res["server_ms"] = {k: summary(v) for k, v in server.items()}
        finally:
            proxy.close()

        # 3. What loading CA roots costs, by CA layout, each run right after /bin/true.
        if CA_BUNDLE.exists():
            one = self.tmp / "one.pem"
            pem = CA_BUNDLE.read_text()
            one.write_text(pem[: pem.index("-----END CERTIFICATE-----") + 26])
            empty = self.tmp / "empty-certs"
            empty.mkdir(exist_ok=True)
            img = self.tmp / "image-certs2"
            img.mkdir(exist_ok=True)
            shutil.copy(CA_BUNDLE.resolve(), img / "ca-certificates.crt")
            layouts = {
                "no SSL_CERT_* variable set (host default; lock-exec picks the bundle file)": self.env(),
                "SSL_CERT_FILE=the bundle, SSL_CERT_DIR=/etc/ssl/certs set by the user (the bundle + every "
                "file in the directory)": self.env(SSL_CERT_FILE=CA_BUNDLE, SSL_CERT_DIR=CA_BUNDLE.parent),
                "image layout (/etc/ssl/certs holds only the bundle)":
                    self.env(SSL_CERT_FILE=img / "ca-certificates.crt", SSL_CERT_DIR=img),
                "one root certificate (the floor: CA loading ≈ 0)": self.env(SSL_CERT_FILE=one, SSL_CERT_DIR=empty),
            }
            key = self.key("ca")
            ca = {k: [] for k in layouts}
            cpu = {k: [] for k in layouts}
            for i in range(self.warmup + n):
                for name, e in layouts.items():
                    ref = self.timed(["/bin/true"], env)
                    r = self.timed([str(shipped), "run", key, "--", "true"], e)
                    self.check_ran(r, f"CA layout {name}")
                    if i >= self.warmup:
                        ca[name].append(r["ms"] - ref["ms"])
                        cpu[name].append(r["cpu_ms"])
            res["ca_overhead_ms"] = {k: summary(v) for k, v in ca.items()}
            res["ca_cpu_ms"] = {k: summary(v) for k, v in cpu.items()}
            res["ca_files_in_etc_ssl_certs"] = sum(1 for _ in Path("/etc/ssl/certs").iterdir())

        # 4. strace: syscalls of one run, and which files it opens.
        if shutil.which("strace"):
            f = self.tmp / "strace.txt"
            subprocess.run(["strace", "-f", "-qq", "-o", str(f), str(shipped), "run", self.key("strace"), "--", "true"],
                           env=env, capture_output=True, timeout=60)
            calls = collections.Counter()
            opens = collections.Counter()
            for line in f.read_text().splitlines():
                m = re.match(r"^\d+\s+(\w+)\(", line)
                if not m:
                    continue
                calls[m.group(1)] += 1
                if m.group(1) == "openat":
                    path = re.search(r'"([^"]*)"', line).group(1)
                    if path.startswith("/proc/") and path.endswith("/stat"):
                        opens["/proc/<pid>/stat (leftover scan)"] += 1
                    elif path.startswith("/etc/ssl/certs"):
                        opens["/etc/ssl/certs/* (CA roots)"] += 1
                    else:
                        opens["other"] += 1
            res["strace"] = {"total_syscalls": sum(calls.values()), "top": calls.most_common(12),
                             "openat": dict(opens),
                             "processes_on_machine": sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())}

        # 5. perf: where CPU time goes (software cpu-clock, DWARF call stacks; a static build
        # with symbols, so start-up is the shipped binary's).
        if shutil.which("perf") and subprocess.run(["perf", "stat", "-e", "cpu-clock", "true"],
                                                   capture_output=True).returncode == 0:
            data = self.tmp / "perf.data"
            script = self.tmp / "loop.sh"
            key = self.key("perf")
            runs = max(n, 30)
            script.write_text("".join(f"{perf_bin} run {key} -- true 2>/dev/null\n" for _ in range(runs)))
            subprocess.run(["perf", "record", "-q", "-F", "5000", "-e", "cpu-clock", "--call-graph", "dwarf,16384",
                            "-o", str(data), "sh", str(script)], env=env, capture_output=True, timeout=600)
            res["perf"] = perf_summary(data, runs)
            res["perf"]["binary"] = str(perf_bin)
            stat = subprocess.run(["perf", "stat", "-x", ",", "-r", "20", "-e", "task-clock,page-faults",
                                   str(shipped), "run", key, "--", "true"], env=env, capture_output=True, text=True)
            res["perf_stat_shipped"] = {l.split(",")[2]: float(l.split(",")[0])
                                        for l in stat.stderr.splitlines() if l.count(",") >= 3 and l[0].isdigit()}

        # 6. massif: the heap at its peak (dynamically linked profile build).
        if shutil.which("valgrind"):
            f = self.tmp / "massif.out"
            r = subprocess.run(["valgrind", "--tool=massif", "--depth=60", "--threshold=0.5",
                                f"--massif-out-file={f}", str(prof), "run", self.key("massif"), "--", "true"],
                               env=env, capture_output=True, text=True, timeout=300)
            if r.returncode == 0 and f.exists():
                shutil.copy(f, self.out / "massif.out")
                res["massif"] = massif_summary(f.read_text())
            else:
                self.errors.append(f"massif run exited {r.returncode}: {r.stderr.strip()[-300:]}")
        self.results["analysis"] = res


# --------------------------------------------------------------------------- ELF, perf, massif


def elf_has_interp(head: bytes) -> bool:
    import struct

    if head[:4] != b"\x7fELF" or head[4] != 2:
        return False
    phoff = struct.unpack_from("<Q", head, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    return any(struct.unpack_from("<I", head, phoff + i * phentsize)[0] == 3 for i in range(phnum))


GENERIC = re.compile(r"^(<?(alloc|core|std|hashbrown|bytes|smallvec|__rust|<alloc|<core|<std)\b|"
                     r"(malloc|calloc|realloc|__libc_|_dl_|0x[0-9A-Fa-f]+:?\s*\?\?\?|\?\?\?))")


def crate_of(sym: str) -> str:
    if re.match(r"^0x[0-9a-fA-F]+$", sym):
        return "(no symbol)"
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)::", sym)
    return m.group(1) if m else sym.split("(")[0].strip()[:40]


# Stack markers, tried in order: a perf sample or a heap allocation belongs to the first
# category whose pattern occurs anywhere in its call stack.
CATEGORIES = [
    ("fork/exec of the command", r"exec_child|supervisor::sys::spawn|Supervisor::spawn|kernel_clone|copy_process|_Fork"),
    ("CA roots: read, PEM-decode, parse (rustls-native-certs)", r"rustls_native_certs|rustls_pki_types|webpki|openssl_probe"),
    # Kernel-only stacks (user side not unwound) of file syscalls without a /proc marker:
    # nearly all regular files lock-exec opens are CA files (see the strace counts).
    ("CA roots: file syscalls (kernel side only)",
     r"filemap_read|ext4_|path_openat|do_dentry_open|__x64_sys_close|getname_flags|vfs_statx|do_statx|__fput"),
    ("leftover scan of /proc after the command",
     r"live_children|proc_pid_readdir|proc_fill_cache|pid_revalidate|next_tgid|proc_pid_stat|do_task_stat|proc_single_show"),
    ("logging (tracing-subscriber)", r"tracing_subscriber|tracing_core"),
    ("CLI parsing (clap)", r"clap_builder|clap_lex|\bclap::"),
    ("TLS client config (rustls)", r"\brustls::"),
    ("AWS config and credential chain", r"aws_config::"),
    ("DynamoDB requests: SDK, signing, HTTP, sockets",
     r"aws_smithy|aws_sdk_dynamodb|aws_sigv4|aws_runtime|hyper|tcp_sendmsg|tcp_recvmsg|__sys_connect|inet_|sock_"),
    ("process exec and start-up (kernel exec, ELF load, libc init)",
     r"execve|load_elf_binary|bprm_|begin_new_exec|__libc_start|_dl_|__libc_setup_tls|init_cpu_features|"
     r"handle_amd|handle_intel|get_common_indices|__cpu_indicator_init|call_init|check_match|do_lookup_x|_dl_relocate_static_pie"),
    ("process exit and teardown", r"do_exit|exit_mmap|do_group_exit|__run_exit_handlers|shutdown_background"),
    ("tokio runtime, signal handlers, epoll", r"tokio::|epoll|signal_hook|do_sigaction|rt_sigaction"),
    ("lock-exec's own code", r"lock_exec::"),
    ("page faults (stack not attributable)", r"exc_page_fault"),
    ("malloc/free/memcpy (stack not unwound)", r"malloc|_int_free|__libc_free|realloc|tcache_|memcpy|memmove|memset|memcmp"),
]


def categorize(stack: str) -> str:
    for name, pat in CATEGORIES:
        if re.search(pat, stack):
            return name
    return "other"


def perf_summary(data: Path, runs: int) -> dict:
    rep = subprocess.run(["perf", "report", "-i", str(data), "--comm", "lock-exec", "--no-children",
                          "--percentage", "relative", "--sort", "dso,sym", "--stdio", "-g", "none"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in rep.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()))
    kernel = sum(p for p, _, k, _ in rows if k == "k")
    # Whole call stacks, per sample.
    script = subprocess.run(["perf", "script", "-i", str(data), "--comm", "lock-exec"],
                            capture_output=True, text=True).stdout
    cats, total, period_ns = collections.Counter(), 0, None
    for block in script.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        m = re.search(r"(\d+) cpu-clock", lines[0])
        if m:
            period_ns = int(m.group(1))
        cats[categorize("\n".join(lines[1:]))] += 1
        total += 1
    per_run_ms = (lambda c: c * period_ns / 1e6 / runs) if period_ns else (lambda c: None)
    return {"samples": total, "runs": runs, "kernel_pct": round(kernel, 1),
            "user_pct": round(sum(p for p, _, k, _ in rows if k != "k"), 1),
            "cpu_ms_per_run": per_run_ms(total),
            "by_category": [(c, round(100 * k / total, 1), per_run_ms(k)) for c, k in cats.most_common()] if total else [],
            "top_kernel_symbols_pct": [(round(p, 2), sym) for p, _, k, sym in rows if k == "k"][:10],
            "top_user_symbols_pct": [(round(p, 2), sym[:120]) for p, _, k, sym in rows if k != "k"][:15]}


GENERIC_CRATES = {"alloc", "core", "std", "hashbrown", "bytes", "smallvec"}


def informative(frame: str) -> bool:
    """A frame naming a path outside the generic containers: `rustls_pki_types::pem::read`,
    `<hyper::X as Y>::call`; not `with_capacity_in<..>`, `{closure#0}`, `alloc::vec::..`."""
    if frame.startswith("<"):
        path = frame[1:].split(" as ")[0]
    else:
        path, depth = "", 0
        for ch in frame:  # drop generic arguments
            depth += ch == "<"
            if depth == 0:
                path += ch
            depth -= ch == ">"
    m = re.match(r"([a-z_][a-z0-9_]*)::", path)
    return bool(m) and m.group(1) not in GENERIC_CRATES


def massif_summary(text: str) -> dict:
    snaps, cur = [], None
    for line in text.splitlines():
        if line.startswith("snapshot="):
            cur = {"lines": []}
            snaps.append(cur)
        elif cur is not None and re.match(r"^\s*n\d+:", line):
            cur["lines"].append(line)
        elif cur is not None and "=" in line:
            k, _, v = line.partition("=")
            cur[k] = v
    peak = next((s for s in snaps if s.get("heap_tree") == "peak"), None)
    if peak is None:
        peak = max(snaps, key=lambda s: int(s.get("mem_heap_B", 0)))
    nodes = []
    for line in peak["lines"]:
        m = re.match(r"^(\s*)n(\d+): (\d+) (.*)$", line)
        raw = re.sub(r"^0x[0-9A-Fa-f]+: ", "", m.group(4))
        nodes.append((len(m.group(1)), int(m.group(3)), re.sub(r" \((?:in )?[^()]*\)$", "", raw)))
    # Bytes not covered by a node's children belong to the call stack ending at that node
    # (the tree runs from malloc's caller outwards to main).
    sites, origins, stack = collections.Counter(), collections.Counter(), []
    for i, (depth, size, name) in enumerate(nodes):
        stack = stack[:depth] + [name]
        covered, j = 0, i + 1
        while j < len(nodes) and nodes[j][0] > depth:
            if nodes[j][0] == depth + 1:
                covered += nodes[j][1]
            j += 1
        own = size - covered
        if depth == 0 or own <= 0:
            continue
        chain = stack[1:]
        if "below massif's threshold" in name:
            chain = chain[:-1]
        site = next((f for f in chain if informative(f)), chain[0] if chain else "?")
        if "below massif's threshold" in name:
            site = f"(small sites under {site})" if chain else "(small sites)"
        sites[site] += own
        origins[categorize("\n".join(chain))] += own
    return {"peak_heap_bytes": int(peak.get("mem_heap_B", 0)),
            "peak_heap_extra_bytes": int(peak.get("mem_heap_extra_B", 0)),
            "peak_time_instructions": int(peak.get("time", 0)),
            "top_sites": [(name[:140], b) for name, b in sites.most_common(12)],
            "by_category": origins.most_common()}


# --------------------------------------------------------------------------- report


def fmt_kib(s: dict) -> str:
    return med(s, " MiB", 2, 1 / 1024)


def report(b: Bench) -> str:
    R = b.results
    rows = []
    head = ("| Figure | lock-exec (measured here), median | Spread | Reference, same run | "
            "Go tool (given in the issue, not measured here) | Target | Met |")
    rows += [head, "|---|---|---|---|---|---|---|"]

    if "overhead" in R:
        o = R["overhead"]
        p = o["plain"]
        ok = p["diff_ms"]["median"] <= TARGETS["overhead_ms"]
        rows.append(f"| Wall-time overhead of `run K -- true` over bare `/bin/true` (same key every run; "
                    f"{o['warmup_discarded']} warm-up pairs discarded) | {med(p['diff_ms'], ' ms', 2)} | "
                    f"{spread(p['diff_ms'], ' ms', 2)} | `/bin/true` {med(p['reference_ms'], ' ms', 2)}; "
                    f"lock-exec run total {med(p['subject_ms'], ' ms', 2)} | {GO_GIVEN['overhead_ms']} ms | "
                    f"≤ {TARGETS['overhead_ms']:.0f} ms | {mark(ok)} |")
        m = o["minhold"]
        rows.append(f"| Same with `--min-hold 1s -- sh -c 'exit 0'` over bare `sh -c 'exit 0'` (fresh key each run; "
                    f"exit 0, `command exited` logged and key held with fence 1 checked) | {med(m['diff_ms'], ' ms', 2)} | "
                    f"{spread(m['diff_ms'], ' ms', 2)} | `sh -c 'exit 0'` {med(m['reference_ms'], ' ms', 2)} | — | "
                    f"≤ {TARGETS['overhead_ms']:.0f} ms | {mark(m['diff_ms']['median'] <= TARGETS['overhead_ms'])} |")
        if "image_ca" in o:
            i = o["image_ca"]
            rows.append(f"| Same as the first row with the image's CA layout (only `ca-certificates.crt` in "
                        f"/etc/ssl/certs, as FROM scratch) | {med(i['diff_ms'], ' ms', 2)} | {spread(i['diff_ms'], ' ms', 2)} | "
                        f"`/bin/true` {med(i['reference_ms'], ' ms', 2)} | — | ≤ {TARGETS['overhead_ms']:.0f} ms | "
                        f"{mark(i['diff_ms']['median'] <= TARGETS['overhead_ms'])} |")
        rows.append(f"| CPU time (user+sys, wait4) of `run K -- true`, child included | "
                    f"{med(p['subject_cpu_ms'], ' ms', 2)} | {spread(p['subject_cpu_ms'], ' ms', 2)} | "
                    f"`/bin/true` {med(p['reference_cpu_ms'], ' ms', 2)} | — | — | — |")

    if "rss" in R:
        r = R["rss"]
        s = r["lock_exec_vmhwm_kib"]
        ok = s["median"] / 1024 <= TARGETS["peak_rss_mib"]
        aim = "aim 6 MiB: " + ("met" if s["median"] / 1024 <= TARGETS["peak_rss_aim_mib"] else "not met")
        rows.append(f"| Peak RSS of lock-exec itself (VmHWM polled every 5 ms) while `-- sleep 1` runs | "
                    f"{fmt_kib(s)} | {spread(s, ' MiB', 2, 1 / 1024)} | — | {GO_GIVEN['peak_rss_mib']} MiB | "
                    f"≤ {TARGETS['peak_rss_mib']:.0f} MiB ({aim}) | {mark(ok)} |")
        rows.append(f"| Its RSS while the child runs: anonymous (heap, stacks) + file-backed (binary pages) | "
                    f"{fmt_kib(r['rss_anon_kib'])} + {fmt_kib(r['rss_file_kib'])} | "
                    f"total {fmt_kib(r['lock_exec_rss_while_child_runs_kib'])}; threads {med(r['threads'], '', 0)} | — | — | — | — |")
        rows.append(f"| The child's peak RSS (`sleep 1` under lock-exec, VmHWM) | {fmt_kib(r['child_vmhwm_kib'])} | "
                    f"{spread(r['child_vmhwm_kib'], ' MiB', 2, 1 / 1024)} | bare `sleep 1` {fmt_kib(r['bare_sleep_vmhwm_kib'])} | — | — | — |")
        if "gnu_time_maxrss_kib" in r:
            rows.append(f"| GNU time max RSS of `lock-exec run K -- sleep 1` (max over lock-exec and its child) | "
                        f"{fmt_kib(r['gnu_time_maxrss_kib'])} | {spread(r['gnu_time_maxrss_kib'], ' MiB', 2, 1 / 1024)} | "
                        f"GNU time `sleep 1` {fmt_kib(r['gnu_time_bare_sleep_kib'])} | — | — | — |")

    if "size" in R:
        z = R["size"]
        mib = z["binary_bytes"] / MiB
        rows.append(f"| Static binary size (`stat`; the release profile already strips) | {mib:.2f} MiB "
                    f"({z['binary_bytes']} B) | exact | `strip` copy: {z.get('strip_copy_bytes', 0) / MiB:.2f} MiB "
                    f"({z.get('strip_copy_bytes')} B); static: {'yes' if z['static'] else 'NO'} | "
                    f"{GO_GIVEN['binary_mib']} MiB | ≤ {TARGETS['binary_mib']:.0f} MiB | {mark(mib <= TARGETS['binary_mib'])} |")
        if "image_bytes" in z:
            rows.append(f"| Image contents (no Docker engine here): binary + /etc/ssl/certs/ca-certificates.crt "
                        f"({z['ca_bundle_bytes']} B) | {z['image_bytes'] / MiB:.2f} MiB ({z['image_bytes']} B) | exact | "
                        f"tar of the two: {z['image_tar_bytes'] / MiB:.2f} MiB; gzip -6 of it: "
                        f"{z['image_tar_gz_bytes'] / MiB:.2f} MiB | — | — | — |")

    if "requests" in R:
        q = R["requests"]
        s = q["short_run"]
        ok = s["min"] == 2 and s["max"] == 2
        ops = ", ".join(f"{k or '?'} {v:g}" for k, v in sorted(q["short_run_ops"].items()))
        rows.append(f"| DynamoDB requests per `run K -- true` (counting proxy) | {med(s, '', 0)} | "
                    f"{spread(s, '', 0)} | per run: {ops} | — | exactly 2 | {mark(ok)} |")
        if "skipped_run" in q:
            ops = ", ".join(f"{k or '?'} {v:g}" for k, v in sorted(q["skipped_run_ops"].items()))
            rows.append(f"| Requests per run that finds the key held and skips (no `--wait`) | "
                        f"{med(q['skipped_run'], '', 0)} | {spread(q['skipped_run'], '', 0)} | per run: {ops} "
                        f"(the GetItem only because dynalite does not return the holder on a failed condition) | — | — | — |")
    if "renewals" in R:
        w = R["renewals"]
        ok = w["requests"] == w["expected_requests"]
        rows.append(f"| Requests over `run K {'--lease 3s ' if w['lease_s'] != 30 else ''}-- sleep {w['child_seconds']:g}` "
                    f"(heartbeat {w['heartbeat_s']:g} s), measured | {w['requests']} | single run | "
                    f"{', '.join(f'{k} {v}' for k, v in sorted(w['ops'].items()))}; 'lease renewed' logged "
                    f"{w['renewals_logged']}× | — | {w['expected_requests']} (acquire + {w['expected_requests'] - 2} renewals + release) | {mark(ok)} |")
        size = R.get("requests", {}).get("item_bytes")
        rows.append(f"| Requests (= write units: each is one UpdateItem on an item of {size if size else '?'} B < 1 KB) "
                    f"per hour of child run time at the default heartbeat, **derived** (3600 / 10 s) | "
                    f"{3600 / 10:.0f} /h + 2 per run | derived, not measured | — | — | — | — |")

    if "takeover" in R:
        t = R["takeover"]["lease_3s"]
        rows.append(f"| Takeover: holder `--lease 3s` SIGKILLed (with its child) → contender's (`--wait`) child starts | "
                    f"{med(t['kill_to_child_start_ms'], ' s', 2, 1e-3)} | {spread(t['kill_to_child_start_ms'], ' s', 2, 1e-3)} | "
                    f"of which lease left at the kill {med(t['kill_to_lease_end_ms'], ' s', 2, 1e-3)}, "
                    f"lease end → start {med(t['lease_end_to_child_start_ms'], ' s', 2, 1e-3)} | "
                    f"24 h (the seed's documented behaviour: no heartbeat, a crashed holder's lock lasts until `-e`; not a measurement) | — | — |")
        if "lease_30s" in R["takeover"]:
            t30 = R["takeover"]["lease_30s"]["kill_to_child_start_ms"]
            rows.append(f"| Same at the default 30 s lease | {med(t30, ' s', 1, 1e-3)} | single sample | — | 24 h (as above) | — | — |")

    if "leaselost" in R:
        L = R["leaselost"]["ignores_term"]
        H = R["leaselost"]["handles_term"]
        rows.append(f"| Lost lease (`--lease 3s`, proxy black-holed ~1.5 s in), child ignores SIGTERM: cut → child dead | "
                    f"{med(L['cut_to_child_dead_ms'], ' s', 2, 1e-3)} | {spread(L['cut_to_child_dead_ms'], ' s', 2, 1e-3)} | "
                    f"SIGTERM logged at {med(L['cut_to_sigterm_log_ms'], ' s', 2, 1e-3)}, SIGKILL at "
                    f"{med(L['cut_to_sigkill_log_ms'], ' s', 2, 1e-3)} after the cut | — | — | — |")
        ok = L["child_dead_before_lease_end_ms"]["min"] > 0
        rows.append(f"| … how long before the lease end recorded in the table (read from dynalite directly) the child was dead | "
                    f"{med(L['child_dead_before_lease_end_ms'], ' ms', 0)} | {spread(L['child_dead_before_lease_end_ms'], ' ms', 0)} | "
                    f"lock-exec exited 125 at {med(L['cut_to_lock_exec_exit_ms'], ' s', 2, 1e-3)} after the cut | — | > 0 (dead before the lease ends) | {mark(ok)} |")
        ok = H["child_dead_before_lease_end_ms"]["min"] > 0
        rows.append(f"| Same, child exits on SIGTERM: cut → child dead / before the lease end | "
                    f"{med(H['cut_to_child_dead_ms'], ' s', 2, 1e-3)} / {med(H['child_dead_before_lease_end_ms'], ' ms', 0)} | "
                    f"{spread(H['cut_to_child_dead_ms'], ' s', 2, 1e-3)} | SIGTERM logged at {med(H['cut_to_sigterm_log_ms'], ' s', 2, 1e-3)} | — | > 0 | {mark(ok)} |")

    if any(k in R for k in ("overhead", "rss", "size", "takeover")):
        rows.append(f"| **Reference: the original Go tool — given in the project's issue, not measured here** "
                    f"(someone else's run on this kind of machine against local dynalite) | overhead of `run KEY true` "
                    f"{GO_GIVEN['overhead_ms']} ms; peak RSS {GO_GIVEN['peak_rss_mib']} MiB; stripped binary "
                    f"{GO_GIVEN['binary_mib']} MiB; takeover after a crash: 24 h (documented behaviour) | given | — | "
                    f"given | — | — |")
    out = []
    if len(rows) > 2:
        out += rows
    if "levers" in R:
        out += ["", "| Variant | Binary size | Overhead over `/bin/true`, host CA layout | Same, image CA layout | "
                    "CPU time (user+sys) | Peak RSS (VmHWM) | RSS anon + file while the child runs |",
                "|---|---|---|---|---|---|---|"]
        for n, v in R["levers"].items():
            out.append(f"| {n} | {v['size_bytes'] / MiB:.2f} MiB | {med(v['overhead_ms'], ' ms', 2)} "
                       f"({spread(v['overhead_ms'], ' ms', 2)}) | {med(v['overhead_image_ca_ms'], ' ms', 2)} "
                       f"({spread(v['overhead_image_ca_ms'], ' ms', 2)}) | {med(v['cpu_ms'], ' ms', 2)} | "
                       f"{fmt_kib(v['vmhwm_kib'])} ({spread(v['vmhwm_kib'], ' MiB', 2, 1 / 1024)}) | "
                       f"{fmt_kib(v['rss_anon_kib'])} + {fmt_kib(v['rss_file_kib'])} |")
    if "analysis" in R:
        out += ["", analysis_report(R["analysis"])]
    return "\n".join(out) + "\n"


def analysis_report(a: dict) -> str:
    L = ["### Where the time goes (shipped binary, `run K -- true`)", "",
         "| Phase (lock-exec's own log timestamps) | Median | Spread |", "|---|---|---|"]
    for k, s in a.get("timeline_ms", {}).items():
        L.append(f"| {k} | {med(s, ' ms', 2)} | {spread(s, ' ms', 2)} |")
    for k, s in a.get("server_ms", {}).items():
        L.append(f"| dynalite's response time, {k} (measured at the proxy) | {med(s, ' ms', 2)} | {spread(s, ' ms', 2)} |")
    if "ca_overhead_ms" in a:
        L += ["", f"| CA roots loaded at start-up (/etc/ssl/certs holds {a['ca_files_in_etc_ssl_certs']} entries here) "
                  "| Overhead over `/bin/true`, median | Spread | CPU time, median |", "|---|---|---|---|"]
        for k, s in a["ca_overhead_ms"].items():
            L.append(f"| {k} | {med(s, ' ms', 2)} | {spread(s, ' ms', 2)} | {med(a['ca_cpu_ms'][k], ' ms', 2)} |")
    if "strace" in a:
        s = a["strace"]
        L += ["", f"strace -f, one run: {s['total_syscalls']} syscalls; top: "
                  + ", ".join(f"{k} {v}" for k, v in s["top"]) + "; openat: "
                  + ", ".join(f"{k} {v}" for k, v in s["openat"].items())
                  + f" ({s['processes_on_machine']} processes on the machine at the time)."]
    if "perf" in a:
        p = a["perf"]
        L += ["", f"#### CPU time by call stack (perf record -e cpu-clock --call-graph dwarf, static build with symbols, "
                  f"{p['runs']} runs of `run K -- true`, {p['samples']} samples of comm lock-exec: "
                  f"{p['cpu_ms_per_run']:.2f} ms CPU per run, kernel {p['kernel_pct']} % / user {p['user_pct']} %)", "",
              "| Category (first marker found in the stack) | Share | CPU ms per run |", "|---|---|---|"]
        for c, pct, ms in p["by_category"]:
            L.append(f"| {c} | {pct} % | {ms:.2f} |")
        L += ["", "Top kernel symbols (self): " + ", ".join(f"{s} {v} %" for v, s in p["top_kernel_symbols_pct"]) + ".",
              "", "Top user symbols (self): " + ", ".join(f"`{s}` {v} %" for v, s in p["top_user_symbols_pct"][:8]) + "."]
    if "perf_stat_shipped" in a:
        L += [f"perf stat -r 20 (shipped binary): " + ", ".join(f"{k} {v:g}" for k, v in a["perf_stat_shipped"].items()) + "."]
    if "massif" in a:
        m = a["massif"]
        L += ["", "### Where the memory goes (valgrind massif, dynamically linked build with symbols, `run K -- true`)", "",
              f"Peak heap {m['peak_heap_bytes'] / 1024:.0f} KiB (+ {m['peak_heap_extra_bytes'] / 1024:.0f} KiB allocator "
              f"overhead), reached after {m['peak_time_instructions'] / 1e6:.1f} M instructions.", "",
              "| Live at the heap peak, by call stack category | KiB |", "|---|---|"]
        for c, b in m["by_category"]:
            L.append(f"| {c} | {b / 1024:.0f} |")
        L += ["", "| Live at the heap peak, by allocation site (first frame outside alloc/core/std) | KiB |", "|---|---|"]
        for name, b in m["top_sites"]:
            L.append(f"| `{name}` | {b / 1024:.0f} |")
    return "\n".join(L)


def machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip() or "?"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git": rev,
            "cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "loadavg_start": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(STANDARD),
                    help=f"comma-separated sections: {', '.join(ALL_SECTIONS)} (default: all but analysis and levers)")
    ap.add_argument("--binary", default=str(DEFAULT_BINARY))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                    help="levers section: a binary to compare (repeat); measured round-robin")
    ap.add_argument("--static-binary", default=None, help="analysis: the shipped binary (default --binary)")
    ap.add_argument("--perf-binary", default=None, help="analysis: a static build with symbols for perf (default --binary)")
    ap.add_argument("--runs", type=int, default=None, help="timed pairs per figure (default BENCH_RUNS or 40)")
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    ap.add_argument("--out", default=str(ROOT / "target/bench"))
    args = ap.parse_args()
    args.runs = args.runs or int(os.environ.get("BENCH_RUNS", "10" if args.quick else "40"))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in ALL_SECTIONS]
    if bad:
        ap.error(f"unknown section(s): {', '.join(bad)}")

    b = Bench(args)
    meta = machine()
    meta |= {"binary": str(b.binary), "runs": args.runs, "quick": args.quick, "sections": only}
    failed = None
    try:
        b.setup()
        for name in ["size", "overhead", "rss", "requests"]:
            if name in only:
                print(f"bench: {name}...", file=sys.stderr, flush=True)
                getattr(b, f"section_{name}")()
        # The long renewal run (35 s) overlaps the takeover and lost-lease sections, which
        # mostly wait; the timing-sensitive sections above ran on their own.
        renewals: dict = {}
        thread = None
        if "requests" in only:
            def long_run():
                try:
                    renewals["result"] = b.long_renewals()
                except Exception as e:  # reported below
                    renewals["error"] = e
            print("bench: renewals (background)...", file=sys.stderr, flush=True)
            thread = threading.Thread(target=long_run, daemon=True)
            thread.start()
        for name in ["takeover", "leaselost", "analysis", "levers"]:
            if name in only:
                print(f"bench: {name}...", file=sys.stderr, flush=True)
                getattr(b, f"section_{name}")()
        if thread:
            thread.join()
            if "error" in renewals:
                raise renewals["error"]
            b.results["renewals"] = renewals["result"]
    except Broken as e:
        failed = str(e)
    except subprocess.TimeoutExpired as e:
        failed = f"timed out: {e}"
    meta["loadavg_end"] = os.getloadavg()

    text = (f"lock-exec benchmark, {meta['date']}, {meta['cpus']} CPUs ({meta['cpu']}), Linux {meta['kernel']}, "
            f"load average {meta['loadavg_start'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end; "
            f"git {meta['git']}; binary {b.binary}; {'quick mode; ' if args.quick else ''}{args.runs} timed pairs per overhead figure.\n\n")
    text += report(b)
    if failed or b.errors:
        text += "\n**Broken:** " + "; ".join(([failed] if failed else []) + b.errors) + "\n"
    print(text)
    (b.out / "results.md").write_text(text)
    (b.out / "results.json").write_text(json.dumps(
        {"meta": meta, "targets": TARGETS, "go_given_not_measured": GO_GIVEN, "results": b.results,
         "broken": ([failed] if failed else []) + b.errors}, indent=2, default=str))
    print(f"bench: wrote {b.out / 'results.md'} and {b.out / 'results.json'}", file=sys.stderr)
    return 1 if (failed or b.errors) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # servers and lock-exec runs are stopped by the atexit hook
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
