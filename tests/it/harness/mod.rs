//! Test harness: servers, the binary, a fault-injecting TCP proxy, and item inspection.
//! Every server and child process is killed on drop; every wait has a timeout.

#![allow(dead_code)]

mod jobs;
mod proxy;

pub use jobs::*;
pub use proxy::*;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::io::AsyncReadExt;

/// The binary under test: the one cargo built for this test run, or `LOCK_EXEC_BIN` when
/// set (the benchmark measures the static release build that ships).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("LOCK_EXEC_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_lock-exec").to_string())
    })
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The git-ignored tools folder filled by scripts/install-tools.sh.
pub fn tools() -> PathBuf {
    repo().join(".tools")
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A unique name for tables, keys and temp dirs within this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        now_ns() % 1_000_000
    )
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("lock-exec-test"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which DynamoDB-compatible server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Dynalite,
    Moto,
}

/// A DynamoDB-compatible server on a free loopback port, killed on drop.
pub struct Server {
    pub backend: Backend,
    pub port: u16,
    child: Child,
    /// dynalite's data directory, when persistent (for restart tests).
    data: Option<PathBuf>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub fn start(backend: Backend) -> Self {
        Self::start_with(backend, None, None, &[])
    }

    /// moto enforcing IAM after its first `free` requests (for the set-up).
    pub fn moto_with_iam(free: u32) -> Self {
        Self::start_with(
            Backend::Moto,
            None,
            None,
            &[("INITIAL_NO_AUTH_ACTION_COUNT", free.to_string())],
        )
    }

    /// dynalite keeping its data in `dir`, so it can be restarted with the same data.
    pub fn dynalite_persistent(dir: &Path, port: Option<u16>) -> Self {
        Self::start_with(Backend::Dynalite, Some(dir.to_path_buf()), port, &[])
    }

    fn start_with(
        backend: Backend,
        data: Option<PathBuf>,
        port: Option<u16>,
        envs: &[(&str, String)],
    ) -> Self {
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let mut cmd = match backend {
                Backend::Dynalite => {
                    let mut c = Command::new(tools().join("npm/node_modules/.bin/dynalite"));
                    c.args([
                        "--host",
                        "127.0.0.1",
                        "--port",
                        &port.to_string(),
                        "--createTableMs",
                        "0",
                    ]);
                    if let Some(d) = &data {
                        c.arg("--path").arg(d);
                    }
                    c
                }
                Backend::Moto => {
                    // moto's own app, serialised: see tests/fixtures/moto_serial.py.
                    let mut c = Command::new(tools().join("venv/bin/python"));
                    c.arg(repo().join("tests/fixtures/moto_serial.py"));
                    c.args(["127.0.0.1", &port.to_string()]);
                    c
                }
            };
            let child = cmd
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {backend:?} (run scripts/install-tools.sh): {e}")
                });
            let mut server = Server {
                backend,
                port,
                child,
                data: data.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // port taken, probably: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.child.kill();
        }
        panic!("{backend:?} did not start");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server plus a table created with `lock-exec create-table`.
pub struct Env {
    pub server: Server,
    pub table: String,
    pub dir: TempDir,
}

impl Env {
    pub async fn new(backend: Backend) -> Self {
        let server = Server::start(backend);
        Self::with_server(server).await
    }

    pub async fn with_server(server: Server) -> Self {
        let env = Env {
            server,
            table: unique("locks"),
            dir: TempDir::new(),
        };
        let out = env.cmd(["create-table"]).output().await;
        assert_eq!(out.code, Some(0), "create-table failed: {}", out.stderr);
        env
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// `lock-exec ARGS` against this env's server and table.
    pub fn cmd<I, S>(&self, args: I) -> LockExec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        LockExec::new(&self.endpoint(), &self.table).args(args)
    }

