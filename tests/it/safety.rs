//! Mutual exclusion when lock-exec itself, the network or an operator misbehaves: one
//! regression test per way the promise was once broken (issue #9), each with a holder and
//! a waiting contender whose jobs record their own run intervals, checked for overlap.

use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::both;
use crate::harness::*;

both!(
    killed_lock_exec_takes_its_command_and_the_commands_group_along,
    ambiguous_acquire_under_wait_keeps_the_stored_lease_end,
    late_renewal_cannot_shorten_the_stored_lease,
    late_acquire_answer_never_starts_a_command_past_its_lease,
    force_unlock_frees_the_key_only_when_the_command_is_dead,
    force_unlock_never_hits_a_newer_holder,
    malformed_items_make_run_status_and_unlock_agree,
);

/// Starts `lock-exec run KEY ARGS -- <job NAME>` through `endpoint` and waits until the job
/// runs.
async fn hold(
    env: &Env,
    endpoint: &str,
    jobs: &Jobs,
    name: &str,
    args: &[&str],
    job: (Duration, OnTerm),
) -> Running {
    let running = LockExec::new(endpoint, &env.table)
        .args(args)
        .arg("--")
        .args(jobs.argv(name, job.0, job.1, 0))
        .spawn();
    jobs.wait_started(name).await;
    running
}

/// A contender that waits for KEY and runs a short job.
fn contend(env: &Env, jobs: &Jobs, name: &str, key: &str) -> Running {
    env.cmd(["run", key, "--wait", "60s", "--lease", "3s", "--"])
        .args(jobs.argv(name, Duration::from_millis(200), OnTerm::Die, 0))
        .timeout(Duration::from_secs(90))
        .spawn()
}

/// Both jobs ran, and not at the same time.
fn assert_ran_apart(jobs: &Jobs, first: &str, second: &str) {
    let v = jobs.intervals();
    assert!(
        jobs.started(first) && jobs.started(second),
        "not both ran: {v:#?}"
    );
    assert_no_overlap(&v);
}

/// Issue #9.1: with stderr a closed pipe or a full device, logging must change nothing:
/// the lease is renewed, the command supervised and the key released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_stderr_changes_nothing() {
    let env = Env::new(Backend::Dynalite).await;
    for sink in ["closed pipe", "/dev/full"] {
        let jobs = Jobs::new();
        let key = unique("k");
        let mut cmd = std::process::Command::new(bin());
        cmd.env_clear()
            .envs(LockExec::base_env(&env.endpoint(), &env.table))
            .env("LOCK_EXEC_LOG", "debug")
            .args(["run", &key, "--lease", "2s", "--"])
            .args(jobs.argv("holder", Duration::from_secs(4), OnTerm::Die, 0))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut child = if sink == "/dev/full" {
            cmd.stderr(std::fs::File::create("/dev/full").unwrap())
                .spawn()
                .unwrap()
        } else {
            let mut c = cmd.stderr(Stdio::piped()).spawn().unwrap();
            drop(c.stderr.take()); // closed before lock-exec writes anything
            c
        };
        let guard = KillOnDrop(child.id() as i32);
        jobs.wait_started("holder").await;
        // Past two leases: only renewals keep the key.
        let c = contend(&env, &jobs, "contender", &key);
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        drop(guard);
        assert_eq!(status.code(), Some(0), "{sink}: holder exited {status:?}");
        assert_eq!(c.wait().await.code, Some(0), "{sink}");
        let holder = jobs.interval("holder").unwrap();
        assert!(holder.clean, "{sink}: the job was stopped: {holder:?}");
        assert_ran_apart(&jobs, "holder", "contender");
    }
}

/// A stderr pipe nobody reads (a stalled log shipper) must not freeze lock-exec: log
/// records wait in a queue (or are dropped), renewals and the stop sequence go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stderr_never_freezes_the_lease() {
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    let fifo = env.dir.file("stderr.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Opened for reading (so the write end can open) and never read.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(&fifo)
        .unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // The command fills the pipe first (its own writer blocks, as a leftover).
    let job = jobs.argv("holder", Duration::from_secs(60), OnTerm::Ignore, 0);
    let script = format!("head -c 200000 /dev/zero >&2 & exec {}", job.join(" "));
    let holder = LockExec::new(&proxy.endpoint(), &env.table)
        .env("LOCK_EXEC_LOG", "debug")
        .args(["run", "k", "--lease", "3s", "--", "sh", "-c", &script])
        .stderr(Stdio::from(writer))
        .spawn();
    jobs.wait_started("holder").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(Fault::Blackhole);
    let c = contend(&env, &jobs, "contender", "k");
    let out = holder.wait().await;
    assert_eq!(out.code, Some(125), "the holder did not stop its command");
    assert_eq!(c.wait().await.code, Some(0));
    assert_ran_apart(&jobs, "holder", "contender");
}

