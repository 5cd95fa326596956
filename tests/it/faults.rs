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

/// The release is applied but its answer is lost: the retry (same condition) succeeds,
/// so the key is not left held for a lease.
async fn lost_release_response_is_retried(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    let go = env.dir.file("go");
    let wait_for_go = format!("while [ ! -e {} ]; do sleep 0.02; done", go.display());
    let holder = env
        .holder_via(&proxy.endpoint(), &["run", "k"], &wait_for_go)
        .await;
    // No renewal is due for 10 s: the next response is the release's.
    proxy.set(Fault::DropResponse);
    std::fs::write(&go, "").unwrap();
    let out = holder.running.wait().await;
    assert_eq!(proxy.fired(), 1, "the fault did not trigger");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("lock released"), "{}", out.stderr);
    assert!(
        !env.item("k").await.unwrap().is_held(now_ns()),
        "left locked for a lease"
    );
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

    // Throttled renewals are retried with backoff; 1 s of throttling around the first
    // renewal (due 2 s after the acquire, SIGTERM due at 3.15 s) does not lose the lease.
    let holder = env
        .holder_via(&proxy.endpoint(), &["run", "k", "--lease", "6s"], "sleep 5")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(Fault::Throttle);
    tokio::time::sleep(Duration::from_millis(1000)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_keeps_or_cleanly_loses_the_lease() {
    let data = TempDir::new();
    let server = Server::dynalite_persistent(data.path(), None);
    let port = server.port;
    let mut env = Env::with_server(server).await;
    let (start, end) = (env.dir.file("a-start"), env.dir.file("a-end"));
    let holder = env
        .cmd([
            "run",
            "k",
            "--lease",
            "6s",
            "--",
            "sh",
            "-c",
            &format!(
                "date +%s%N > {}; sleep 6; date +%s%N > {}",
                start.display(),
                end.display()
            ),
        ])
        .spawn();
    wait_for("holder", Duration::from_secs(20), || start.exists()).await;
    env.server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.server = Server::dynalite_persistent(data.path(), Some(port));
    // A contender during the run must be refused (or wait until the holder is gone).
    let (contender, b_start) = env.contender("k", "30s").await;
    let held = holder.wait().await;
    assert!(
        held.code == Some(0) || held.code == Some(125),
        "{}",
        held.stderr
    );
    assert_eq!(contender.code, Some(0), "{}", contender.stderr);
    let holder_end = read_num(&end).unwrap_or_else(now_ns);
    assert!(
        b_start.unwrap() > holder_end,
        "contender ran while the holder ran"
    );
    eprintln!(
        "FIGURE server restart (1.5 s down, lease 6s): holder exit {:?}",
        held.code
    );
}

/// A contender whose clock runs 0.8 s ahead (libfaketime) judges the holder's lease
/// lapsed 0.8 s early; with --max-clock-skew 1s the holder's child is dead by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contender_clock_ahead_within_allowance_never_overlaps() {
    let env = Env::new(Backend::Dynalite).await;
    let proxy = Proxy::start(env.server.port).await;
    let holder = env
        .holder_via(
            &proxy.endpoint(),
            &["run", "k", "--lease", "4s", "--max-clock-skew", "1s"],
            "trap '' TERM; exec sleep 60",
        )
        .await;
    let death = death_of(holder.child);
    proxy.set(Fault::Blackhole);
    // The contender wakes just after the lease end as its clock (0.8 s fast) reads it;
    // its child reads the real clock.
    let b_start = env.dir.file("b-start");
    let contender = LockExec::program("faketime", &env.endpoint(), &env.table)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .args([
            "-f",
            "+0.8s",
            bin(),
            "run",
            "k",
            "--wait",
            "30s",
            "--lease",
            "1s",
            "--",
            "sh",
            "-c",
            &format!(
                "env -u LD_PRELOAD -u FAKETIME date +%s%N > {}",
                b_start.display()
            ),
        ])
        .output()
        .await;
    assert_eq!(contender.code, Some(0), "{}", contender.stderr);
    let held = holder.running.wait().await;
    assert_eq!(held.code, Some(125), "{}", held.stderr);
    let died = death.await.unwrap();
    let started = read_num(&b_start).unwrap();
    assert!(
        started > died,
        "overlap: contender started {} ms before the holder's child died",
        (died - started) / 1_000_000
    );
    eprintln!(
        "FIGURE clock skew +0.8s: contender started {} ms after the holder's child died",
        (started - died) / 1_000_000
    );
}