    /// An SDK client straight to the server (never through a proxy).
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        client(&self.endpoint())
    }

    /// The lock item for `key`, read consistently and decoded by the tests' own reading
    /// of the documented layout (not the implementation's decoder).
    pub async fn item(&self, key: &str) -> Option<Item> {
        self.raw_item(key).await.map(|raw| Item::from_raw(&raw))
    }

    /// The lock item for `key` as DynamoDB returns it.
    pub async fn raw_item(&self, key: &str) -> Option<HashMap<String, AttributeValue>> {
        let out = self
            .client()
            .get_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        out.item().cloned()
    }

    /// Writes the original Go tool's lock: `{key, expire}` only, `expire` in Unix ns.
    pub async fn put_go_item(&self, key: &str, expire_ns: i64) {
        self.put_raw(HashMap::from([
            ("key".to_string(), AttributeValue::S(key.into())),
            (
                "expire".to_string(),
                AttributeValue::N(expire_ns.to_string()),
            ),
        ]))
        .await;
    }

    /// Writes a raw item, e.g. in the original Go tool's format.
    pub async fn put_raw(&self, item: HashMap<String, AttributeValue>) {
        self.client()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
}

/// A lock item as the README documents it: times in Unix nanoseconds (`ttl` in seconds),
/// read here independently of lock-exec's own code, so a wrong name, type or unit fails.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    pub owner: Option<String>,
    pub cluster: Option<String>,
    pub run: Option<String>,
    pub fence: Option<i64>,
    pub acquired_ns: Option<i64>,
    pub expire_ns: Option<i64>,
    pub deadline_ns: Option<i64>,
    pub ttl_s: Option<i64>,
    pub slot: Option<i64>,
    pub released_ns: Option<i64>,
    pub revoked_ns: Option<i64>,
    pub done_slot: Option<i64>,
    pub done_by: Option<String>,
    pub done_cluster: Option<String>,
    pub done_at_ns: Option<i64>,
}

impl Item {
    pub fn from_raw(raw: &HashMap<String, AttributeValue>) -> Self {
        let s = |name: &str| match raw.get(name) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            None => None,
            Some(other) => panic!("attribute {name} is not a string: {other:?}"),
        };
        let n = |name: &str| match raw.get(name) {
            Some(AttributeValue::N(v)) => Some(
                v.parse::<i64>()
                    .unwrap_or_else(|_| panic!("attribute {name} is not an integer: {v}")),
            ),
            None => None,
            Some(other) => panic!("attribute {name} is not a number: {other:?}"),
        };
        Item {
            owner: s("owner"),
            cluster: s("cluster"),
            run: s("run"),
            fence: n("fence"),
            acquired_ns: n("acquired"),
            expire_ns: n("expire"),
            deadline_ns: n("deadline"),
            ttl_s: n("ttl"),
            slot: n("slot"),
            released_ns: n("released"),
            revoked_ns: n("revoked"),
            done_slot: n("done_slot"),
            done_by: s("done_by"),
            done_cluster: s("done_cluster"),
            done_at_ns: n("done_at"),
        }
    }

    /// Held: the lease end is not before `now_ns` (the Go tool's rule, `expire < now` is free).
    pub fn is_held(&self, now_ns: i64) -> bool {
        self.expire_ns.is_some_and(|e| e >= now_ns)
    }
}

/// A `lock-exec run` whose command has started.
pub struct Holder {
    /// The lock-exec process.
    pub running: Running,
    /// The command's pid (the `sh` that runs the body, or what it `exec`s).
    pub child: i32,
}

impl Env {
    /// Starts `lock-exec ARGS -- sh -c BODY` and waits until the command runs.
    pub async fn holder(&self, args: &[&str], body: &str) -> Holder {
        self.holder_via(&self.endpoint(), args, body).await
    }

    /// The same through another endpoint (a proxy).
    pub async fn holder_via(&self, endpoint: &str, args: &[&str], body: &str) -> Holder {
        let pidfile = self.dir.file(&unique("pid"));
        let script = format!("echo $$ > {}; {body}", pidfile.display());
        let running = LockExec::new(endpoint, &self.table)
            .args(args)
            .args(["--", "sh", "-c", &script])
            .spawn();
        wait_for("the holder's command", Duration::from_secs(20), || {
            read_num(&pidfile).is_some()
        })
        .await;
        Holder {
            running,
            child: read_num(&pidfile).unwrap() as i32,
        }
    }
}

impl Env {
    /// `lock-exec run KEY --wait WAIT` whose command records when it started (Unix ns).
    pub async fn contender(&self, key: &str, wait: &str) -> (Output, Option<i64>) {
        let file = self.dir.file(&unique("started"));
        let record = format!("date +%s%N > {}", file.display());
        let out = self
            .cmd(["run", key, "--wait", wait, "--", "sh", "-c", &record])
            .output()
            .await;
        (out, read_num(&file))
    }
}