/// O_NONBLOCK, to open a FIFO's read end without a writer.
fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

/// Issue #9.2: lock-exec killed while not PID 1 (SIGKILL, OOM): its command dies with it,
/// and so does what the command started in its process group (`sh -c 'job; …'` runs the
/// job as a grandchild), before a contender can take the key.
async fn killed_lock_exec_takes_its_command_and_the_commands_group_along(b: Backend) {
    let env = Env::new(b).await;
    for shape in ["direct", "grandchild"] {
        let jobs = Jobs::new();
        let key = unique("k");
        let job = jobs.argv("holder", Duration::from_secs(60), OnTerm::Ignore, 0);
        let mut cmd =
            LockExec::new(&env.endpoint(), &env.table).args(["run", &key, "--lease", "2s", "--"]);
        cmd = match shape {
            "direct" => cmd.args(&job),
            _ => cmd.args(["sh", "-c", &format!("{}; echo unreachable", job.join(" "))]),
        };
        let holder = cmd.spawn();
        jobs.wait_started("holder").await;
        let c = contend(&env, &jobs, "contender", &key);
        let killed = now_ns();
        holder.signal(Signal::SIGKILL);
        let _ = holder.wait().await;
        assert_eq!(c.wait().await.code, Some(0), "{shape}");
        let job = jobs.interval("holder").unwrap();
        assert!(!job.clean, "{shape}: the job was not killed: {job:?}");
        assert_ran_apart(&jobs, "holder", "contender");
        eprintln!(
            "FIGURE lock-exec SIGKILLed ({shape}, {b:?}): its job's last beat {} ms after the kill; the contender's job started {} ms after the kill",
            (job.end - HEARTBEAT_SLACK_NS - killed) / 1_000_000,
            (jobs.start_of("contender").unwrap() - killed) / 1_000_000
        );
    }
}

