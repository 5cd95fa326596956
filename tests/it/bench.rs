//! The standing benchmark (`make bench`; docs/performance.md explains every figure).
//!
//! Side by side in ONE run against one local dynalite: the wall-time overhead of
//! `lock-exec run K true -t T` over a bare `true`; the same for the original Go tool when
//! `LOCK_EXEC_BENCH_PEER` names its binary ("peer not measured" otherwise), and for the
//! floor, a minimal client that sends lock-exec's two requests and runs the command once
//! (scripts/bench-floor); in two TLS environments (a pod's: no SSL_CERT_* variable; a CI
//! image's: SSL_CERT_FILE and SSL_CERT_DIR both set); then peak RSS, binary size,
//! requests per run and the CA files each opens. Prints Markdown tables and writes them
//! with every sample to `target/bench/`.
//!
//! It fails only when something is broken (a run that fails, or exits 0 without having
//! run its command), never because a target is missed: targets are reported, not asserted.
//!
//! Environment: `LOCK_EXEC_BIN` (the binary measured; `make bench` points it at the static
//! release build), `LOCK_EXEC_BENCH_FLOOR`, `LOCK_EXEC_BENCH_PEER`,
//! `LOCK_EXEC_BENCH_VARIANTS` (`name=/path,...`: more lock-exec builds measured in the
//! same rounds, to compare a change), `LOCK_EXEC_BENCH_ROUNDS` (default 30),
//! `LOCK_EXEC_BENCH_OUT` (default `target/bench`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Untimed rounds first: dynalite (node) answers faster once its JIT has warmed up.
const WARMUP_ROUNDS: usize = 20;
/// Timed rounds; every subject runs once per round and TLS environment.
const ROUNDS: usize = 30;
/// Peak-RSS samples per subject and environment.
const RSS_RUNS: usize = 10;
/// Runs through the counting proxy per subject.
const REQUEST_RUNS: usize = 5;

/// Issue 13's targets, reported and never asserted.
const TARGET_PEER_RATIO: f64 = 0.5;
const TARGET_FLOOR_RATIO: f64 = 1.5;
const TARGET_RSS_MIB: f64 = 6.0;
const TARGET_SIZE_MIB: f64 = 7.0;

/// What a measured program is, which decides how its success is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LockExec,
    Peer,
    Floor,
}

/// One measured program.
struct Subject {
    name: String,
    kind: Kind,
    path: PathBuf,
    /// Each subject locks its own key, so each sees its own steady state (the Go tool
    /// deletes its item, lock-exec keeps it with its fence).
    key: String,
}

impl Subject {
    /// The argv after the program: the Go tool's form, which all three accept, so every
    /// subject gets exactly the same kind of arguments.
    fn args(&self, command: &str, table: &str) -> Vec<String> {
        ["run", &self.key, command, "-t", table]
            .map(String::from)
            .to_vec()
    }

    /// Panics unless `run` shows the command ran and succeeded: an exit 0 alone could be a
    /// skipped run (both tools exit 0 when the key is held).
    fn check(&self, run: &Run) {
        let ran = match self.kind {
            Kind::LockExec => {
                run.stderr.contains("\"message\":\"command exited\"")
                    && run.stderr.contains("\"exit_code\":0")
            }
            Kind::Peer => run.stderr.contains("\"msg\":\"command succeeded\""),
            Kind::Floor => true,
        };
        assert!(
            run.code == Some(0) && ran,
            "{} did not run its command: exit {:?}\n{}",
            self.name,
            run.code,
            run.stderr
        );
    }
}

/// The two TLS environments every overhead figure is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tls {
    /// No SSL_CERT_* variable, as in a pod or a cron job.
    Pod,
    /// SSL_CERT_FILE and SSL_CERT_DIR both set, as on this machine and many CI images.
    Ci,
}

impl Tls {
    fn label(self) -> &'static str {
        match self {
            Tls::Pod => "pod env (no SSL_CERT_*)",
            Tls::Ci => "CI env (SSL_CERT_FILE + SSL_CERT_DIR)",
        }
    }
}

const CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CA_DIR: &str = "/etc/ssl/certs";

