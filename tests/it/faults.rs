//! Faults between lock-exec and DynamoDB, injected by the harness's TCP proxy: lost
//! responses, slow and throttling servers, restarts, and a contender whose clock is ahead.

use std::time::Duration;

use crate::both;
use crate::harness::*;

both!(
    lost_acquire_response_runs_once,
    lost_release_response_is_retried
);

/// The acquire is applied but its answer is lost; the SDK retries, the condition fails on
/// our own item, and the run must recognise itself: it runs once, and releases.
async fn lost_acquire_response_runs_once(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    proxy.set(Fault::DropResponse);
    let out = LockExec::new(&proxy.endpoint(), &env.table)
        .args([
            "run",
            "k",
            "--",
            "sh",
            "-c",
            "echo ran with fence $LOCK_EXEC_FENCE",
        ])
        .output()
        .await;
    assert_eq!(proxy.fired(), 1, "the fault did not trigger");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran with fence 1\n", "{}", out.stderr);
    assert!(!out.stderr.contains("key is locked"), "{}", out.stderr);
    let item = env.item("k").await.unwrap();
    assert_eq!(item.fence, Some(1), "acquired twice");
    assert!(!item.is_held(now_ns()), "left locked");
}

/// The release is applied but its answer is lost: the SDK retries, the retry's condition
/// fails on our own applied release, and lock-exec recognises it (the key is free at once,
/// not held for a lease).
async fn lost_release_response_is_retried(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    let go = env.dir.file("go");
    let wait_for_go = format!("while [ ! -e {} ]; do sleep 0.02; done", go.display());
    let holder = env
        .holder_via(&proxy.endpoint(), &["run", "k"], &wait_for_go)
        .await;
    // No renewal is due for 10 s: the next request is the release.
    let before = proxy.ops().len();
    proxy.set(Fault::DropResponse);
    std::fs::write(&go, "").unwrap();
    let out = holder.running.wait().await;
    assert_eq!(proxy.fired(), 1, "the fault did not trigger");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The release was sent again after its answer was lost...
    let after: Vec<String> = proxy.ops()[before..].to_vec();
    assert!(
        after.iter().filter(|op| *op == "UpdateItem").count() >= 2,
        "the release was not retried: {after:?}"
    );
    // ...and lock-exec knew the first one had been applied.
    let released = log_lines(&out.stderr)
        .into_iter()
        .find(|r| r["message"] == "lock released")
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert_eq!(released["answer_lost"], true, "{released}");
    let item = env.item("k").await.unwrap();
    assert!(!item.is_held(now_ns()), "left locked for a lease");
    assert!(item.run.is_none() && item.released_ns.is_some(), "{item:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_keeps_the_lease() {
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    proxy.set(Fault::DelayResponses(Duration::from_secs(2)));
    // Lease 14 s, heartbeat 3 s, grace 4.67 s: a renewal attempt may take half of the
    // 5.08 s between a due renewal and SIGTERM, 2.54 s; answered after 2 s, each renewal
    // lands in time: two of them during the 9 s run.
    let out = LockExec::new(&proxy.endpoint(), &env.table)
        .env("LOCK_EXEC_LOG", "debug")
        .args([
            "run",
            "k",
            "--lease",
            "14s",
            "--heartbeat",
            "3s",
            "--",
            "sleep",
            "9",
        ])
        .output()
        .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.matches("lease renewed").count() >= 2,
        "{}",
        out.stderr
    );
    let item = env.item("k").await.unwrap();
    assert_eq!(item.fence, Some(1));
    assert!(!item.is_held(now_ns()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_and_never_runs_unlocked() {
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    let marker = env.dir.file("ran");
    proxy.set(Fault::Throttle);
    // Without --wait: the SDK's retries run out, the command never runs.
    let out = LockExec::new(&proxy.endpoint(), &env.table)
        .args(["run", "k", "--", "touch", marker.to_str().unwrap()])
        .output()
        .await;
    assert_eq!(out.code, Some(125), "{}", out.stderr);
    assert!(out.stderr.contains("throttled"), "{}", out.stderr);
    assert!(!marker.exists());

    // With --wait, it keeps trying and runs once the throttling stops.
    let waiting = LockExec::new(&proxy.endpoint(), &env.table)
        .args([
            "run",
            "k",
            "--wait",
            "30s",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists(), "ran while every request was throttled");
    proxy.set(Fault::Pass);
    let out = waiting.wait().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(marker.exists());

    // Throttled renewals are retried with backoff: throttling that starts before the
    // first renewal (due 3 s after the acquire; SIGTERM due at 9 - 0.9 - 0.25 - 3 = 4.85 s)
    // and ends once it has refused a renewal does not lose the lease.
    let holder = env
        .holder_via(&proxy.endpoint(), &["run", "k", "--lease", "9s"], "sleep 6")
        .await;
    let seen = proxy.ops().len();
    proxy.set(Fault::Throttle);
    wait_for("a throttled renewal", Duration::from_secs(10), || {
        proxy.ops().len() > seen
    })
    .await;
    proxy.set(Fault::Pass);
    let out = holder.running.wait().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("lease renewal recovered"),
        "the throttling missed the renewal: {}",
        out.stderr
    );
    assert_eq!(env.item("k").await.unwrap().fence, Some(2));
}

/// The server is killed and restarted (1.5 s down) while a holder runs: the holder keeps
/// its lease or stops its command in time; a contender never runs alongside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_keeps_or_cleanly_loses_the_lease() {
    let data = TempDir::new();
    let server = Server::dynalite_persistent(data.path(), None);
    let port = server.port;
    let mut env = Env::with_server(server).await;
    let jobs = Jobs::new();
    let holder = env
        .cmd(["run", "k", "--lease", "6s", "--"])
        .args(jobs.argv("holder", Duration::from_secs(6), OnTerm::Ignore, 0))
        .spawn();
    jobs.wait_started("holder").await;
    env.server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.server = Server::dynalite_persistent(data.path(), Some(port));
    let contender = env
        .cmd(["run", "k", "--wait", "30s", "--"])
        .args(jobs.argv("contender", Duration::from_millis(100), OnTerm::Die, 0))
        .output()
        .await;
    let held = holder.wait().await;
    assert_eq!(contender.code, Some(0), "{}", contender.stderr);
    let job = jobs.interval("holder").unwrap();
    match held.code {
        Some(0) => assert!(
            job.clean,
            "kept its lease, yet its job was stopped: {job:?}"
        ),
        Some(125) => assert!(!job.clean, "lost its lease, yet its job finished: {job:?}"),
        other => panic!("holder exited {other:?}: {}", held.stderr),
    }
    assert_no_overlap(&jobs.intervals());
    eprintln!(
        "FIGURE server restart (1.5 s down, lease 6s): holder exit {:?}",
        held.code
    );
}

/// A contender whose clock runs 0.8 s ahead (libfaketime) judges the holder's lease
/// lapsed 0.8 s early; with --max-clock-skew 1s the holder's job is dead by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contender_clock_ahead_within_allowance_never_overlaps() {
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    let holder = LockExec::new(&proxy.endpoint(), &env.table)
        .args(["run", "k", "--lease", "4s", "--max-clock-skew", "1s", "--"])
        .args(jobs.argv("holder", Duration::from_secs(60), OnTerm::Ignore, 0))
        .spawn();
    jobs.wait_started("holder").await;
    proxy.set(Fault::Blackhole);
    // The contender's lock-exec reads a clock 0.8 s fast; its job, the real one.
    let contender = env
        .cmd(["run", "k", "--wait", "30s", "--lease", "1s", "--"])
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", "+0.8s")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args(["env", "-u", "LD_PRELOAD", "-u", "FAKETIME"])
        .args(jobs.argv("contender", Duration::from_millis(100), OnTerm::Die, 0))
        .output()
        .await;
    assert_eq!(contender.code, Some(0), "{}", contender.stderr);
    let held = holder.wait().await;
    assert_eq!(held.code, Some(125), "{}", held.stderr);
    assert_no_overlap(&jobs.intervals());
    let gap = jobs.start_of("contender").unwrap() - jobs.interval("holder").unwrap().end;
    eprintln!(
        "FIGURE clock skew +0.8s: contender's job started {} ms after the holder's job ended",
        gap / 1_000_000
    );
}
