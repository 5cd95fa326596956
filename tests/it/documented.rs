//! Documented behaviour that had no test (issue #14, and issue #12's logs, summary and
//! `list`): every option and its environment variable, the log formats and the run
//! summary, log levels, the defaults, `status`, `unlock` and `list`, usage errors,
//! `create-table`, `install`, signal forwarding, and `--min-hold` on the stop paths.
//!
//! Black-box: the binary against dynalite or moto; items are read with the raw SDK client
//! and decoded by the harness's own reading of the documented layout, log records are
//! parsed here (JSON, and logfmt with a parser of our own).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::both;
use crate::harness::*;

both!(
    unlock_of_never_locked_lapsed_and_released_keys_changes_nothing,
    status_describes_free_held_and_finished_keys,
    min_hold_and_go_tool_locks_in_status_and_unlock,
    list_pages_through_the_whole_table,
    create_table_sets_billing_key_schema_and_ttl,
);

/// A JSON log record.
type Record = serde_json::Map<String, Value>;

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

// ---------------------------------------------------------------------------------------
// Helpers: log records, durations, commands the test can hold open.
// ---------------------------------------------------------------------------------------

/// Every stderr line as a JSON object; a line that is not one fails the test.
fn json_records(stderr: &str) -> Vec<Record> {
    stderr
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => m,
            _ => panic!("not a JSON log record: {l:?}\nall of stderr:\n{stderr}"),
        })
        .collect()
}

/// The records with this message.
fn with_message<'a>(records: &'a [Record], message: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r["message"].as_str() == Some(message))
        .collect()
}

/// The one record with this message.
fn record<'a>(records: &'a [Record], message: &str) -> &'a Record {
    let found = with_message(records, message);
    assert_eq!(
        found.len(),
        1,
        "want one record '{message}' in {records:#?}"
    );
    found[0]
}

/// The record's timestamp (RFC 3339) in Unix ns.
fn timestamp_ns(r: &Record) -> i64 {
    let t = r["timestamp"].as_str().expect("a timestamp");
    let t = humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("timestamp {t}: {e}"));
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Parses one logfmt line: `key=value` pairs separated by one space, each value bare (no
/// space, quote, `=` or backslash) or a quoted string with JSON escapes.
fn logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("no '=' in {rest:?}"))?;
        let key = &rest[..eq];
        if key.is_empty() || key.contains([' ', '"', '\\']) {
            return Err(format!("bad key {key:?}"));
        }
        rest = &rest[eq + 1..];
        let value = if rest.starts_with('"') {
            let bytes = rest.as_bytes();
            let (mut i, mut end) = (1, None);
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => {
                        end = Some(i);
                        break;
                    }
                    _ => i += 1,
                }
            }
            let end = end.ok_or_else(|| format!("unterminated quote in {rest:?}"))?;
            let v = serde_json::from_str::<String>(&rest[..=end])
                .map_err(|e| format!("bad quoted value {:?}: {e}", &rest[..=end]))?;
            rest = &rest[end + 1..];
            v
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            let v = &rest[..end];
            if v.is_empty() || v.contains(['"', '=', '\\']) {
                return Err(format!("bad bare value {v:?} (key {key})"));
            }
            rest = &rest[end..];
            v.to_string()
        };
        if pairs.iter().any(|(k, _): &(String, String)| k == key) {
            return Err(format!("key {key} twice"));
        }
        pairs.push((key.to_string(), value));
        if let Some(r) = rest.strip_prefix(' ') {
            if r.is_empty() || r.starts_with(' ') {
                return Err("stray space".into());
            }
            rest = r;
        } else if !rest.is_empty() {
            return Err(format!("no space before {rest:?}"));
        }
    }
    Ok(pairs)
}