/// Issue #9.3: every answer to the first acquire is lost past the request timeout; a later
/// pass of the wait loop recognises the stored item as its own. The holder must time its
/// command by the lease end stored then, not by the one its new request would have written.
async fn ambiguous_acquire_under_wait_keeps_the_stored_lease_end(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    proxy.set(Fault::SwallowResponses);
    let holder = LockExec::new(&proxy.endpoint(), &env.table)
        .args(["run", "k", "--wait", "60s", "--lease", "20s", "--"])
        .args(jobs.argv("holder", Duration::from_secs(60), OnTerm::Ignore, 0))
        .timeout(Duration::from_secs(90))
        .spawn();
    // The acquire was applied at once; the run gives up on its answers after 12 s, and
    // recognises its item on a later pass.
    wait_for("the first acquire", Duration::from_secs(10), || {
        proxy.requests.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    proxy.set(Fault::Pass);
    jobs.wait_started("holder").await;
    // Then the network fails for good: the command must stop by the lease end stored now.
    proxy.set(Fault::Blackhole);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored_end = env.item("k").await.unwrap().expire_ns.unwrap();
    let c = contend(&env, &jobs, "contender", "k");
    let out = holder.wait().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert_eq!(c.wait().await.code, Some(0));
    let job = jobs.interval("holder").unwrap();
    assert_eq!(job.fence, Some(1), "acquired once");
    assert!(
        job.end < stored_end,
        "the job ran {} ms past the stored lease end",
        (job.end - stored_end) / 1_000_000
    );
    eprintln!(
        "FIGURE ambiguous acquire ({b:?}, lease 20s): the job ended {} ms before the stored lease end",
        (stored_end - job.end) / 1_000_000
    );
    assert_ran_apart(&jobs, "holder", "contender");
}

/// An acquire answered after its lease is nearly over (here: 3 s late for a 2 s lease)
/// must not start the command: it is renewed first, or given up.
async fn late_acquire_answer_never_starts_a_command_past_its_lease(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    proxy.set(Fault::DelayResponse(Duration::from_secs(3)));
    let late = LockExec::new(&proxy.endpoint(), &env.table)
        .args(["run", "k", "--lease", "2s", "--"])
        .args(jobs.argv("late", Duration::from_secs(2), OnTerm::Ignore, 0))
        .spawn();
    wait_for("the delayed acquire", Duration::from_secs(10), || {
        proxy.fired() == 1
    })
    .await;
    // The lease it stored lapses after 2 s; a contender takes the key then.
    let c = contend(&env, &jobs, "contender", "k");
    let out = late.wait().await;
    assert_eq!(c.wait().await.code, Some(0));
    // By the time the answer came, the contender held the key: the late run's renewal
    // before the start failed, and its command never started.
    assert!(
        !out.stderr.contains("command started"),
        "started a command past its lease: {}",
        out.stderr
    );
    assert_eq!(out.code, Some(0), "skipped: {}", out.stderr);
    assert_no_overlap(&jobs.intervals());
}

/// Issue #9.4: a renewal that timed out on the client reaches the server after its retry
/// succeeded. It must not move the stored lease end back, and after a network cut the
/// holder must stop its command by an end no later than the stored one.
async fn late_renewal_cannot_shorten_the_stored_lease(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    let holder = hold(
        &env,
        &proxy.endpoint(),
        &jobs,
        "holder",
        &["run", "k", "--lease", "5s"],
        (Duration::from_secs(60), OnTerm::Ignore),
    )
    .await;
    // The next renewal (due 1.67 s after the acquire) is held 2.5 s; the holder gives up on
    // it after 458 ms and retries on a fresh connection.
    proxy.set(Fault::HoldRequest(
        Duration::from_millis(2500),
        Some("UpdateItem"),
    ));
    wait_for("the held renewal", Duration::from_secs(10), || {
        proxy.fired() == 1
    })
    .await;
    let before = env.item("k").await.unwrap().expire_ns.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after = env.item("k").await.unwrap().expire_ns.unwrap();
    assert!(after >= before, "the stored lease end moved back");
    proxy.set(Fault::Blackhole);
    let c = contend(&env, &jobs, "contender", "k");
    let out = holder.wait().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert!(
        out.stderr.contains("retrying"),
        "the renewal was not retried: {}",
        out.stderr
    );
    assert_eq!(c.wait().await.code, Some(0));
    assert_ran_apart(&jobs, "holder", "contender");
}

/// Issue #9.5: `unlock --force` revokes the running holder but frees the key only once its
/// command is dead; a contender starts after that, not at once.
async fn force_unlock_frees_the_key_only_when_the_command_is_dead(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let holder = hold(
        &env,
        &env.endpoint(),
        &jobs,
        "holder",
        &["run", "k", "--lease", "6s"],
        (Duration::from_secs(60), OnTerm::Ignore),
    )
    .await;
    let c = contend(&env, &jobs, "contender", "k");
    let stored_end = env.item("k").await.unwrap().expire_ns.unwrap();
    let out = env.cmd(["unlock", "k", "--force"]).output().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
    let item = env.item("k").await.unwrap();
    assert_eq!(
        item.expire_ns,
        Some(stored_end),
        "revoking keeps the lease end"
    );
    assert!(item.revoked_ns.is_some() && item.run.is_none(), "{item:?}");
    let held = holder.wait().await;
    assert_eq!(held.code, Some(125), "{}", held.stderr);
    assert!(held.stderr.contains("lease lost"), "{}", held.stderr);
    assert_eq!(c.wait().await.code, Some(0));
    assert_ran_apart(&jobs, "holder", "contender");
    // The holder freed the key as soon as its command was dead, before the lease end.
    let contender = jobs.interval("contender").unwrap();
    assert!(
        contender.start < stored_end,
        "the key stayed locked until the revoked lease's end"
    );
    eprintln!(
        "FIGURE unlock --force ({b:?}, lease 6s, job ignores SIGTERM): the holder's job ended {} ms after the revocation; the contender's job started {} ms after that, {} ms before the revoked lease's end",
        (jobs.interval("holder").unwrap().end - item.revoked_ns.unwrap()) / 1_000_000,
        (contender.start - jobs.interval("holder").unwrap().end) / 1_000_000,
        (stored_end - contender.start) / 1_000_000
    );
}

/// Issue #9.5: the forced write is conditioned on the run and fence `unlock` read: when a
/// new holder takes the key in between, nothing is written and `unlock` says so.
async fn force_unlock_never_hits_a_newer_holder(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    let first = hold(
        &env,
        &env.endpoint(),
        &jobs,
        "first",
        &["run", "k"],
        (Duration::from_millis(1500), OnTerm::Die),
    )
    .await;
    // unlock reads the first holder; its write is held until a second holder runs.
    proxy.set(Fault::HoldRequest(
        Duration::from_secs(4),
        Some("UpdateItem"),
    ));
    let unlock = LockExec::new(&proxy.endpoint(), &env.table)
        .args(["unlock", "k", "--force"])
        .spawn();
    assert_eq!(first.wait().await.code, Some(0));
    let second = hold(
        &env,
        &env.endpoint(),
        &jobs,
        "second",
        &["run", "k"],
        (Duration::from_secs(5), OnTerm::Die),
    )
    .await;
    let out = unlock.wait().await;
    assert_eq!(proxy.fired(), 1, "the write was not held");
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("changed"), "{}", out.stderr);
    let item = env.item("k").await.unwrap();
    assert_eq!(item.fence, Some(2));
    assert!(item.run.is_some() && item.revoked_ns.is_none(), "{item:?}");
    assert_eq!(second.wait().await.code, Some(0));
    assert_no_overlap(&jobs.intervals());
}

/// A malformed-item case: what, its attributes, and the state all three commands see.
type Case = (
    &'static str,
    Vec<(&'static str, aws_sdk_dynamodb::types::AttributeValue)>,
    &'static str,
);

/// Issue #9.7: malformed items. `run`, `status` and `unlock` agree on each; `unlock
/// --force` repairs it; the fence a command gets is at least 1 and grows.
async fn malformed_items_make_run_status_and_unlock_agree(b: Backend) {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let env = Env::new(b).await;
    let far = (now_ns() + 3_600_000_000_000).to_string();
    let cases: Vec<Case> = vec![
        // A string lease end is no lease: free for all three, taken over by run.
        (
            "expire of type S",
            vec![("expire", S(far.clone())), ("fence", N("4".into()))],
            "free",
        ),
        // A lease end beyond i64 is a lease to the far future: held for all three.
        (
            "expire beyond i64",
            vec![("expire", N("1e30".into())), ("fence", N("4".into()))],
            "held",
        ),
        // A negative fence cannot give a token: malformed for all three.
        (
            "negative fence",
            vec![("fence", N("-5".into()))],
            "malformed",
        ),
        (
            "fence of type S",
            vec![("fence", S("7".into()))],
            "malformed",
        ),
        (
            "fence of 2^53",
            vec![("fence", N("9007199254740992".into()))],
            "malformed",
        ),
        (
            "run of type BOOL under a far lease",
            vec![
                ("run", aws_sdk_dynamodb::types::AttributeValue::Bool(true)),
                ("expire", N("1e30".into())),
                ("fence", N("3".into())),
            ],
            "held",
        ),
    ];
    for (what, attrs, state) in cases {
        let key = unique("m");
        let mut item = std::collections::HashMap::from([("key".to_string(), S(key.clone()))]);
        item.extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
        env.put_raw(item).await;
        let status = env.cmd(["status", &key, "-o", "json"]).output().await;
        assert_eq!(status.code, Some(0), "{what}: {}", status.stderr);
        let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        let run = env
            .cmd([
                "run",
                &key,
                "--locked-exit-code",
                "9",
                "--",
                "sh",
                "-c",
                "echo $LOCK_EXEC_FENCE",
            ])
            .output()
            .await;
        match state {
            "free" => {
                assert_eq!(s["state"], "free", "{what}: {s}");
                assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
                assert_eq!(run.stdout, "5\n", "{what}");
            }
            "held" => {
                assert_eq!(s["held"], true, "{what}: {s}");
                assert_eq!(run.code, Some(9), "{what}: {}", run.stderr);
                let plain = env.cmd(["unlock", &key]).output().await;
                assert_eq!(plain.code, Some(1), "{what}: {}", plain.stderr);
            }
            _ => {
                assert!(s["malformed"].is_string(), "{what}: {s}");
                assert_eq!(run.code, Some(125), "{what}: {}", run.stderr);
                assert!(
                    run.stderr.contains("malformed") && run.stderr.contains("unlock --force"),
                    "{what}: {}",
                    run.stderr
                );
                let plain = env.cmd(["unlock", &key]).output().await;
                assert_eq!(plain.code, Some(1), "{what}: {}", plain.stderr);
                assert!(
                    plain.stderr.contains("malformed"),
                    "{what}: {}",
                    plain.stderr
                );
            }
        }
        if state != "free" {
            let forced = env.cmd(["unlock", &key, "--force"]).output().await;
            assert_eq!(forced.code, Some(0), "{what}: {}", forced.stderr);
            let mut fences = Vec::new();
            for _ in 0..2 {
                let out = env
                    .cmd(["run", &key, "--", "sh", "-c", "echo $LOCK_EXEC_FENCE"])
                    .output()
                    .await;
                assert_eq!(out.code, Some(0), "{what} after repair: {}", out.stderr);
                fences.push(out.stdout.trim().parse::<u64>().unwrap());
            }
            assert!(
                fences[0] >= 1 && fences[1] > fences[0],
                "{what}: {fences:?}"
            );
        }
    }
}

/// Issue #9.6: a descendant adopted only after the SIGKILL wave (its parent ignored
/// SIGTERM, and it left the group with setsid) is stopped before the key is released, and
/// lock-exec does not hang on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_adopted_leftover_is_stopped_before_release() {
    let env = Env::new(Backend::Dynalite).await;
    let jobs = Jobs::new();
    let job = jobs.argv("leftover", Duration::from_secs(60), OnTerm::Ignore, 0);
    // The command exits at once, leaving a subshell that ignores SIGTERM; its child left
    // the group (setsid) and is ours only once the subshell is SIGKILLed.
    let started = jobs.dir().join("leftover.start");
    let script = format!(
        "(trap '' TERM; setsid {} & sleep 60) & while [ ! -e {} ]; do sleep 0.02; done; exit 0",
        job.join(" "),
        started.display()
    );
    let holder = env
        .cmd(["run", "k", "--grace", "1s", "--", "sh", "-c", &script])
        .spawn();
    jobs.wait_started("leftover").await;
    let c = contend(&env, &jobs, "contender", "k");
    let out = holder.wait().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(20),
        "hung: {:?}",
        out.elapsed
    );
    assert_eq!(c.wait().await.code, Some(0));
    assert!(!jobs.interval("leftover").unwrap().clean);
    assert_ran_apart(&jobs, "leftover", "contender");
}