/// A clean, pod-like environment: PATH, HOME, AWS test credentials, region, endpoint;
/// the table is passed with `-t`, which all subjects read.
fn environment(tls: Tls, endpoint: &str, home: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME", home.display().to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
    ];
    if tls == Tls::Ci {
        env.push(("SSL_CERT_FILE", CA_FILE.into()));
        env.push(("SSL_CERT_DIR", CA_DIR.into()));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// One finished process.
struct Run {
    wall: Duration,
    /// User + system time of the process and the children it reaped.
    cpu: Duration,
    code: Option<i32>,
    stderr: String,
}

/// User + system time of this process's reaped children so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

/// Runs `program ARGS` in `env` to completion: spawn to reaped, stderr captured.
fn run(program: &Path, args: &[String], env: &[(String, String)]) -> Run {
    let before = children_cpu();
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let wall = started.elapsed();
    Run {
        wall,
        cpu: children_cpu().saturating_sub(before),
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One timed run of a subject and the bare `true` run just before it.
struct Pair {
    reference: Run,
    subject: Run,
}

impl Pair {
    fn overhead_ms(&self) -> f64 {
        ms(self.subject.wall) - ms(self.reference.wall)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and p10–p90 (linear interpolation between order statistics).
#[derive(Debug, Clone, Copy)]
struct Summary {
    median: f64,
    p10: f64,
    p90: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn summary(values: &[f64]) -> Summary {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |q: f64| {
        let pos = q * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    Summary {
        median: q(0.5),
        p10: q(0.1),
        p90: q(0.9),
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    }
}

impl Summary {
    /// `median (p10–p90, n=N)`, or min–max below 10 samples.
    fn show(&self, unit: &str, decimals: usize) -> String {
        let d = decimals;
        if self.n >= 10 {
            format!(
                "{:.d$} {unit} ({:.d$}–{:.d$} p10–p90, n={})",
                self.median, self.p10, self.p90, self.n
            )
        } else {
            format!(
                "{:.d$} {unit} ({:.d$}–{:.d$} min–max, n={})",
                self.median, self.min, self.max, self.n
            )
        }
    }
}

/// Peak RSS of one run, from /proc while it runs.
struct Rss {
    /// VmHWM, the last value read before the process ended.
    hwm_kib: u64,
    /// RssAnon and RssFile at that last reading.
    anon_kib: u64,
    file_kib: u64,
}

/// Runs `program ARGS` (whose command should last long enough to be watched) polling
/// `/proc/<pid>/status` every millisecond. VmHWM only grows, so the last value read
/// before the exit is the peak, short of what the last millisecond (the release) added.
fn peak_rss(subject: &Subject, args: &[String], env: &[(String, String)]) -> Rss {
    let mut child = Command::new(&subject.path)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut last = None;
    let started = Instant::now();
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if let (Some(hwm), Some(anon), Some(file)) =
                (field("VmHWM:"), field("RssAnon:"), field("RssFile:"))
            {
                last = Some(Rss {
                    hwm_kib: hwm,
                    anon_kib: anon,
                    file_kib: file,
                });
            }
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} hangs",
            subject.name
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    subject.check(&Run {
        wall: started.elapsed(),
        cpu: Duration::ZERO,
        code: status.code(),
        stderr,
    });
    last.unwrap_or_else(|| panic!("no /proc reading of {}", subject.name))
}

/// Whether an ELF file has no program interpreter (a static executable).
fn is_static(path: &Path) -> bool {
    let Ok(elf) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return false;
    }
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    const PT_INTERP: u32 = 3;
    !(0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// CA files a run opens, counted with strace: successful opens of files under /etc/ssl
/// or /usr/share/ca-certificates. None without strace.
fn ca_files_opened(subject: &Subject, args: &[String], env: &[(String, String)]) -> Option<u64> {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let dir = TempDir::new();
    let log = dir.file("strace.log");
    let out = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&log)
        .arg(&subject.path)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("strace");
    subject.check(&Run {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    });
    let text = std::fs::read_to_string(&log).ok()?;
    Some(
        text.lines()
            .filter(|l| l.contains("/etc/ssl/") || l.contains("/usr/share/ca-certificates/"))
            .filter(|l| !l.contains("= -1 "))
            .count() as u64,
    )
}

/// Everything measured for one subject.
#[derive(Default)]
struct Measured {
    pairs: BTreeMap<Tls, Vec<Pair>>,
    rss: BTreeMap<Tls, Vec<Rss>>,
    ca_files: BTreeMap<Tls, Option<u64>>,
    /// Operations seen by the counting proxy over REQUEST_RUNS runs.
    operations: Vec<String>,
}

impl Measured {
    /// The summary of `f` over this subject's timed runs in one TLS environment.
    fn over_pairs(&self, tls: Tls, f: impl Fn(&Pair) -> f64) -> Summary {
        summary(&self.pairs[&tls].iter().map(f).collect::<Vec<_>>())
    }
    fn overhead(&self, tls: Tls) -> Summary {
        self.over_pairs(tls, Pair::overhead_ms)
    }
    fn wall(&self, tls: Tls) -> Summary {
        self.over_pairs(tls, |p| ms(p.subject.wall))
    }
    fn cpu(&self, tls: Tls) -> Summary {
        self.over_pairs(tls, |p| ms(p.subject.cpu))
    }
    fn peak_mib(&self, tls: Tls) -> Summary {
        summary(
            &self.rss[&tls]
                .iter()
                .map(|r| r.hwm_kib as f64 / 1024.0)
                .collect::<Vec<_>>(),
        )
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The subjects: lock-exec, its variants, the peer if given, the floor if built.
fn subjects() -> (Vec<Subject>, Vec<String>) {
    let mut notes = Vec::new();
    let mut subjects = vec![Subject {
        name: "lock-exec".into(),
        kind: Kind::LockExec,
        path: PathBuf::from(bin()),
        key: "bench-lock-exec".into(),
    }];
    if let Ok(variants) = std::env::var("LOCK_EXEC_BENCH_VARIANTS") {
        for v in variants.split(',').filter(|v| !v.is_empty()) {
            let (name, path) = v
                .split_once('=')
                .expect("LOCK_EXEC_BENCH_VARIANTS is name=/path,...");
            subjects.push(Subject {
                name: format!("lock-exec {name}"),
                kind: Kind::LockExec,
                path: path.into(),
                key: format!("bench-variant-{name}"),
            });
        }
    }
    match env_path("LOCK_EXEC_BENCH_PEER") {
        Some(path) => subjects.push(Subject {
            name: "Go tool (peer)".into(),
            kind: Kind::Peer,
            path,
            key: "bench-peer".into(),
        }),
        None => notes
            .push("Peer not measured: set LOCK_EXEC_BENCH_PEER to the Go tool's binary.".into()),
    }
    let floor = env_path("LOCK_EXEC_BENCH_FLOOR").or_else(|| {
        let built = repo().join("target/bench-floor/x86_64-unknown-linux-gnu/release/bench-floor");
        built.exists().then_some(built)
    });
    match floor {
        Some(path) => subjects.push(Subject {
            name: "floor".into(),
            kind: Kind::Floor,
            path,
            key: "bench-floor".into(),
        }),
        None => notes.push(
            "Floor not measured: build scripts/bench-floor (make bench does) or set \
             LOCK_EXEC_BENCH_FLOOR."
                .into(),
        ),
    }
    for s in &subjects {
        assert!(
            s.path.exists(),
            "{} not found: {}",
            s.name,
            s.path.display()
        );
    }
    (subjects, notes)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// Date, commit and machine, for the report's header.
fn provenance() -> Vec<String> {
    let cpu = read_trimmed("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let commit = std::env::var("BENCH_COMMIT").unwrap_or_else(|_| {
        shell(
            "git",
            &[
                "-C",
                &repo().display().to_string(),
                "describe",
                "--always",
                "--dirty",
            ],
        )
    });
    let dynalite = std::fs::read_to_string(tools().join("npm/node_modules/dynalite/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(String::from))
        .unwrap_or_else(|| "?".into());
    vec![
        format!("date: {}", shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        format!("commit: {commit}"),
        format!(
            "machine: {} CPUs ({cpu}), kernel {}, {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            read_trimmed("/proc/sys/kernel/osrelease"),
            shell("node", &["--version"]).replace('v', "node ")
        ),
        format!("server: local dynalite {dynalite} (plain HTTP on 127.0.0.1)"),
    ]
}

fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by `make bench`"]
async fn bench() {
    let rounds = std::env::var("LOCK_EXEC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    let (subjects, notes) = subjects();
    let mut header = provenance();
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    let home = TempDir::new();
    let envs: BTreeMap<Tls, Vec<(String, String)>> = [Tls::Pod, Tls::Ci]
        .into_iter()
        .map(|t| (t, environment(t, &env.endpoint(), home.path())))
        .collect();
    let proxied: BTreeMap<Tls, Vec<(String, String)>> = [Tls::Pod, Tls::Ci]
        .into_iter()
        .map(|t| (t, environment(t, &proxy.endpoint(), home.path())))
        .collect();
    let table = env.table.clone();
    let load_before = load_average();

    // The runs block; the proxy's tasks keep running on the runtime meanwhile.
    let operations = proxy.ops.clone();
    let (subjects, measured) = tokio::task::spawn_blocking(move || {
        let mut measured: Vec<Measured> = subjects.iter().map(|_| Measured::default()).collect();
        let bare = PathBuf::from("true");
        for round in 0..WARMUP_ROUNDS + rounds {
            let order = if round % 2 == 0 {
                [Tls::Pod, Tls::Ci]
            } else {
                [Tls::Ci, Tls::Pod]
            };
            for tls in order {
                // Rotated, so no subject always follows the same one.
                for i in 0..subjects.len() {
                    let at = (round + i) % subjects.len();
                    let s = &subjects[at];
                    let reference = run(&bare, &[], &envs[&tls]);
                    assert_eq!(reference.code, Some(0), "bare true failed");
                    let subject = run(&s.path, &s.args("true", &table), &envs[&tls]);
                    s.check(&subject);
                    if round >= WARMUP_ROUNDS {
                        measured[at]
                            .pairs
                            .entry(tls)
                            .or_default()
                            .push(Pair { reference, subject });
                    }
                }
            }
        }
        for (s, m) in subjects.iter().zip(&mut measured) {
            for tls in [Tls::Pod, Tls::Ci] {
                for _ in 0..RSS_RUNS {
                    let rss = peak_rss(s, &s.args("sleep 0.2", &table), &envs[&tls]);
                    m.rss.entry(tls).or_default().push(rss);
                }
                let ca = ca_files_opened(s, &s.args("true", &table), &envs[&tls]);
                m.ca_files.insert(tls, ca);
            }
            let seen = operations.lock().unwrap().len();
            for _ in 0..REQUEST_RUNS {
                let r = run(&s.path, &s.args("true", &table), &proxied[&Tls::Pod]);
                s.check(&r);
            }
            m.operations = operations.lock().unwrap()[seen..].to_vec();
        }
        (subjects, measured)
    })
    .await
    .expect("the benchmark's runs");
    header.push(format!(
        "load average (1 min): {load_before} before, {} after",
        load_average()
    ));

    let report = report(&subjects, &measured, rounds, &header, &notes);
    println!("{report}");
    let out = env_path("LOCK_EXEC_BENCH_OUT").unwrap_or_else(|| repo().join("target/bench"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("results.md"), &report).unwrap();
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&samples_json(&subjects, &measured, &header)).unwrap(),
    )
    .unwrap();
    eprintln!("bench: wrote {}", out.join("results.md").display());
}

/// The Markdown report.
fn report(
    subjects: &[Subject],
    measured: &[Measured],
    rounds: usize,
    header: &[String],
    notes: &[String],
) -> String {
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(w, "## lock-exec benchmark\n");
    for h in header {
        let _ = writeln!(w, "- {h}");
    }
    for n in notes {
        let _ = writeln!(w, "- **{n}**");
    }
    let _ = writeln!(
        w,
        "\nEvery process runs as `PROGRAM run KEY true -t TABLE` (the floor takes the same \
         argv) in a clean environment: PATH, HOME, AWS test credentials, AWS_REGION, \
         AWS_ENDPOINT_URL; the CI env adds SSL_CERT_FILE={CA_FILE} and \
         SSL_CERT_DIR={CA_DIR}. {WARMUP_ROUNDS} untimed rounds, then {rounds} timed \
         rounds; each round runs every subject once per environment in a rotated order, \
         each right after its own bare `true`. Overhead = the subject's wall time (spawn to \
         reaped) minus that `true`'s. Medians with p10–p90 (min–max under 10 samples).\n"
    );

    let find = |kind: Kind| subjects.iter().position(|s| s.kind == kind);
    let main = 0;
    let peer = find(Kind::Peer);
    let floor = find(Kind::Floor);

    let _ = writeln!(
        w,
        "### Overhead of `run K true` over a bare `true` (wall time)\n"
    );
    let _ = writeln!(
        w,
        "| Subject | {} | {} |",
        Tls::Pod.label(),
        Tls::Ci.label()
    );
    let _ = writeln!(w, "|---|---|---|");
    for (s, m) in subjects.iter().zip(measured) {
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            s.name,
            m.overhead(Tls::Pod).show("ms", 2),
            m.overhead(Tls::Ci).show("ms", 2)
        );
    }
    let bare = |tls: Tls| {
        summary(
            &measured[main].pairs[&tls]
                .iter()
                .map(|p| ms(p.reference.wall))
                .collect::<Vec<_>>(),
        )
    };
    let _ = writeln!(
        w,
        "| (bare `true` itself, before lock-exec's runs) | {} | {} |",
        bare(Tls::Pod).show("ms", 2),
        bare(Tls::Ci).show("ms", 2)
    );

    let _ = writeln!(
        w,
        "\n### Total wall time and CPU time (user+sys, child included) per run\n"
    );
    let _ = writeln!(
        w,
        "| Subject | wall, pod env | CPU, pod env | wall, CI env | CPU, CI env |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    for (s, m) in subjects.iter().zip(measured) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            s.name,
            m.wall(Tls::Pod).show("ms", 2),
            m.cpu(Tls::Pod).show("ms", 2),
            m.wall(Tls::Ci).show("ms", 2),
            m.cpu(Tls::Ci).show("ms", 2)
        );
    }

    let _ = writeln!(w, "\n### Memory, size, requests, CA files\n");
    let _ = writeln!(
        w,
        "| Subject | peak RSS (VmHWM), pod env | peak RSS, CI env | RSS anon + file (pod env, last reading) | binary size | static | requests per run (counting proxy, {REQUEST_RUNS} runs) | CA files opened per run (strace): pod / CI env |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for (s, m) in subjects.iter().zip(measured) {
        let size = std::fs::metadata(&s.path).map_or(0, |m| m.len());
        let last = m.rss[&Tls::Pod].last().unwrap();
        let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
        for op in &m.operations {
            *ops.entry(op.as_str()).or_default() += 1;
        }
        let ops = ops
            .iter()
            .map(|(op, n)| format!("{op} {}", *n as f64 / REQUEST_RUNS as f64))
            .collect::<Vec<_>>()
            .join(", ");
        let ca = |tls: Tls| {
            m.ca_files[&tls].map_or("not measured (no strace)".into(), |n| n.to_string())
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.2} + {:.2} MiB | {:.2} MiB ({size} B) | {} | {} ({ops}) | {} / {} |",
            s.name,
            m.peak_mib(Tls::Pod).show("MiB", 2),
            m.peak_mib(Tls::Ci).show("MiB", 2),
            last.anon_kib as f64 / 1024.0,
            last.file_kib as f64 / 1024.0,
            mib(size),
            if is_static(&s.path) { "yes" } else { "no" },
            m.operations.len() as f64 / REQUEST_RUNS as f64,
            ca(Tls::Pod),
            ca(Tls::Ci),
        );
    }
    let _ = writeln!(
        w,
        "\nPeak RSS: VmHWM of /proc/PID/status, polled every 1 ms while `run K 'sleep 0.2'` \
         runs, last reading kept ({RSS_RUNS} runs per environment)."
    );

    let _ = writeln!(w, "\n### Targets (issue 13; reported, never asserted)\n");
    let _ = writeln!(w, "| Target | {} | {} |", Tls::Pod.label(), Tls::Ci.label());
    let _ = writeln!(w, "|---|---|---|");
    let ratio_row =
        |w: &mut String, what: &str, other: Option<usize>, limit: f64, missing: &str| {
            let cell = |tls: Tls| match other {
                Some(o) => {
                    let (a, b) = (
                        measured[main].overhead(tls).median,
                        measured[o].overhead(tls).median,
                    );
                    let ratio = a / b;
                    format!("{ratio:.2} ({a:.2} / {b:.2} ms): {}", met(ratio <= limit))
                }
                None => missing.to_string(),
            };
            let _ = writeln!(w, "| {what} | {} | {} |", cell(Tls::Pod), cell(Tls::Ci));
        };
    ratio_row(
        w,
        &format!("overhead ≤ {TARGET_PEER_RATIO} × the Go tool's (ratio of medians)"),
        peer,
        TARGET_PEER_RATIO,
        "peer not measured",
    );
    ratio_row(
        w,
        &format!("overhead ≤ {TARGET_FLOOR_RATIO} × the floor's (ratio of medians)"),
        floor,
        TARGET_FLOOR_RATIO,
        "floor not measured",
    );
    let rss = |tls: Tls| {
        let m = measured[main].peak_mib(tls).median;
        format!("{m:.2} MiB: {}", met(m <= TARGET_RSS_MIB))
    };
    let _ = writeln!(
        w,
        "| peak RSS ≤ {TARGET_RSS_MIB} MiB | {} | {} |",
        rss(Tls::Pod),
        rss(Tls::Ci)
    );
    let size = mib(std::fs::metadata(&subjects[main].path).map_or(0, |m| m.len()));
    let _ =
        writeln!(
        w,
        "| static binary ≤ {TARGET_SIZE_MIB} MiB | {size:.2} MiB: {} (static: {}) | same binary |",
        met(size <= TARGET_SIZE_MIB),
        if is_static(&subjects[main].path) { "yes" } else { "**no**" }
    );
    let requests = measured[main].operations.len() as f64 / REQUEST_RUNS as f64;
    let _ = writeln!(
        w,
        "| exactly 2 requests per run | {requests}: {} | (measured in the pod env) |",
        met(requests == 2.0)
    );
    let ca = |tls: Tls| match measured[main].ca_files[&tls] {
        Some(n) => format!("{n}: {}", met(n == 0)),
        None => "not measured (no strace)".into(),
    };
    let _ = writeln!(
        w,
        "| no CA file opened for a plain-HTTP endpoint | {} | {} |",
        ca(Tls::Pod),
        ca(Tls::Ci)
    );
    r
}

/// Every sample, for whoever wants another statistic.
fn samples_json(
    subjects: &[Subject],
    measured: &[Measured],
    header: &[String],
) -> serde_json::Value {
    let per_subject = subjects
        .iter()
        .zip(measured)
        .map(|(s, m)| {
            let per_tls = |tls: Tls| {
                serde_json::json!({
                    "reference_wall_ms": m.pairs[&tls].iter().map(|p| ms(p.reference.wall)).collect::<Vec<_>>(),
                    "wall_ms": m.pairs[&tls].iter().map(|p| ms(p.subject.wall)).collect::<Vec<_>>(),
                    "cpu_ms": m.pairs[&tls].iter().map(|p| ms(p.subject.cpu)).collect::<Vec<_>>(),
                    "peak_rss_kib": m.rss[&tls].iter().map(|r| r.hwm_kib).collect::<Vec<_>>(),
                    "ca_files_opened": m.ca_files[&tls],
                })
            };
            serde_json::json!({
                "name": s.name,
                "path": s.path,
                "size_bytes": std::fs::metadata(&s.path).map_or(0, |m| m.len()),
                "static": is_static(&s.path),
                "operations": m.operations,
                "pod": per_tls(Tls::Pod),
                "ci": per_tls(Tls::Ci),
            })
        })
        .collect::<Vec<_>>();
    serde_json::json!({ "header": header, "subjects": per_subject })
}