#[test]
fn logfmt_parser_reads_bare_and_quoted_values() {
    let pairs = logfmt(r#"time=t level=info msg="a \"b\" c" n=3 e="" u="\u0001x""#).unwrap();
    let want = [
        ("time", "t"),
        ("level", "info"),
        ("msg", r#"a "b" c"#),
        ("n", "3"),
        ("e", ""),
        ("u", "\u{1}x"),
    ];
    assert_eq!(
        pairs,
        want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
    );
    for bad in [
        "a=b c", "a=b  c=d", "a=\"open", "a=x\"y", "a=1 a=2", "a=b ", "=b",
    ] {
        assert!(logfmt(bad).is_err(), "{bad}");
    }
}

/// A duration as lock-exec prints it (`950ms`, `1.5s`, `29.97s`, `4m12s`, `3h05m`,
/// `2d04h`); None for anything else, such as Rust's `1s 500ms` or a debug string.
fn human_duration(s: &str) -> Option<Duration> {
    let num = |t: &str| -> Option<u64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let two = |t: &str| num(t).filter(|_| t.len() == 2);
    if let Some(ms) = s.strip_suffix("ms") {
        return Some(Duration::from_millis(num(ms)?));
    }
    if let Some((d, h)) = s.strip_suffix('h').and_then(|t| t.split_once('d')) {
        return Some(Duration::from_secs(num(d)? * 86_400 + two(h)? * 3600));
    }
    if let Some((h, m)) = s.strip_suffix('m').and_then(|t| t.split_once('h')) {
        return Some(Duration::from_secs(num(h)? * 3600 + two(m)? * 60));
    }
    let secs = s.strip_suffix('s')?;
    if let Some((m, sec)) = secs.split_once('m') {
        return Some(Duration::from_secs(num(m)? * 60 + two(sec)?));
    }
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    num(whole)?;
    if !frac.is_empty() && (frac.len() > 2 || num(frac).is_none()) {
        return None;
    }
    Some(Duration::from_secs_f64(secs.parse().ok()?))
}

/// Parses a duration the way the tests give them to lock-exec (`20s`, `300ms`, `2h`).
fn given(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap()
}

fn ns(d: Duration) -> i64 {
    d.as_nanos() as i64
}

/// A command that says when it started and ends when told to (or after 30 s), so the test
/// can look at the item while the command runs.
struct Gate {
    started: PathBuf,
    go: PathBuf,
}

impl Gate {
    fn new(dir: &Path) -> Self {
        Gate {
            started: dir.join(unique("started")),
            go: dir.join(unique("go")),
        }
    }

    /// `sh -c BODY` exiting with `code` once opened.
    fn argv(&self, code: u8) -> Vec<String> {
        let body = format!(
            "touch {s}; i=0; while [ ! -e {g} ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done; exit {code}",
            s = self.started.display(),
            g = self.go.display()
        );
        vec!["sh".into(), "-c".into(), body]
    }

    fn open(&self) {
        std::fs::write(&self.go, "").unwrap();
    }
}

/// A run observed from outside: its output, and its item while the command ran (when it
/// did) and after.
struct Observed {
    out: Output,
    during: Option<Item>,
    after: Option<Item>,
    /// Wall time from start to exit.
    elapsed: Duration,
}

/// `lock-exec run KEY ARGS -- <gate>` with `vars` set.
async fn observe(env: &Env, key: &str, args: &[String], vars: &[(&str, String)]) -> Observed {
    let gate = Gate::new(env.dir.path());
    let mut cmd = env.cmd(["run", key]).args(args);
    for (k, v) in vars {
        cmd = cmd.env(k, v);
    }
    let running = cmd.arg("--").args(gate.argv(0)).spawn();
    let pid = running.pid();
    wait_for(
        "the command to start or lock-exec to end",
        Duration::from_secs(30),
        || gate.started.exists() || !alive(pid),
    )
    .await;
    let during = if gate.started.exists() {
        env.item(key).await
    } else {
        None
    };
    gate.open();
    let out = running.wait().await;
    let elapsed = out.elapsed;
    Observed {
        after: env.item(key).await,
        out,
        during,
        elapsed,
    }
}

/// An SDK client for `endpoint` in `region`.
fn client_in(endpoint: &str, region: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// A loopback URL nothing listens on.
fn dead_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

// ---------------------------------------------------------------------------------------
// Options and their environment variables.
// ---------------------------------------------------------------------------------------

/// One `run` option: run once with only its environment variable, once with the variable
/// and the flag (a different value): each time the value given must be the one in effect.
struct OptionCase {
    flag: &'static str,
    var: &'static str,
    env_value: String,
    flag_value: String,
    /// Run against a key another run holds.
    busy: bool,
    /// Other arguments the case needs.
    extra: Vec<String>,
    /// Checks that `value` is in effect.
    check: fn(&Observed, &str) -> Result<(), String>,
}

fn case(
    flag: &'static str,
    var: &'static str,
    values: (&str, &str),
    check: fn(&Observed, &str) -> Result<(), String>,
) -> OptionCase {
    OptionCase {
        flag,
        var,
        env_value: values.0.into(),
        flag_value: values.1.into(),
        busy: false,
        extra: Vec::new(),
        check,
    }
}

fn during(o: &Observed) -> Result<&Item, String> {
    o.during
        .as_ref()
        .ok_or_else(|| format!("the command did not run: {}", o.out.stderr))
}

fn after(o: &Observed) -> Result<&Item, String> {
    o.after
        .as_ref()
        .ok_or_else(|| "no item after the run".into())
}

fn exit_code(o: &Observed, want: i32) -> Result<(), String> {
    (o.out.code == Some(want))
        .then_some(())
        .ok_or_else(|| format!("exit {:?}, want {want}: {}", o.out.code, o.out.stderr))
}

fn eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    (got == want)
        .then_some(())
        .ok_or_else(|| format!("{what}: got {got:?}, want {want:?}"))
}

fn summary_field(o: &Observed, name: &str) -> Result<Value, String> {
    let records = json_records(&o.out.stderr);
    let last = records.last().ok_or("no records")?;
    eq(
        "last record",
        last["message"].as_str(),
        Some("run finished"),
    )?;
    Ok(last.get(name).cloned().unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_option_takes_its_env_var_and_the_flag_wins() {
    let env = Env::new(Backend::Dynalite).await;
    let _busy = env
        .holder(
            &["run", "busy", "--owner", "busy-holder", "--lease", "30s"],
            "sleep 600",
        )
        .await;
    let now_min = now_ns() / S / 60;
    let (job_now, job_before) = (
        format!("nightly-{now_min}"),
        format!("nightly-{}", now_min - 1),
    );
    let mut cases = vec![
        case("--lease", "LOCK_EXEC_LEASE", ("20s", "40s"), |o, v| {
            let it = during(o)?;
            eq(
                "expire - acquired",
                it.expire_ns.unwrap() - it.acquired_ns.unwrap(),
                ns(given(v)),
            )?;
            let records = json_records(&o.out.stderr);
            eq(
                "lease field",
                record(&records, "lock acquired")["lease"].as_str(),
                Some(v),
            )
        }),
        case("--expire", "LOCK_EXEC_EXPIRE", ("2h", "3h"), |o, v| {
            let it = during(o)?;
            eq(
                "deadline - acquired",
                it.deadline_ns.unwrap() - it.acquired_ns.unwrap(),
                ns(given(v)),
            )
        }),
        case(
            "--owner",
            "LOCK_EXEC_OWNER",
            ("env-owner", "flag-owner"),
            |o, v| {
                eq("owner", during(o)?.owner.as_deref(), Some(v))?;
                eq("summary owner", summary_field(o, "owner")?, Value::from(v))
            },
        ),
        case(
            "--cluster",
            "LOCK_EXEC_CLUSTER",
            ("env-east", "flag-west"),
            |o, v| {
                eq("cluster", during(o)?.cluster.as_deref(), Some(v))?;
                eq(
                    "summary cluster",
                    summary_field(o, "cluster")?,
                    Value::from(v),
                )
            },
        ),
        case(
            "--min-hold",
            "LOCK_EXEC_MIN_HOLD",
            ("20s", "40s"),
            |o, v| {
                exit_code(o, 0)?;
                let it = after(o)?;
                eq(
                    "expire - acquired after the run",
                    it.expire_ns.unwrap() - it.acquired_ns.unwrap(),
                    ns(given(v)),
                )
            },
        ),
        case("--slot", "LOCK_EXEC_SLOT", ("1000", "2000"), |o, v| {
            let n: i64 = v.parse().unwrap();
            eq("slot", during(o)?.slot, Some(n))?;
            eq("done_slot", after(o)?.done_slot, Some(n))
        }),
        case(
            "--slot-from-job-name",
            "LOCK_EXEC_JOB_NAME",
            (&job_now, &job_before),
            |o, v| {
                let n: i64 = v.rsplit_once('-').unwrap().1.parse().unwrap();
                eq("slot", during(o)?.slot, Some(n))
            },
        ),
        case(
            "--schedule",
            "LOCK_EXEC_SCHEDULE",
            ("7 * * * *", "23 * * * *"),
            |o, v| {
                let minute: i64 = v.split(' ').next().unwrap().parse().unwrap();
                let slot = during(o)?.slot.ok_or("no slot")?;
                eq("slot's minute of the hour", slot % 60, minute)?;
                let off = (slot - now_ns() / S / 60).abs();
                (off <= 30)
                    .then_some(())
                    .ok_or(format!("slot {slot} is not the nearest occurrence"))
            },
        ),
        case(
            "--log-format",
            "LOCK_EXEC_LOG_FORMAT",
            ("text", "json"),
            |o, v| {
                let first = o.out.stderr.lines().next().ok_or("no log")?;
                match v {
                    "json" => serde_json::from_str::<Value>(first)
                        .map(|_| ())
                        .map_err(|e| format!("{e}: {first}")),
                    _ => logfmt(first).and_then(|p| {
                        eq("first key", p.first().map(|p| p.0.as_str()), Some("time"))
                    }),
                }
            },
        ),
    ];
    let mut tz = case(
        "--time-zone",
        "LOCK_EXEC_TIME_ZONE",
        ("Asia/Tokyo", "Asia/Kolkata"),
        |o, v| {
            // 03:00 local in zones without daylight saving time, in minutes of the UTC day.
            let want = match v {
                "Asia/Tokyo" => 18 * 60,
                _ => 21 * 60 + 30,
            };
            eq(
                "slot's minute of the day",
                during(o)?.slot.ok_or("no slot")? % 1440,
                want,
            )
        },
    );
    tz.extra = vec!["--schedule".into(), "0 3 * * *".into()];
    cases.push(tz);
    let mut busy = vec![
        case(
            "--locked-exit-code",
            "LOCK_EXEC_LOCKED_EXIT_CODE",
            ("3", "4"),
            |o, v| {
                exit_code(o, v.parse().unwrap())?;
                eq(
                    "outcome",
                    summary_field(o, "outcome")?,
                    Value::from("skipped"),
                )
            },
        ),
        case(
            "--wait-exit-code",
            "LOCK_EXEC_WAIT_EXIT_CODE",
            ("5", "6"),
            |o, v| {
                exit_code(o, v.parse().unwrap())?;
                eq(
                    "outcome",
                    summary_field(o, "outcome")?,
                    Value::from("wait-timeout"),
                )
            },
        ),
        case("--wait", "LOCK_EXEC_WAIT", ("1s", "2s"), |o, v| {
            exit_code(o, 75)?;
            let records = json_records(&o.out.stderr);
            let gave_up = record(
                &records,
                "gave up waiting for the key; not running the command",
            );
            eq("waited", gave_up["waited"].as_str(), Some(v))?;
            (o.elapsed + Duration::from_millis(50) >= given(v))
                .then_some(())
                .ok_or(format!("gave up after {:?}", o.elapsed))
        }),
    ];
    busy[1].extra = vec!["--wait".into(), "200ms".into()];
    for c in &mut busy {
        c.busy = true;
    }
    cases.extend(busy);

    let mut failures = Vec::new();
    for c in &cases {
        for with_flag in [false, true] {
            let key = if c.busy {
                "busy".to_string()
            } else {
                unique("opt")
            };
            let mut args = c.extra.clone();
            let value = if with_flag {
                args.push(format!("{}={}", c.flag, c.flag_value));
                &c.flag_value
            } else {
                &c.env_value
            };
            let o = observe(&env, &key, &args, &[(c.var, c.env_value.clone())]).await;
            if let Err(e) = (c.check)(&o, value) {
                let how = if with_flag {
                    "flag over env"
                } else {
                    "env only"
                };
                failures.push(format!("{} / {} ({how}): {e}", c.flag, c.var));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `--retry-failed-slot` is a switch: LOCK_EXEC_RETRY_FAILED_SLOT=true turns it on, and the
/// flag turns it on over `false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_slot_from_env_and_flag() {
    let env = Env::new(Backend::Dynalite).await;
    let cases = [
        ("plain", None, None, Some(5)),
        ("by-env", Some("true"), None, None),
        ("by-flag", Some("false"), Some("--retry-failed-slot"), None),
    ];
    for (key, var, flag, done) in cases {
        let mut cmd = env.cmd(["run", key, "--slot", "5"]).args(flag);
        if let Some(v) = var {
            cmd = cmd.env("LOCK_EXEC_RETRY_FAILED_SLOT", v);
        }
        let out = cmd.args(["--", "sh", "-c", "exit 1"]).output().await;
        assert_eq!(out.code, Some(1), "{key}: {}", out.stderr);
        assert_eq!(env.item(key).await.unwrap().done_slot, done, "{key}");
    }
}

/// `-t`/`--table`, `--endpoint-url` as a flag, each over its environment variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_and_endpoint_flags_win_over_env() {
    let env = Env::new(Backend::Dynalite).await;
    let other = unique("other");
    let out = env.cmd(["create-table", "-t", &other]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let in_table = |table: String, key: &'static str| {
        let client = env.client();
        async move {
            client
                .get_item()
                .table_name(table)
                .key("key", AttributeValue::S(key.into()))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item()
                .is_some()
        }
    };
    // LOCK_EXEC_TABLE alone, then -t and --table over it.
    let out = env
        .cmd(["run", "by-env", "--", "true"])
        .env("LOCK_EXEC_TABLE", &other)
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(in_table(other.clone(), "by-env").await);
    assert!(!in_table(env.table.clone(), "by-env").await);
    for (i, flag) in ["-t", "--table"].into_iter().enumerate() {
        let key = ["short-flag", "long-flag"][i];
        let out = env
            .cmd(["run", key, flag, &other, "--", "true"])
            .output()
            .await;
        assert_eq!(out.code, Some(0), "{flag}: {}", out.stderr);
        assert!(in_table(other.clone(), key).await, "{flag}");
        assert!(!in_table(env.table.clone(), key).await, "{flag}");
    }

    // --endpoint-url alone; over a dead LOCK_EXEC_ENDPOINT_URL; which alone fails.
    let url = env.endpoint();
    let out = env
        .cmd(["run", "by-flag", "--endpoint-url", &url, "--", "true"])
        .env_remove("LOCK_EXEC_ENDPOINT_URL")
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(env.item("by-flag").await.unwrap().fence, Some(1));
    let out = env
        .cmd(["run", "by-flag", "--endpoint-url", &url, "--", "true"])
        .env("LOCK_EXEC_ENDPOINT_URL", dead_endpoint())
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(env.item("by-flag").await.unwrap().fence, Some(2));
    let marker = env.dir.file("dead-ran");
    let out = env
        .cmd(["run", "by-flag", "--", "touch", marker.to_str().unwrap()])
        .env("LOCK_EXEC_ENDPOINT_URL", dead_endpoint())
        .output()
        .await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(!marker.exists());
}

/// `-r`/`--region` and LOCK_EXEC_REGION pick the region requests are signed for; moto keeps
/// one set of tables per region, so a table made in one is missing from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_from_flag_and_env_selects_the_table() {
    let server = Server::start(Backend::Moto);
    let url = server.endpoint();
    let lock_exec = || LockExec::new(&url, "regional");
    let out = lock_exec()
        .args(["create-table", "-r", "eu-west-1"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let exists = |region: &'static str| {
        let client = client_in(&url, region);
        async move {
            client
                .describe_table()
                .table_name("regional")
                .send()
                .await
                .is_ok()
        }
    };
    assert!(exists("eu-west-1").await);
    assert!(!exists("us-east-1").await, "moto does not separate regions");

    // The base environment has AWS_REGION=us-east-1: the table is not found there.
    let out = lock_exec().args(["run", "k", "--", "true"]).output().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let runs: [(&str, Vec<&str>, Option<&str>); 4] = [
        ("-r", vec!["-r", "eu-west-1"], None),
        ("--region", vec!["--region", "eu-west-1"], None),
        ("LOCK_EXEC_REGION", vec![], Some("eu-west-1")),
        (
            "-r over LOCK_EXEC_REGION",
            vec!["-r", "eu-west-1"],
            Some("ap-south-1"),
        ),
    ];
    for (i, (what, args, var)) in runs.into_iter().enumerate() {
        let mut cmd = lock_exec().args(["run", "k"]).args(args).args([
            "--",
            "sh",
            "-c",
            "echo $LOCK_EXEC_FENCE",
        ]);
        if let Some(v) = var {
            cmd = cmd.env("LOCK_EXEC_REGION", v);
        }
        let out = cmd.output().await;
        assert_eq!(out.code, Some(0), "{what}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), (i + 1).to_string(), "{what}");
    }
}

/// A valid `--heartbeat` (or LOCK_EXEC_HEARTBEAT) sets the renewal period, as the debug
/// records `lease renewed` show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_sets_the_renewal_period() {
    let env = Env::new(Backend::Dynalite).await;
    // lease 4s: the default heartbeat (1.33s), or the env's 1.5s, renews at most 2 times
    // in the command's 3 s; 300 ms about 10 times.
    for (what, var, flag) in [
        ("env", "300ms", None),
        ("flag over env", "1500ms", Some("300ms")),
    ] {
        let mut cmd = env
            .cmd(["run", &unique("hb"), "--lease", "4s"])
            .env("LOCK_EXEC_LOG", "debug")
            .env("LOCK_EXEC_HEARTBEAT", var);
        if let Some(f) = flag {
            cmd = cmd.args(["--heartbeat", f]);
        }
        let out = cmd.args(["--", "sleep", "3"]).output().await;
        assert_eq!(out.code, Some(0), "{what}: {}", out.stderr);
        let records = json_records(&out.stderr);
        let times: Vec<i64> = with_message(&records, "lease renewed")
            .into_iter()
            .map(|r| {
                assert_eq!(r["level"], "debug");
                timestamp_ns(r)
            })
            .collect();
        assert!(times.len() >= 5, "{what}: {} renewals", times.len());
        let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        let median = gaps[gaps.len() / 2];
        assert!(
            (200 * MS..=700 * MS).contains(&median),
            "{what}: median gap {} ms",
            median / MS
        );
    }
}

/// LOCK_EXEC_GRACE (and `--grace` over it) is the time from a forwarded SIGTERM to SIGKILL
/// for a command that ignores SIGTERM; by default the smaller of 10s and lease/3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_from_env_and_flag_and_its_default() {
    let env = Env::new(Backend::Dynalite).await;
    let cases: [(&str, Vec<&str>, Option<&str>, Duration); 3] = [
        (
            "LOCK_EXEC_GRACE=1s",
            vec![],
            Some("1s"),
            Duration::from_secs(1),
        ),
        (
            "--grace 1s over LOCK_EXEC_GRACE=8s",
            vec!["--grace", "1s"],
            Some("8s"),
            Duration::from_secs(1),
        ),
        (
            "default with --lease 6s",
            vec!["--lease", "6s"],
            None,
            Duration::from_secs(2),
        ),
    ];
    for (what, args, var, grace) in cases {
        let key = unique("grace");
        let mut run_args = vec!["run", key.as_str()];
        run_args.extend(&args);
        let running = {
            let pidfile = env.dir.file(&unique("pid"));
            let mut cmd = env.cmd(&run_args);
            if let Some(v) = var {
                cmd = cmd.env("LOCK_EXEC_GRACE", v);
            }
            let script = format!(
                "trap '' TERM; echo $$ > {}; exec sleep 60",
                pidfile.display()
            );
            let running = cmd.args(["--", "sh", "-c", &script]).spawn();
            wait_for("the command", Duration::from_secs(20), || {
                read_num(&pidfile).is_some()
            })
            .await;
            running
        };
        let sent = Instant::now();
        running.signal(Signal::SIGTERM);
        let out = running.wait().await;
        let took = sent.elapsed();
        assert_eq!(out.code, Some(137), "{what}: {}", out.stderr);
        assert!(
            took + Duration::from_millis(100) >= grace && took < grace + Duration::from_secs(4),
            "{what}: SIGKILL {took:?} after SIGTERM"
        );
        let records = json_records(&out.stderr);
        let fwd = record(
            &records,
            "forwarded shutdown signal; keeping the lease until the command exits, SIGKILL after the grace period",
        );
        assert_eq!(
            human_duration(fwd["grace"].as_str().unwrap()),
            Some(grace),
            "{what}"
        );
        assert_eq!(fwd["signal"], "SIGTERM");
        assert_eq!(records.last().unwrap()["status"], "killed by SIGKILL");
    }
}

/// LOCK_EXEC_MAX_CLOCK_SKEW: an impossible value is refused naming it; a valid one moves
/// the hard-cap stop earlier by the skew (the command is stopped skew + margin + grace
/// before the deadline it wrote); the flag wins over the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clock_skew_from_env_and_flag() {
    let env = Env::new(Backend::Dynalite).await;
    let base = [
        "--lease",
        "6s",
        "--heartbeat",
        "1s",
        "--grace",
        "500ms",
        "-e",
        "8s",
    ];
    let marker = env.dir.file("never");
    let out = env
        .cmd(["run", "refused"])
        .args(base)
        .args(["--", "touch", marker.to_str().unwrap()])
        .env("LOCK_EXEC_MAX_CLOCK_SKEW", "5s")
        .output()
        .await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("--max-clock-skew (5s)"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists());

    // With skew 2s (margin 250ms, grace 500ms) SIGTERM comes 2.75s before the deadline;
    // with the default skew (600ms) it would come 1.35s before.
    let run = |key: &'static str, flag: Option<&'static str>, var: &'static str| {
        let mut cmd = env.cmd(["run", key]).args(base);
        if let Some(f) = flag {
            cmd = cmd.args(["--max-clock-skew", f]);
        }
        cmd.env("LOCK_EXEC_MAX_CLOCK_SKEW", var)
            .args(["--", "sleep", "30"])
            .output()
    };
    let (by_env, by_flag) =
        tokio::join!(run("by-env", None, "2s"), run("by-flag", Some("2s"), "5s"));
    for (key, out) in [("by-env", by_env), ("by-flag", by_flag)] {
        assert_eq!(out.code, Some(124), "{key}: {}", out.stderr);
        let records = json_records(&out.stderr);
        let stop = record(
            &records,
            "stopping the command: SIGTERM now, SIGKILL when the grace period ends",
        );
        assert_eq!(stop["reason"], "the hard cap (--expire) was reached");
        let deadline = env.item(key).await.unwrap().deadline_ns.unwrap();
        let before = deadline - timestamp_ns(stop);
        assert!(
            (2050 * MS..=3750 * MS).contains(&before),
            "{key}: SIGTERM {} ms before the deadline, want about 2750",
            before / MS
        );
    }
}

// ---------------------------------------------------------------------------------------
// Log records: formats, the summary, levels.
// ---------------------------------------------------------------------------------------

/// Fails on a field value that looks like a Rust debug string rather than a plain value.
fn assert_plain_values(r: &Record) {
    for (name, v) in r {
        if name == "message" {
            continue;
        }
        if let Value::String(s) = v {
            let debug = [
                "Some(",
                "None",
                "Exited(",
                "Signaled(",
                "Duration",
                "Ok(",
                "Err(",
            ]
            .iter()
            .any(|p| s.starts_with(p))
                || s.starts_with('"')
                || s.starts_with('[')
                || s.starts_with('{');
            assert!(!debug, "field {name} is a debug string: {s:?} in {r:?}");
        }
        assert!(
            !matches!(v, Value::Array(_) | Value::Object(_)),
            "field {name} is not a plain value: {r:?}"
        );
    }
}

/// What a run's summary record should say.
struct Summary<'a> {
    outcome: &'a str,
    key: &'a str,
    owner: &'a str,
    cluster: Option<&'a str>,
    slot: Option<&'a str>,
    /// `Some` when the run took the key.
    fence: Option<u64>,
    /// The command's status, when it ran.
    status: Option<&'a str>,
}

/// Checks the whole log of a run: every record is well-formed JSON with the run's context,
/// and the last one is the summary `run finished` with the exit code the process returned.
fn assert_run_log(out: &Output, want: &Summary) -> Vec<Record> {
    let records = json_records(&out.stderr);
    assert!(!records.is_empty(), "no records");
    for r in &records {
        let t = r["timestamp"].as_str().expect("timestamp");
        assert!(
            humantime::parse_rfc3339(t).is_ok() && t.ends_with('Z'),
            "timestamp {t}"
        );
        let level = r["level"].as_str().expect("level");
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&level),
            "level {level}"
        );
        assert!(
            r["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{r:?}"
        );
        assert_eq!(
            r.get("key").and_then(Value::as_str),
            Some(want.key),
            "{r:?}"
        );
        if let Some(c) = want.cluster {
            assert_eq!(r.get("cluster").and_then(Value::as_str), Some(c), "{r:?}");
        } else {
            assert!(!r.contains_key("cluster"), "{r:?}");
        }
        assert_plain_values(r);
    }
    let last = records.last().unwrap();
    assert_eq!(last["message"], "run finished", "{}", out.stderr);
    assert_eq!(last["level"], "info");
    assert_eq!(last["outcome"], want.outcome, "{}", out.stderr);
    assert_eq!(
        last["exit_code"].as_i64(),
        out.code.map(i64::from),
        "{last:?}"
    );
    assert_eq!(last["owner"], want.owner);
    assert_eq!(last.get("slot").and_then(Value::as_str), want.slot);
    assert_eq!(
        last.get("fence").and_then(Value::as_u64),
        want.fence,
        "{last:?}"
    );
    assert_eq!(
        last.get("status").and_then(Value::as_str),
        want.status,
        "{last:?}"
    );
    for d in ["held", "ran"] {
        let ran = d == "held" && want.fence.is_some() || want.status.is_some();
        match last.get(d) {
            Some(v) => {
                let s = v.as_str().expect("a string");
                assert!(human_duration(s).is_some(), "{d}={s}: not a duration");
                assert!(ran, "{d} without a run: {last:?}");
            }
            None => assert!(!ran, "{d} missing: {last:?}"),
        }
    }
    records
}

/// The `held` or `ran` of a summary.
fn summary_duration(r: &Record, name: &str) -> Duration {
    human_duration(r[name].as_str().unwrap()).unwrap()
}

/// Every outcome ends with the summary `run finished` (or, for an error, an error record)
/// carrying the run's context and plain values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_ends_with_a_summary_record() {
    let env = Env::new(Backend::Dynalite).await;
    let owner = "pod \"a\" b";

    // ran, with a slot.
    let out = env
        .cmd([
            "run",
            "ran",
            "--owner",
            owner,
            "--cluster",
            "east",
            "--slot",
            "7",
            "--",
            "sh",
            "-c",
            "sleep 1.2; exit 3",
        ])
        .output()
        .await;
    let records = assert_run_log(
        &out,
        &Summary {
            outcome: "ran",
            key: "ran",
            owner,
            cluster: Some("east"),
            slot: Some("7"),
            fence: Some(1),
            status: Some("exited 3"),
        },
    );
    let last = records.last().unwrap();
    let ran = summary_duration(last, "ran");
    assert!(
        ran >= Duration::from_millis(1200) && ran <= out.elapsed,
        "ran {ran:?}, whole run {:?}",
        out.elapsed
    );
    assert!(summary_duration(last, "held") >= ran, "{last:?}");
    assert_eq!(out.code, Some(3));

    // skipped and wait-timeout, against a holder in another cluster.
    let _busy = env
        .holder(
            &["run", "busy", "--cluster", "west", "--owner", "other"],
            "sleep 600",
        )
        .await;
    let out = env
        .cmd([
            "run",
            "busy",
            "--owner",
            "me",
            "--cluster",
            "east",
            "--",
            "true",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(0));
    assert_run_log(
        &out,
        &Summary {
            outcome: "skipped",
            key: "busy",
            owner: "me",
            cluster: Some("east"),
            slot: None,
            fence: None,
            status: None,
        },
    );
    let out = env
        .cmd([
            "run", "busy", "--owner", "me", "--wait", "300ms", "--", "true",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(75));
    assert_run_log(
        &out,
        &Summary {
            outcome: "wait-timeout",
            key: "busy",
            owner: "me",
            cluster: None,
            slot: None,
            fence: None,
            status: None,
        },
    );

    // interrupted: SIGTERM while waiting for the key.
    let waiting = env
        .cmd([
            "run",
            "busy",
            "--owner",
            "me",
            "--cluster",
            "east",
            "--wait",
            "60s",
            "--",
            "true",
        ])
        .spawn();
    handlers_installed(waiting.pid()).await;
    waiting.signal(Signal::SIGTERM);
    let out = waiting.wait().await;
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert_run_log(
        &out,
        &Summary {
            outcome: "interrupted",
            key: "busy",
            owner: "me",
            cluster: Some("east"),
            slot: None,
            fence: None,
            status: None,
        },
    );

    // hard-cap.
    let out = env
        .cmd([
            "run",
            "cap",
            "--owner",
            "me",
            "-e",
            "3s",
            "--lease",
            "2s",
            "--heartbeat",
            "300ms",
            "--grace",
            "300ms",
            "--",
            "sleep",
            "30",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(124), "{}", out.stderr);
    assert_run_log(
        &out,
        &Summary {
            outcome: "hard-cap",
            key: "cap",
            owner: "me",
            cluster: None,
            slot: None,
            fence: Some(1),
            status: Some("killed by SIGTERM"),
        },
    );

    // lease-lost: revoked by unlock --force.
    let holder = env
        .holder(
            &[
                "run",
                "lost",
                "--owner",
                "me",
                "--cluster",
                "east",
                "--lease",
                "3s",
            ],
            "exec sleep 600",
        )
        .await;
    let forced = env.cmd(["unlock", "lost", "--force"]).output().await;
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    let out = holder.running.wait().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert_run_log(
        &out,
        &Summary {
            outcome: "lease-lost",
            key: "lost",
            owner: "me",
            cluster: Some("east"),
            slot: None,
            fence: Some(1),
            status: Some("killed by SIGTERM"),
        },
    );

    // ran, ended by a forwarded SIGTERM.
    let holder = env
        .holder(&["run", "term", "--owner", "me"], "exec sleep 600")
        .await;
    holder.running.signal(Signal::SIGTERM);
    let out = holder.running.wait().await;
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    assert_run_log(
        &out,
        &Summary {
            outcome: "ran",
            key: "term",
            owner: "me",
            cluster: None,
            slot: None,
            fence: Some(1),
            status: Some("killed by SIGTERM"),
        },
    );

    // error: one error record, with the run's key and cluster.
    let out = env
        .cmd([
            "run",
            "err",
            "--cluster",
            "east",
            "-t",
            "no-such-table",
            "--",
            "true",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(125));
    let records = json_records(&out.stderr);
    let last = records.last().unwrap();
    assert_eq!(last["level"], "error", "{}", out.stderr);
    assert_eq!(last["outcome"], "error");
    assert_eq!(last["exit_code"], 125);
    assert_eq!(last["key"], "err");
    assert_eq!(last["cluster"], "east");
    assert!(
        last["message"].as_str().unwrap().contains("no-such-table"),
        "{last:?}"
    );
    assert!(with_message(&records, "run finished").is_empty());
}

/// `--log-format text` (and LOCK_EXEC_LOG_FORMAT=text) is logfmt: `time level msg` first,
/// values with spaces or quotes quoted, so an owner such as `pod "a" b` reads back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_records_are_logfmt_that_round_trips() {
    let env = Env::new(Backend::Dynalite).await;
    let owner = "pod \"a\" b=c";
    for (what, flag, var) in [
        ("--log-format text", true, "json"),
        ("LOCK_EXEC_LOG_FORMAT=text", false, "text"),
    ] {
        let key = unique("text key");
        let mut cmd = env.cmd(["run", &key, "--owner", owner, "--cluster", "east 1"]);
        if flag {
            cmd = cmd.args(["--log-format", "text"]);
        }
        let out = cmd
            .env("LOCK_EXEC_LOG_FORMAT", var)
            .args(["--", "sh", "-c", "exit 4"])
            .output()
            .await;
        assert_eq!(out.code, Some(4), "{what}: {}", out.stderr);
        let lines: Vec<Vec<(String, String)>> = out
            .stderr
            .lines()
            .map(|l| logfmt(l).unwrap_or_else(|e| panic!("{what}: not logfmt ({e}): {l}")))
            .collect();
        assert!(lines.len() >= 3, "{what}: {}", out.stderr);
        for pairs in &lines {
            let names: Vec<&str> = pairs.iter().take(3).map(|p| p.0.as_str()).collect();
            assert_eq!(names, ["time", "level", "msg"], "{what}");
            assert!(
                humantime::parse_rfc3339(&pairs[0].1).is_ok(),
                "{}",
                pairs[0].1
            );
            let get = |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.as_str());
            assert_eq!(get("key"), Some(key.as_str()), "{what}: {pairs:?}");
            assert_eq!(get("cluster"), Some("east 1"), "{what}: {pairs:?}");
            assert_eq!(get("owner"), Some(owner), "{what}: {pairs:?}");
        }
        let last = lines.last().unwrap();
        let get = |k: &str| last.iter().find(|p| p.0 == k).map(|p| p.1.as_str());
        assert_eq!(get("msg"), Some("run finished"));
        assert_eq!(get("level"), Some("info"));
        assert_eq!(get("outcome"), Some("ran"));
        assert_eq!(get("exit_code"), Some("4"));
        assert_eq!(get("status"), Some("exited 4"));
        assert_eq!(get("fence"), Some("1"));
        // The raw line quotes the values with spaces.
        let raw = out.stderr.lines().last().unwrap();
        assert!(raw.contains(r#"owner="pod \"a\" b=c""#), "{raw}");
        assert!(raw.contains(r#"status="exited 4""#), "{raw}");
    }
    // An error, and a usage error clap reports, are one logfmt line too.
    for args in [
        vec![
            "--log-format",
            "text",
            "run",
            "k",
            "-t",
            "no-such-table",
            "--",
            "true",
        ],
        vec![
            "--log-format",
            "text",
            "run",
            "k",
            "--tabel",
            "x",
            "--",
            "true",
        ],
    ] {
        let out = env.cmd(&args).output().await;
        assert_eq!(out.code, Some(125), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        let pairs = logfmt(out.stderr.trim_end()).unwrap();
        let get = |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.as_str());
        assert_eq!(get("level"), Some("error"));
        assert_eq!(get("outcome"), Some("error"));
        assert_eq!(get("exit_code"), Some("125"));
    }
}

/// The level comes from LOCK_EXEC_LOG, else RUST_LOG (default info); a bare level such as
/// `debug` shows the renewals and the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_from_lock_exec_log_over_rust_log() {
    let env = Env::new(Backend::Dynalite).await;
    let _busy = env.holder(&["run", "busy"], "sleep 600").await;
    let levels = |stderr: &str| -> BTreeSet<String> {
        json_records(stderr)
            .iter()
            .map(|r| r["level"].as_str().unwrap().to_string())
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    // A run long enough for renewals (lease 2s: every 667 ms).
    let renewing = |vars: &[(&str, &str)]| {
        let mut cmd = env.cmd([
            "run",
            &unique("lvl"),
            "--lease",
            "2s",
            "--",
            "sh",
            "-c",
            "sleep 1.6",
        ]);
        for (k, v) in vars {
            cmd = cmd.env(k, v);
        }
        cmd.output()
    };
    // A wait that runs out logs info and warn records.
    let giving_up = |vars: &[(&str, &str)]| {
        let mut cmd = env.cmd(["run", "busy", "--wait", "200ms", "--", "true"]);
        for (k, v) in vars {
            cmd = cmd.env(k, v);
        }
        cmd.output()
    };

    let out = renewing(&[]).await;
    assert_eq!(
        levels(&out.stderr),
        set(&["info"]),
        "default: {}",
        out.stderr
    );
    for (what, vars) in [
        ("LOCK_EXEC_LOG=debug", vec![("LOCK_EXEC_LOG", "debug")]),
        ("RUST_LOG=debug", vec![("RUST_LOG", "debug")]),
        (
            "LOCK_EXEC_LOG=debug over RUST_LOG=warn",
            vec![("LOCK_EXEC_LOG", "debug"), ("RUST_LOG", "warn")],
        ),
    ] {
        let out = renewing(&vars).await;
        assert_eq!(out.code, Some(0), "{what}: {}", out.stderr);
        let records = json_records(&out.stderr);
        assert!(
            !with_message(&records, "lease renewed").is_empty(),
            "{what}: no renewal records: {}",
            out.stderr
        );
        let line = record(&records, "command line");
        assert_eq!(line["level"], "debug");
        assert_eq!(line["argv"], "sh -c 'sleep 1.6'", "{what}");
        assert!(!with_message(&records, "run finished").is_empty(), "{what}");
    }

    let out = giving_up(&[]).await;
    assert_eq!(
        levels(&out.stderr),
        set(&["info", "warn"]),
        "{}",
        out.stderr
    );
    for (what, vars) in [
        ("RUST_LOG=warn", vec![("RUST_LOG", "warn")]),
        (
            "LOCK_EXEC_LOG=warn over RUST_LOG=debug",
            vec![("LOCK_EXEC_LOG", "warn"), ("RUST_LOG", "debug")],
        ),
    ] {
        let out = giving_up(&vars).await;
        assert_eq!(out.code, Some(75), "{what}: {}", out.stderr);
        assert_eq!(
            levels(&out.stderr),
            set(&["warn"]),
            "{what}: {}",
            out.stderr
        );
        let records = json_records(&out.stderr);
        record(
            &records,
            "gave up waiting for the key; not running the command",
        );
    }
}

// ---------------------------------------------------------------------------------------
// Defaults.
// ---------------------------------------------------------------------------------------

/// The host name, as lock-exec's default owner.
fn host_name() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// Without options: table `lock-exec`, owner the host name, lease 30s, hard cap 24h, `ttl`
/// a day after the deadline, grace 10s, locked exit code 0, wait exit code 75.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_table_owner_lease_expire_grace_and_exit_codes() {
    let server = Server::start(Backend::Dynalite);
    let url = server.endpoint();
    let bare = || LockExec::new(&url, "unused").env_remove("LOCK_EXEC_TABLE");
    let out = bare().arg("create-table").output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let raw = client(&url);
    let tables = raw.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), ["lock-exec"]);

    let dir = TempDir::new();
    let pidfile = dir.file("pid");
    let ownerfile = dir.file("owner");
    let holder = bare()
        .args(["run", "d", "--", "sh", "-c"])
        .arg(format!(
            "echo \"$LOCK_EXEC_OWNER\" > {}; echo $$ > {}; sleep 600",
            ownerfile.display(),
            pidfile.display()
        ))
        .spawn();
    wait_for("the command", Duration::from_secs(20), || {
        read_num(&pidfile).is_some()
    })
    .await;
    let item = raw
        .get_item()
        .table_name("lock-exec")
        .key("key", AttributeValue::S("d".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = Item::from_raw(item.item().expect("the item is in table lock-exec"));
    let host = host_name();
    assert_eq!(item.owner.as_deref(), Some(host.as_str()));
    assert_eq!(
        std::fs::read_to_string(&ownerfile).unwrap().trim_end(),
        host
    );
    let acquired = item.acquired_ns.unwrap();
    let lease = item.expire_ns.unwrap() - acquired;
    assert!((lease - 30 * S).abs() <= MS, "lease {lease} ns");
    let expire = item.deadline_ns.unwrap() - acquired;
    assert!((expire - 86_400 * S).abs() <= MS, "expire {expire} ns");
    assert_eq!(item.ttl_s, Some(item.deadline_ns.unwrap() / S + 86_400));
    assert_eq!(item.cluster, None);

    // Skipped: exit 0; a wait that runs out: 75.
    let out = bare().args(["run", "d", "--", "true"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(summary_of(&out)["outcome"], "skipped");
    let out = bare()
        .args(["run", "d", "--wait", "300ms", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    assert_eq!(summary_of(&out)["outcome"], "wait-timeout");
    let out = bare().args(["status", "d"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("held by owner {host}")),
        "{}",
        out.stdout
    );

    // Grace: 10s with the default lease.
    holder.signal(Signal::SIGTERM);
    let out = holder.wait().await;
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    let records = json_records(&out.stderr);
    let fwd = record(
        &records,
        "forwarded shutdown signal; keeping the lease until the command exits, SIGKILL after the grace period",
    );
    assert_eq!(fwd["grace"], "10s");
    let acquired_rec = record(&records, "lock acquired");
    assert_eq!(acquired_rec["lease"], "30s");
}

/// The summary record of a run.
fn summary_of(out: &Output) -> Record {
    let records = json_records(&out.stderr);
    let last = records.last().cloned().expect("records");
    assert_eq!(last["message"], "run finished", "{}", out.stderr);
    last
}

/// `--wait` gives up when it runs out: exit 75, a record saying so, for how long and who
/// holds the key, and the command never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_gives_up_on_time_and_names_the_holder() {
    let env = Env::new(Backend::Dynalite).await;
    let _holder = env
        .holder(
            &["run", "k", "--owner", "pod-holder", "--cluster", "west"],
            "sleep 600",
        )
        .await;
    let marker = env.dir.file("ran");
    let out = env
        .cmd(["run", "k", "--owner", "pod-waiter", "--wait", "2s", "--"])
        .args(["touch", marker.to_str().unwrap()])
        .output()
        .await;
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    assert!(!marker.exists(), "the command ran");
    assert!(
        out.elapsed >= Duration::from_millis(1900) && out.elapsed < Duration::from_secs(12),
        "gave up after {:?}",
        out.elapsed
    );
    let records = json_records(&out.stderr);
    let gave_up = record(
        &records,
        "gave up waiting for the key; not running the command",
    );
    assert_eq!(gave_up["level"], "warn");
    assert_eq!(gave_up["waited"], "2s");
    let holder = gave_up["holder"].as_str().unwrap();
    assert!(
        holder.contains("owner pod-holder") && holder.contains("cluster west"),
        "{holder}"
    );
    let last = records.last().unwrap();
    assert_eq!(last["outcome"], "wait-timeout");
    assert_eq!(last["exit_code"], 75);
    assert_eq!(
        env.item("k").await.unwrap().owner.as_deref(),
        Some("pod-holder")
    );
}

// ---------------------------------------------------------------------------------------
// unlock, status, list.
// ---------------------------------------------------------------------------------------

/// Unix ns of an RFC 3339 time printed by `status`/`list`.
fn rfc3339_ns(v: &Value) -> Option<i64> {
    let t = humantime::parse_rfc3339(v.as_str()?).ok()?;
    Some(t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64)
}

/// The fields of `status --output json` and of every `list --output json` element.
const STATUS_FIELDS: [&str; 18] = [
    "key",
    "state",
    "held",
    "owner",
    "cluster",
    "fence",
    "run",
    "slot",
    "acquired_at",
    "expires_at",
    "deadline",
    "released_at",
    "revoked_at",
    "done_slot",
    "done_by",
    "done_cluster",
    "done_at",
    "malformed",
];

/// A `status -o json` object says what the item (read independently) holds.
fn assert_status_matches(s: &Value, key: &str, item: Option<&Item>) {
    let fields: BTreeSet<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, STATUS_FIELDS.into_iter().collect(), "{s}");
    assert_eq!(s["key"], key);
    assert_eq!(s["malformed"], Value::Null, "{s}");
    let empty = Item::default();
    let item = item.unwrap_or(&empty);
    let held = item.is_held(now_ns());
    assert_eq!(s["held"], held, "{s}");
    let opt_s = |v: &Option<String>| v.clone().map(Value::from).unwrap_or(Value::Null);
    let opt_n = |v: Option<i64>| v.map(Value::from).unwrap_or(Value::Null);
    assert_eq!(s["owner"], opt_s(&item.owner), "{s}");
    assert_eq!(s["cluster"], opt_s(&item.cluster), "{s}");
    assert_eq!(s["run"], opt_s(&item.run), "{s}");
    assert_eq!(s["fence"], opt_n(item.fence), "{s}");
    assert_eq!(s["slot"], opt_n(item.slot), "{s}");
    assert_eq!(s["done_slot"], opt_n(item.done_slot), "{s}");
    assert_eq!(s["done_by"], opt_s(&item.done_by), "{s}");
    assert_eq!(s["done_cluster"], opt_s(&item.done_cluster), "{s}");
    for (field, t) in [
        ("acquired_at", item.acquired_ns),
        ("expires_at", item.expire_ns),
        ("deadline", item.deadline_ns),
        ("released_at", item.released_ns),
        ("revoked_at", item.revoked_ns),
        ("done_at", item.done_at_ns),
    ] {
        match t {
            None => assert_eq!(s[field], Value::Null, "{field}: {s}"),
            Some(t) => {
                let printed = rfc3339_ns(&s[field]).unwrap_or_else(|| panic!("{field}: {s}"));
                assert!((printed - t).abs() < MS, "{field}: {} vs {t}", s[field]);
            }
        }
    }
}

/// `status KEY -o json`, parsed.
async fn status_json(env: &Env, key: &str) -> Value {
    let out = env.cmd(["status", key, "-o", "json"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

async fn unlock_of_never_locked_lapsed_and_released_keys_changes_nothing(b: Backend) {
    let env = Env::new(b).await;
    let messages = |out: &Output| -> Vec<String> {
        json_records(&out.stderr)
            .iter()
            .map(|r| r["message"].as_str().unwrap().to_string())
            .collect()
    };

    let out = env.cmd(["unlock", "never"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(messages(&out), ["key was not locked"]);
    assert_eq!(env.raw_item("never").await, None, "unlock created an item");

    // Released: a finished run's item.
    let out = env.cmd(["run", "released", "--", "true"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let before = env.raw_item("released").await.unwrap();
    let out = env.cmd(["unlock", "released"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        messages(&out),
        ["key was already free (its lease had lapsed)"]
    );
    assert_eq!(env.raw_item("released").await.unwrap(), before);

    // Lapsed: the holder died without releasing (SIGKILL), its lease ran out.
    let holder = env
        .holder(&["run", "lapsed", "--lease", "1s"], "exec sleep 600")
        .await;
    holder.running.signal(Signal::SIGKILL);
    let _ = holder.running.wait().await;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder.child), Signal::SIGKILL);
    let before = env.raw_item("lapsed").await.unwrap();
    let lapsed = Item::from_raw(&before);
    assert!(
        lapsed.run.is_some() && lapsed.released_ns.is_none(),
        "{lapsed:?}"
    );
    let lease_end = lapsed.expire_ns.unwrap();
    wait_for("the lease to lapse", Duration::from_secs(10), || {
        now_ns() > lease_end + 50 * MS
    })
    .await;
    let out = env.cmd(["unlock", "lapsed"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        messages(&out),
        ["key was already free (its lease had lapsed)"]
    );
    assert_eq!(
        env.raw_item("lapsed").await.unwrap(),
        before,
        "unlock wrote"
    );
    // The next run takes it.
    let out = env
        .cmd(["run", "lapsed", "--", "sh", "-c", "echo $LOCK_EXEC_FENCE"])
        .output()
        .await;
    assert_eq!(out.stdout, "2\n", "{}", out.stderr);
}

async fn status_describes_free_held_and_finished_keys(b: Backend) {
    let env = Env::new(b).await;
    // Never locked.
    let out = env.cmd(["status", "free key"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "free key: free (never locked, or its item expired)\n"
    );
    let s = status_json(&env, "free key").await;
    assert_status_matches(&s, "free key", None);
    assert_eq!(s["state"], "free");

    // Held, with a slot.
    let gate = Gate::new(env.dir.path());
    let running = env
        .cmd([
            "run",
            "s",
            "--owner",
            "pod-s",
            "--cluster",
            "east",
            "--slot",
            "42",
            "-e",
            "2h",
            "--",
        ])
        .args(gate.argv(0))
        .spawn();
    wait_for("the command", Duration::from_secs(20), || {
        gate.started.exists()
    })
    .await;
    let out = env.cmd(["status", "s"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("s: held by owner pod-s, cluster east, fence 1, slot 42, acquired "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("hard cap 20"), "{}", out.stdout);
    let s = status_json(&env, "s").await;
    let item = env.item("s").await.unwrap();
    assert_status_matches(&s, "s", Some(&item));
    assert_eq!(s["state"], "held");
    assert!(s["run"].is_string(), "{s}");

    // Finished: released, slot done.
    gate.open();
    let out = running.wait().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = env.cmd(["status", "s"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("s: free (last owner pod-s, cluster east, fence 1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("; slot 42 done by pod-s in cluster east"),
        "{}",
        out.stdout
    );
    let s = status_json(&env, "s").await;
    let item = env.item("s").await.unwrap();
    assert_status_matches(&s, "s", Some(&item));
    assert_eq!(s["state"], "free");
    assert_eq!(s["done_slot"], 42);
    assert!(
        s["released_at"].is_string() && s["done_at"].is_string(),
        "{s}"
    );
    assert_eq!(s["run"], Value::Null);
}

async fn min_hold_and_go_tool_locks_in_status_and_unlock(b: Backend) {
    let env = Env::new(b).await;
    let messages = |out: &Output| -> String {
        json_records(&out.stderr)
            .iter()
            .map(|r| r["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Kept by --min-hold after its command ended.
    let out = env
        .cmd([
            "run",
            "mh",
            "--owner",
            "pod-m",
            "--min-hold",
            "60s",
            "--",
            "true",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = env.cmd(["status", "mh"]).output().await;
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.starts_with(
            "mh: held by --min-hold after the command ended (no command runs): owner pod-m"
        ),
        "{}",
        out.stdout
    );
    let s = status_json(&env, "mh").await;
    assert_eq!(
        (s["state"].as_str(), s["held"].as_bool()),
        (Some("min-hold"), Some(true))
    );
    let before = env.raw_item("mh").await.unwrap();
    let out = env.cmd(["unlock", "mh"]).output().await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        messages(&out)
            .contains("it is kept by --min-hold after its command ended; --force frees it now"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.raw_item("mh").await.unwrap(),
        before,
        "refused unlock wrote"
    );
    let forced_at = now_ns();
    let out = env.cmd(["unlock", "mh", "--force"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        messages(&out).contains("freed a key kept by --min-hold (no command was running)"),
        "{}",
        out.stderr
    );
    let expire = env.item("mh").await.unwrap().expire_ns.unwrap();
    assert!(
        expire >= forced_at - S && expire <= now_ns(),
        "lease end {} ms from the unlock",
        (expire - forced_at) / MS
    );
    let out = env
        .cmd(["run", "mh", "--locked-exit-code", "9", "--", "true"])
        .output()
        .await;
    assert_eq!(
        out.code,
        Some(0),
        "not free after unlock --force: {}",
        out.stderr
    );

    // The Go tool's lock: {key, expire} only.
    env.put_go_item("go", now_ns() + 3600 * S).await;
    let out = env.cmd(["status", "go"]).output().await;
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.starts_with(
            "go: held by a lock without owner (written by the original Go tool or by hand)"
        ),
        "{}",
        out.stdout
    );
    let s = status_json(&env, "go").await;
    assert_eq!(s["state"], "held-foreign");
    assert_status_matches(&s, "go", env.item("go").await.as_ref());
    let before = env.raw_item("go").await.unwrap();
    let out = env.cmd(["unlock", "go"]).output().await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let m = messages(&out);
    assert!(
        m.contains("the original Go tool's?")
            && m.contains("cannot stop a command that tool runs")
            && !m.contains("stops its command"),
        "{m}"
    );
    assert_eq!(env.raw_item("go").await.unwrap(), before);
    let forced_at = now_ns();
    let out = env.cmd(["unlock", "go", "--force"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        messages(&out).contains("a command that tool still runs is NOT stopped"),
        "{}",
        out.stderr
    );
    let expire = env.item("go").await.unwrap().expire_ns.unwrap();
    assert!(expire >= forced_at - S && expire <= now_ns());
    let out = env
        .cmd(["run", "go", "--", "sh", "-c", "echo $LOCK_EXEC_FENCE"])
        .output()
        .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "1\n"),
        "{}",
        out.stderr
    );
}

/// Writes `n` padded items (about 1 KB each) with batch writes, so a Scan needs pages.
async fn bulk_items(env: &Env, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    let keys: Vec<String> = (0..n).map(|i| format!("bulk/{i:04}")).collect();
    for chunk in keys.chunks(n.div_ceil(4)) {
        let client = env.client();
        let table = env.table.clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
            for batch in chunk.chunks(25) {
                let mut requests: Vec<WriteRequest> = batch
                    .iter()
                    .map(|k| {
                        let item = HashMap::from([
                            ("key".to_string(), AttributeValue::S(k.clone())),
                            ("owner".to_string(), AttributeValue::S("bulk-owner".into())),
                            ("fence".to_string(), AttributeValue::N("1".into())),
                            ("expire".to_string(), AttributeValue::N("1000".into())),
                            ("pad".to_string(), AttributeValue::S("x".repeat(1000))),
                        ]);
                        WriteRequest::builder()
                            .put_request(
                                PutRequest::builder().set_item(Some(item)).build().unwrap(),
                            )
                            .build()
                    })
                    .collect();
                for _ in 0..20 {
                    let out = client
                        .batch_write_item()
                        .request_items(&table, requests)
                        .send()
                        .await
                        .unwrap();
                    requests = out
                        .unprocessed_items()
                        .and_then(|u| u.get(&table))
                        .cloned()
                        .unwrap_or_default();
                    if requests.is_empty() {
                        break;
                    }
                }
                assert!(requests.is_empty(), "unprocessed items left");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

async fn list_pages_through_the_whole_table(b: Backend) {
    let env = Env::new(b).await;
    const N: usize = 1300;
    bulk_items(&env, N).await;
    // The table really is more than one Scan page.
    let page = env
        .client()
        .scan()
        .table_name(&env.table)
        .send()
        .await
        .unwrap();
    assert!(
        page.last_evaluated_key().is_some() && page.items().len() < N,
        "one page held all {} items",
        page.items().len()
    );

    let _held = env
        .holder(
            &[
                "run",
                "jobs/held",
                "--owner",
                "pod-h",
                "--cluster",
                "east",
                "--lease",
                "120s",
            ],
            "sleep 600",
        )
        .await;
    let out = env
        .cmd(["run", "jobs/free", "--slot", "9", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    env.put_go_item("jobs/go", now_ns() + 3600 * S).await;

    let out = env.cmd(["list", "--output", "json"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let all: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let keys: Vec<&str> = all.iter().map(|o| o["key"].as_str().unwrap()).collect();
    let mut want: Vec<String> = (0..N).map(|i| format!("bulk/{i:04}")).collect();
    want.extend(["jobs/free", "jobs/go", "jobs/held"].map(String::from));
    want.sort();
    assert_eq!(keys.len(), want.len(), "list missed or repeated keys");
    assert_eq!(keys, want, "keys not all there, once, in order");
    for o in &all {
        let fields: BTreeSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, STATUS_FIELDS.into_iter().collect(), "{o}");
    }
    // Each element is what `status -o json` prints for its key.
    for key in [
        "jobs/held",
        "jobs/free",
        "jobs/go",
        "bulk/0000",
        "bulk/1299",
    ] {
        let listed = all.iter().find(|o| o["key"] == key).unwrap();
        assert_eq!(listed, &status_json(&env, key).await, "{key}");
    }
    let held = all.iter().find(|o| o["key"] == "jobs/held").unwrap();
    assert_status_matches(held, "jobs/held", env.item("jobs/held").await.as_ref());

    // --prefix, across pages.
    let out = env
        .cmd(["list", "--prefix", "bulk/01", "-o", "json"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let some: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let keys: Vec<String> = some
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (100..200).map(|i| format!("bulk/{i:04}")).collect();
    assert_eq!(keys, want);
    let out = env
        .cmd(["list", "--prefix", "nothing/", "-o", "json"])
        .output()
        .await;
    assert_eq!(out.stdout.trim(), "[]");

    // Text: a header and one row per key, in columns.
    let out = env.cmd(["list", "--prefix", "jobs/"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    let header = lines[0];
    let columns = [
        "KEY",
        "STATE",
        "OWNER",
        "CLUSTER",
        "FENCE",
        "LEASE END",
        "DONE SLOT",
    ];
    let starts: Vec<usize> = columns
        .iter()
        .map(|c| {
            header
                .find(c)
                .unwrap_or_else(|| panic!("no {c} in {header}"))
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{header}");
    let row = |key: &str| -> Vec<String> {
        let line = lines[1..]
            .iter()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no row for {key}: {}", out.stdout));
        (0..columns.len())
            .map(|i| {
                let end = starts
                    .get(i + 1)
                    .copied()
                    .unwrap_or(line.len())
                    .min(line.len());
                line[starts[i].min(line.len())..end].trim().to_string()
            })
            .collect()
    };
    let h = row("jobs/held");
    assert_eq!(
        &h[..5],
        ["jobs/held", "held", "pod-h", "east", "1"],
        "{h:?}"
    );
    assert!(humantime::parse_rfc3339(&h[5]).is_ok(), "{h:?}");
    assert_eq!(h[6], "-");
    let f = row("jobs/free");
    assert_eq!(&f[1..5], ["free", &host_name(), "-", "1"], "{f:?}");
    assert_eq!(f[6], "9");
    let g = row("jobs/go");
    assert_eq!(&g[1..5], ["held-foreign", "-", "-", "-"], "{g:?}");
}

// ---------------------------------------------------------------------------------------
// Help, version, usage errors.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_version_and_one_line_usage_errors() {
    let url = dead_endpoint();
    let cmd = |args: &[&str]| LockExec::new(&url, "t").args(args).output();
    // Every case is checked, and every failure reported at the end.
    let mut failures: Vec<String> = Vec::new();
    let mut check = |what: &[&str], ok: bool, why: String| {
        if !ok {
            failures.push(format!("{what:?}: {why}"));
        }
    };
    let subs = [
        "run",
        "unlock",
        "status",
        "list",
        "create-table",
        "install",
        "version",
    ];
    for sub in subs {
        for args in [vec![sub, "--help"], vec!["help", sub]] {
            let out = cmd(&args).await;
            let usage = format!("Usage: lock-exec {sub}");
            check(
                &args,
                out.code == Some(0) && out.stdout.contains(&usage) && out.stderr.is_empty(),
                format!(
                    "exit {:?}, stdout {:?}, stderr {:?}",
                    out.code, out.stdout, out.stderr
                ),
            );
        }
    }
    for args in [vec!["--help"], vec!["help"], vec!["help", "--help"]] {
        let out = cmd(&args).await;
        check(
            &args,
            out.code == Some(0) && out.stdout.contains("Usage: lock-exec") && out.stderr.is_empty(),
            format!(
                "exit {:?}, stdout {:?}, stderr {:?}",
                out.code, out.stdout, out.stderr
            ),
        );
    }
    let version = format!("lock-exec {}\n", env!("CARGO_PKG_VERSION"));
    for args in [vec!["version"], vec!["--version"], vec!["-V"]] {
        let out = cmd(&args).await;
        check(
            &args,
            out.code == Some(0) && out.stdout == version,
            format!("exit {:?}, stdout {:?}", out.code, out.stdout),
        );
    }

    let errors: [(&[&str], &str); 6] = [
        (
            &["run", "k", "--tabel", "t", "--", "true"],
            "(did you mean --table?)",
        ),
        (&["--tabel", "t", "status", "k"], "(did you mean --table?)"),
        (
            &["run", "k", "ls", "-la"],
            "after --: lock-exec run KEY -- ls -la",
        ),
        (
            &["run", "k", "-e", "-5s", "--", "true"],
            "durations cannot be negative",
        ),
        (
            &["run", "k", "--expire", "-5s", "--", "true"],
            "durations cannot be negative",
        ),
        (
            &["run", "k", "--lease", "-5s", "--", "true"],
            "durations cannot be negative",
        ),
    ];
    for (args, expect) in errors {
        let out = cmd(args).await;
        let lines: Vec<&str> = out.stderr.lines().collect();
        let record: Option<Value> = match lines[..] {
            [line] => serde_json::from_str(line).ok(),
            _ => None,
        };
        let ok = out.code == Some(125)
            && out.stdout.is_empty()
            && record.as_ref().is_some_and(|r| {
                r["level"] == "error"
                    && r["exit_code"] == 125
                    && r["message"].as_str().is_some_and(|m| m.contains(expect))
            });
        check(
            args,
            ok,
            format!(
                "want exit 125 and one error line with '{expect}'; got exit {:?}, stderr {:?}",
                out.code, out.stderr
            ),
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------
// create-table, install.
// ---------------------------------------------------------------------------------------

async fn create_table_sets_billing_key_schema_and_ttl(b: Backend) {
    use aws_sdk_dynamodb::types::{BillingMode, KeyType, ScalarAttributeType, TimeToLiveStatus};
    let server = Server::start(b);
    let url = server.endpoint();
    let out = LockExec::new(&url, "fresh")
        .arg("create-table")
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let records = json_records(&out.stderr);
    record(&records, "table created");
    let warnings = |records: &[Record]| -> Vec<String> {
        records
            .iter()
            .filter(|r| r["level"] == "warn")
            .map(|r| r["message"].as_str().unwrap().to_string())
            .collect()
    };
    let raw = client(&url);
    let desc = raw
        .describe_table()
        .table_name("fresh")
        .send()
        .await
        .unwrap();
    let t = desc.table().unwrap();
    assert_eq!(
        t.billing_mode_summary().and_then(|s| s.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    let schema: Vec<(&str, &KeyType)> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type()))
        .collect();
    assert_eq!(schema, [("key", &KeyType::Hash)]);
    let attrs: Vec<(&str, &ScalarAttributeType)> = t
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name(), a.attribute_type()))
        .collect();
    assert_eq!(attrs, [("key", &ScalarAttributeType::S)]);

    match b {
        Backend::Moto => {
            // moto has the TTL API: TTL is on, on `ttl`.
            assert_eq!(warnings(&records), Vec::<String>::new());
            record(&records, "TTL enabled");
            let ttl = raw
                .describe_time_to_live()
                .table_name("fresh")
                .send()
                .await
                .unwrap();
            let d = ttl.time_to_live_description().unwrap();
            assert_eq!(d.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
            assert_eq!(d.attribute_name(), Some("ttl"));
        }
        Backend::Dynalite => {
            // dynalite has none: one warning, and success.
            let w = warnings(&records);
            assert_eq!(w.len(), 1, "{}", out.stderr);
            assert!(w[0].contains("no TTL API"), "{w:?}");
        }
    }
    // Again: fine, the same way.
    let out = LockExec::new(&url, "fresh")
        .arg("create-table")
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let again = json_records(&out.stderr);
    record(&again, "table already exists");
    assert_eq!(
        warnings(&again).len(),
        usize::from(b == Backend::Dynalite),
        "{}",
        out.stderr
    );

    // The item's ttl: Unix seconds, a day after the deadline.
    let env = Env::with_server(server).await;
    let holder = env.holder(&["run", "k", "-e", "2h"], "sleep 600").await;
    let item = env.item("k").await.unwrap();
    let deadline = item.deadline_ns.unwrap();
    assert_eq!(deadline - item.acquired_ns.unwrap(), 2 * 3600 * S);
    assert_eq!(item.ttl_s, Some(deadline / S + 86_400));
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_copies_the_binary_and_the_ca_bundle() {
    use std::os::unix::fs::PermissionsExt;
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(bundle.is_file(), "this test needs {}", bundle.display());
    let dir = TempDir::new();
    let url = dead_endpoint();
    let out = LockExec::new(&url, "t")
        .arg("install")
        .arg_path(dir.path())
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let copied = dir.file("lock-exec");
    assert!(std::fs::read(&copied).unwrap() == std::fs::read(bin()).unwrap());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&copied), 0o755);
    let ca = dir.file("ca-certificates.crt");
    assert!(
        std::fs::read(&ca).unwrap() == std::fs::read(bundle).unwrap(),
        "the CA bundle differs"
    );
    assert_eq!(mode(&ca), 0o644);
    let names: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ca-certificates.crt", "lock-exec"]
            .map(String::from)
            .into()
    );
    let out = LockExec::program(&copied, &url, "t")
        .arg("version")
        .output()
        .await;
    assert_eq!(
        out.stdout,
        format!("lock-exec {}\n", env!("CARGO_PKG_VERSION"))
    );
}

// ---------------------------------------------------------------------------------------
// Signals and min-hold on the stop paths.
// ---------------------------------------------------------------------------------------

/// Every forwardable signal, in the order sent: the shutdown ones (which start the grace
/// period) last, TSTP right before CONT.
const FORWARDED: [&str; 17] = [
    "USR1", "USR2", "WINCH", "ALRM", "TSTP", "CONT", "URG", "IO", "PWR", "VTALRM", "PROF", "XCPU",
    "XFSZ", "HUP", "INT", "QUIT", "TERM",
];

/// A bash script that records each forwarded signal in DIR/parent, with a background child
/// in its process group that records them in DIR/child. bash, because dash does not let an
/// asynchronous list trap INT or QUIT (they are ignored there on entry). Both end when
/// DIR/done appears; `sleep & wait` so a trap runs at once. bash's reports of the sleeps
/// the signals kill go to DIR/stderr, not into lock-exec's log.
const RECORDER: &str = r#"#!/bin/bash
dir=$1
exec 2>"$dir/stderr"
record() { for s in HUP INT QUIT TERM USR1 USR2 WINCH CONT ALRM TSTP URG IO PWR VTALRM PROF XCPU XFSZ; do trap "echo $s >> $dir/$1" $s; done; }
(
  record child
  touch "$dir/child.ready"
  i=0; until [ -e "$dir/done" ] || [ $i -gt 1200 ]; do sleep 0.05 & wait $!; i=$((i+1)); done
) &
record parent
touch "$dir/parent.ready"
i=0; until [ -e "$dir/done" ] || [ $i -gt 1200 ]; do sleep 0.05 & wait $!; i=$((i+1)); done
wait
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwardable_signal_reaches_the_command_and_its_group() {
    let env = Env::new(Backend::Dynalite).await;
    let dir = TempDir::new();
    let script = dir.file("record.sh");
    std::fs::write(&script, RECORDER).unwrap();
    let running = env
        .cmd([
            "run", "sig", "--lease", "90s", "--grace", "40s", "--", "bash",
        ])
        .arg_path(&script)
        .arg_path(dir.path())
        .timeout(Duration::from_secs(120))
        .spawn();
    wait_for("both recorders", Duration::from_secs(20), || {
        dir.file("parent.ready").exists() && dir.file("child.ready").exists()
    })
    .await;
    let got = |who: &str| -> Vec<String> {
        std::fs::read_to_string(dir.file(who))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    for name in FORWARDED {
        let sig: Signal = format!("SIG{name}").parse().unwrap();
        running.signal(sig);
        let limit = Duration::from_secs(15);
        let deadline = Instant::now() + limit;
        while !(got("parent").iter().any(|s| s == name) && got("child").iter().any(|s| s == name)) {
            assert!(
                Instant::now() < deadline,
                "SIG{name} not forwarded within {limit:?}: parent {:?}, child {:?}",
                got("parent"),
                got("child")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    std::fs::write(dir.file("done"), "").unwrap();
    let out = running.wait().await;
    for who in ["parent", "child"] {
        assert_eq!(got(who), FORWARDED, "{who} got each signal once, in order");
    }
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(summary_of(&out)["outcome"], "ran");
}

/// On the hard cap the release ends the lease at once, not at the end of `--min-hold`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_hold_is_skipped_on_the_hard_cap() {
    let env = Env::new(Backend::Dynalite).await;
    let out = env
        .cmd([
            "run",
            "k",
            "-e",
            "3s",
            "--lease",
            "2s",
            "--heartbeat",
            "300ms",
            "--grace",
            "300ms",
            "--min-hold",
            "3s",
            "--",
            "sleep",
            "30",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(124), "{}", out.stderr);
    assert_eq!(summary_of(&out)["outcome"], "hard-cap");
    let item = env.item("k").await.unwrap();
    let released = item.released_ns.expect("released");
    assert_eq!(
        item.expire_ns,
        Some(released),
        "lease end is not the release"
    );
    let hold_end = item.acquired_ns.unwrap() + 3 * S;
    assert!(released < hold_end, "released after the min-hold end");
    assert!(released <= now_ns());
}

/// After a lease is lost (the store stops answering), the release ends the lease at once,
/// not at the end of `--min-hold`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_hold_is_skipped_on_a_lost_lease() {
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    let termed = env.dir.file("termed");
    let holder = env
        .holder_via(
            &proxy.endpoint(),
            &[
                "run",
                "k",
                "--lease",
                "6s",
                "--grace",
                "2s",
                "--min-hold",
                "60s",
            ],
            &format!(
                "exec 2>/dev/null; trap 'touch {}' TERM; while :; do sleep 0.05; done",
                termed.display()
            ),
        )
        .await;
    proxy.set(Fault::Blackhole);
    // Renewals fail; lock-exec sends SIGTERM 2s before its SIGKILL. Let the release through.
    wait_for(
        "SIGTERM for the lost lease",
        Duration::from_secs(20),
        || termed.exists(),
    )
    .await;
    proxy.set(Fault::Pass);
    let stopped_at = now_ns();
    let out = holder.running.wait().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert_eq!(summary_of(&out)["outcome"], "lease-lost", "{}", out.stderr);
    let item = env.item("k").await.unwrap();
    let released = item
        .released_ns
        .unwrap_or_else(|| panic!("not released: {item:?}\n{}", out.stderr));
    assert_eq!(
        item.expire_ns,
        Some(released),
        "lease end is not the release"
    );
    assert!(released >= stopped_at && released <= now_ns());
    assert!(released < item.acquired_ns.unwrap() + 60 * S - 40 * S);
    let out = env
        .cmd(["run", "k", "--locked-exit-code", "9", "--", "true"])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "the key is not free: {}", out.stderr);
}