/// Resolves to the time (Unix ns) at which `pid` died, polling every 2 ms.
pub fn death_of(pid: i32) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        now_ns()
    })
}

/// An SDK client for `endpoint` with dummy credentials.
pub fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// What a finished `lock-exec` printed and returned.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// A `lock-exec` invocation with a clean, explicit environment.
pub struct LockExec {
    cmd: tokio::process::Command,
    timeout: Duration,
}

impl LockExec {
    pub fn new(endpoint: &str, table: &str) -> Self {
        Self::program(bin(), endpoint, table)
    }

    /// The clean environment every lock-exec of the tests runs with.
    pub fn base_env(endpoint: &str, table: &str) -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
            ("HOME".into(), std::env::temp_dir().display().to_string()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("LOCK_EXEC_ENDPOINT_URL".into(), endpoint.into()),
            ("LOCK_EXEC_TABLE".into(), table.into()),
            ("LOCK_EXEC_LOG_FORMAT".into(), "json".into()),
        ]
    }

    /// Any program (e.g. `unshare`) with lock-exec's environment.
    pub fn program(program: impl AsRef<std::ffi::OsStr>, endpoint: &str, table: &str) -> Self {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .envs(Self::base_env(endpoint, table))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        LockExec {
            cmd,
            timeout: Duration::from_secs(60),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg_path(mut self, p: &Path) -> Self {
        self.cmd.arg(p);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// Where lock-exec's stderr goes (default: a pipe the harness reads).
    pub fn stderr(mut self, to: Stdio) -> Self {
        self.cmd.stderr(to);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs to completion (killed after the timeout, which fails the test).
    pub async fn output(self) -> Output {
        let started = Instant::now();
        let timeout = self.timeout;
        let child = self.spawn();
        child.wait_timeout(timeout, started).await
    }

    pub fn spawn(mut self) -> Running {
        let child = self.cmd.spawn().expect("spawn lock-exec");
        Running {
            child,
            started: Instant::now(),
            timeout: self.timeout,
        }
    }
}

/// A running `lock-exec`, killed on drop.
pub struct Running {
    pub child: tokio::process::Child,
    pub started: Instant,
    timeout: Duration,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub async fn wait(self) -> Output {
        let (timeout, started) = (self.timeout, self.started);
        self.wait_timeout(timeout, started).await
    }

    async fn wait_timeout(mut self, timeout: Duration, started: Instant) -> Output {
        let stdout = self.child.stdout.take();
        let stderr = self.child.stderr.take();
        let read = async {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let read_o = async {
                if let Some(mut s) = stdout {
                    let _ = s.read_to_end(&mut o).await;
                }
            };
            let read_e = async {
                if let Some(mut s) = stderr {
                    let _ = s.read_to_end(&mut e).await;
                }
            };
            tokio::join!(read_o, read_e);
            let status = self.child.wait().await.unwrap();
            (status, o, e)
        };
        let (status, o, e) = match tokio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => panic!("lock-exec did not finish within {timeout:?}"),
        };
        use std::os::unix::process::ExitStatusExt;
        Output {
            code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
            elapsed: started.elapsed(),
        }
    }
}

/// libfaketime's preload library (Debian's faketime package).
pub fn libfaketime() -> PathBuf {
    let path = PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
    assert!(
        path.exists(),
        "{} missing: run scripts/install-tools.sh",
        path.display()
    );
    path
}

/// Waits until `f` is true, polling every 20 ms; panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until lock-exec has its signal handlers (SIGTERM caught), so a signal sent now is
/// handled rather than killing it.
pub async fn handlers_installed(pid: i32) {
    wait_for(
        "lock-exec's signal handlers",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("SigCgt:"))?.to_string();
                    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
                })
                .is_some_and(|caught| caught & (1 << (15 - 1)) != 0)
        },
    )
    .await;
}

/// Reads a file of one integer (e.g. a pid or a timestamp written by a child).
pub fn read_num(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Parses the JSON log lines of a run.
pub fn log_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Generates one test per backend: `both!(name)` calls `async fn name(Backend)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod dynalite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Dynalite).await
                }
            )*
        }
        mod moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Moto).await
                }
            )*
        }
    };
}