/// Issue #9.9: the wall clock jumps (a suspend or a step) while the command runs: the
/// lease end is no longer certain, so the command is stopped and lock-exec exits 125.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_jump_stops_the_command() {
    let env = Env::new(Backend::Dynalite).await;
    let jobs = Jobs::new();
    let offset = env.dir.file("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    // libfaketime reads the offset from the file at every call; only the wall clock moves.
    let holder = env
        .cmd(["run", "k", "--lease", "4s", "--"])
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        // The job itself runs on the real clock.
        .args(["env", "-u", "LD_PRELOAD"])
        .args(jobs.argv("holder", Duration::from_secs(60), OnTerm::Die, 0))
        .spawn();
    jobs.wait_started("holder").await;
    std::fs::write(&offset, "+30s\n").unwrap();
    let out = holder.wait().await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert!(out.stderr.contains("clock jumped"), "{}", out.stderr);
}

/// Kills a process (and so the test's lock-exec) when a test ends, also on failure.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// Issue #9.11: the command's arguments (`--password=…`) reach cluster log pipelines only
/// at debug level; info names the program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_arguments_are_logged_only_at_debug() {
    let env = Env::new(Backend::Dynalite).await;
    let run = ["run", "k", "--", "sh", "-c", "true", "--password=hunter2"];
    let info = env.cmd(run).output().await;
    assert_eq!(info.code, Some(0), "{}", info.stderr);
    assert!(!info.stderr.contains("hunter2"), "{}", info.stderr);
    let started = log_lines(&info.stderr)
        .into_iter()
        .find(|r| r["message"] == "command started")
        .unwrap();
    assert_eq!(started["program"], "sh");
    let debug = env.cmd(run).env("LOCK_EXEC_LOG", "debug").output().await;
    assert!(debug.stderr.contains("hunter2"), "{}", debug.stderr);
}
