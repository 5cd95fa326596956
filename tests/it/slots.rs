//! Once per schedule occurrence across clusters (slots), on dynalite and moto.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::both;
use crate::harness::*;

both!(
    slot_is_recorded_when_the_release_first_fails,
    two_clusters_firing_seconds_apart_run_the_occurrence_once,
    older_slot_firing_late_skips,
    failed_occurrence_is_retried_only_with_retry_failed_slot,
    crashed_holder_is_followed_by_a_waiting_peer,
    waiter_leaves_as_soon_as_its_slot_is_done,
    go_format_item_and_runs_without_slot_keep_working,
);

/// Now, in minutes since the epoch: the slot numbering of a CronJob firing now.
fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
}

/// `lock-exec run KEY --cluster C --slot N [EXTRA] -- <job NAME>`, for `at` = (KEY, C, N).
fn slot_run(
    env: &Env,
    jobs: &Jobs,
    at: (&str, &str, u64),
    name: &str,
    extra: &[&str],
    job: (Duration, u8),
) -> LockExec {
    let (key, cluster, slot) = at;
    env.cmd([
        "run",
        key,
        "--cluster",
        cluster,
        "--slot",
        &slot.to_string(),
    ])
    .args(extra)
    .arg("--")
    .args(jobs.argv(name, job.0, OnTerm::Die, job.1))
    .timeout(Duration::from_secs(90))
}

async fn two_clusters_firing_seconds_apart_run_the_occurrence_once(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let slot = minute_now();
    // Cluster A's controller fires first; the job takes 1 s and ends before B fires.
    let a = slot_run(
        &env,
        &jobs,
        ("nightly", "a", slot),
        "a",
        &[],
        (Duration::from_secs(1), 0),
    )
    .output()
    .await;
    assert_eq!(a.code, Some(0), "{}", a.stderr);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b_run = slot_run(
        &env,
        &jobs,
        ("nightly", "b", slot),
        "b",
        &["--locked-exit-code", "3"],
        (Duration::from_secs(1), 0),
    )
    .output()
    .await;
    assert_eq!(b_run.code, Some(3), "{}", b_run.stderr);
    assert!(
        b_run.stderr.contains("slot is already done"),
        "{}",
        b_run.stderr
    );
    assert!(
        b_run.stderr.contains("in cluster a"),
        "says who did it: {}",
        b_run.stderr
    );
    assert!(!jobs.started("b"));
    let item = env.item("nightly").await.unwrap();
    assert_eq!(item.done_slot, Some(slot as i64));
    assert_eq!(item.done_cluster.as_deref(), Some("a"));
    assert!(item.done_at_ns.is_some() && !item.is_held(now_ns()));
    // status shows it.
    let s: serde_json::Value = serde_json::from_str(
        &env.cmd(["status", "nightly", "-o", "json"])
            .output()
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(s["done_slot"], slot);
    let text = env.cmd(["status", "nightly"]).output().await.stdout;
    assert!(text.contains(&format!("slot {slot} done")), "{text}");
    // The next occurrence runs.
    let next = slot_run(
        &env,
        &jobs,
        ("nightly", "b", slot + 1),
        "next",
        &[],
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_no_overlap(&jobs.intervals());
}

/// The network fails as the command ends: the release, and the completed slot it
/// records, are retried while the lease lasts, so a waiting cluster does not run the
/// occurrence again.
async fn slot_is_recorded_when_the_release_first_fails(b: Backend) {
    let env = Env::new(b).await;
    let proxy = Proxy::start(env.server.port).await;
    let jobs = Jobs::new();
    let slot = minute_now();
    let a = LockExec::new(&proxy.endpoint(), &env.table)
        .args([
            "run",
            "k",
            "--cluster",
            "a",
            "--slot",
            &slot.to_string(),
            "--lease",
            "6s",
            "--",
        ])
        .args(jobs.argv("a", Duration::from_millis(1500), OnTerm::Die, 0))
        .timeout(Duration::from_secs(60))
        .spawn();
    jobs.wait_started("a").await;
    let b_run = slot_run(
        &env,
        &jobs,
        ("k", "b", slot),
        "b",
        &["--wait", "60s"],
        (Duration::ZERO, 0),
    )
    .spawn();
    // Down from before the job ends until 2 s after.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.set(Fault::Blackhole);
    wait_for("cluster a's job to end", Duration::from_secs(10), || {
        jobs.interval("a").is_some_and(|i| i.clean)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set(Fault::Pass);
    let out = a.wait().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("release failed; retrying"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("slot recorded as done"),
        "{}",
        out.stderr
    );
    let b_out = b_run.wait().await;
    assert_eq!(b_out.code, Some(0), "{}", b_out.stderr);
    assert!(!jobs.started("b"), "the occurrence ran twice");
    assert_eq!(
        env.item("k").await.unwrap().done_cluster.as_deref(),
        Some("a")
    );
}

async fn older_slot_firing_late_skips(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let slot = minute_now();
    let now = slot_run(
        &env,
        &jobs,
        ("k", "a", slot),
        "now",
        &[],
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(now.code, Some(0), "{}", now.stderr);
    // A cluster whose controller was down fires the previous occurrence late.
    let late = slot_run(
        &env,
        &jobs,
        ("k", "b", slot - 60),
        "late",
        &[],
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(late.code, Some(0), "{}", late.stderr);
    assert!(late.stderr.contains("already done"), "{}", late.stderr);
    assert!(!jobs.started("late"));
    assert_eq!(
        env.item("k").await.unwrap().done_slot,
        Some(slot as i64),
        "never lowered"
    );
}

async fn failed_occurrence_is_retried_only_with_retry_failed_slot(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let slot = minute_now();
    // Default: any exit completes the occurrence: one attempt across all clusters.
    let failed = slot_run(
        &env,
        &jobs,
        ("once", "a", slot),
        "once-a",
        &[],
        (Duration::ZERO, 4),
    )
    .output()
    .await;
    assert_eq!(failed.code, Some(4), "{}", failed.stderr);
    let again = slot_run(
        &env,
        &jobs,
        ("once", "b", slot),
        "once-b",
        &[],
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(again.code, Some(0));
    assert!(!jobs.started("once-b"), "a failed occurrence ran again");
    // --retry-failed-slot: only exit 0 completes it; another cluster retries.
    let retry = ["--retry-failed-slot"];
    let failed = slot_run(
        &env,
        &jobs,
        ("retry", "a", slot),
        "retry-a",
        &retry,
        (Duration::ZERO, 4),
    )
    .output()
    .await;
    assert_eq!(failed.code, Some(4), "{}", failed.stderr);
    assert_eq!(env.item("retry").await.unwrap().done_slot, None);
    let second = slot_run(
        &env,
        &jobs,
        ("retry", "b", slot),
        "retry-b",
        &retry,
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(jobs.started("retry-b"));
    assert_eq!(
        env.item("retry").await.unwrap().done_slot,
        Some(slot as i64)
    );
    let third = slot_run(
        &env,
        &jobs,
        ("retry", "c", slot),
        "retry-c",
        &retry,
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(third.code, Some(0));
    assert!(!jobs.started("retry-c"), "a completed occurrence ran again");
}

async fn crashed_holder_is_followed_by_a_waiting_peer(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let slot = minute_now();
    let holder = slot_run(
        &env,
        &jobs,
        ("k", "a", slot),
        "a",
        &["--lease", "2s"],
        (Duration::from_secs(60), 0),
    )
    .spawn();
    jobs.wait_started("a").await;
    let peer = slot_run(
        &env,
        &jobs,
        ("k", "b", slot),
        "b",
        &["--wait", "60s", "--lease", "2s"],
        (Duration::from_millis(200), 0),
    )
    .spawn();
    // Node loss in cluster a: lock-exec and its job die without releasing.
    holder.signal(Signal::SIGKILL);
    let _ = holder.wait().await;
    let out = peer.wait().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        jobs.started("b"),
        "the waiting cluster did not run the occurrence"
    );
    assert_no_overlap(&jobs.intervals());
    let item = env.item("k").await.unwrap();
    assert_eq!(item.done_slot, Some(slot as i64));
    assert_eq!(item.done_cluster.as_deref(), Some("b"));
}

async fn waiter_leaves_as_soon_as_its_slot_is_done(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let slot = minute_now();
    let holder = slot_run(
        &env,
        &jobs,
        ("k", "a", slot),
        "a",
        &[],
        (Duration::from_secs(2), 0),
    )
    .spawn();
    jobs.wait_started("a").await;
    let waiter = slot_run(
        &env,
        &jobs,
        ("k", "b", slot),
        "b",
        &["--wait", "10m"],
        (Duration::ZERO, 0),
    )
    .spawn();
    assert_eq!(holder.wait().await.code, Some(0));
    let done_at = env.item("k").await.unwrap().released_ns.unwrap();
    let out = waiter.wait().await;
    let left = now_ns();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("already done"), "{}", out.stderr);
    assert!(!jobs.started("b"));
    // It polls at most every 2 s (lease/4 at the default 30 s lease, jittered ±50%).
    assert!(
        left - done_at < 10_000_000_000,
        "the waiter stayed {} ms after the slot was done",
        (left - done_at) / 1_000_000
    );
}

async fn go_format_item_and_runs_without_slot_keep_working(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let slot = minute_now();
    // The Go tool's lapsed lock on the key: {key, expire} only.
    env.put_go_item("k", now_ns() - 1).await;
    let first = slot_run(
        &env,
        &jobs,
        ("k", "a", slot),
        "first",
        &[],
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(jobs.interval("first").unwrap().fence, Some(1));
    // A run without a slot works as before and keeps the done slot.
    let plain = env.cmd(["run", "k", "--", "true"]).output().await;
    assert_eq!(plain.code, Some(0), "{}", plain.stderr);
    let item = env.item("k").await.unwrap();
    assert_eq!(item.done_slot, Some(slot as i64));
    assert_eq!(item.slot, None, "the slotless run's item names no slot");
    // The Go tool's PutItem replaces the whole item: the done slot is gone with it.
    env.put_go_item("k", now_ns() - 1).await;
    let after_go = slot_run(
        &env,
        &jobs,
        ("k", "b", slot),
        "after-go",
        &[],
        (Duration::ZERO, 0),
    )
    .output()
    .await;
    assert_eq!(after_go.code, Some(0));
    assert!(
        jobs.started("after-go"),
        "documented: the Go tool's write drops the done slot"
    );
}

/// A CronJob's Job name and the same schedule give the same slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_name_and_schedule_agree_on_the_occurrence() {
    let env = Env::new(Backend::Dynalite).await;
    let show = ["--", "sh", "-c", "echo $LOCK_EXEC_SLOT"];
    // Every minute: the nearest occurrence is this minute or the next; a Job of the
    // current minute is named <cronjob>-<minute>.
    for _ in 0..3 {
        let minute = minute_now();
        let by_name = env
            .cmd([
                "run",
                "a",
                "--slot-from-job-name",
                &format!("nightly-{minute}"),
            ])
            .args(show)
            .output()
            .await;
        let by_schedule = env
            .cmd(["run", "b", "--schedule", "* * * * *"])
            .args(show)
            .output()
            .await;
        assert_eq!(by_name.code, Some(0), "{}", by_name.stderr);
        assert_eq!(by_schedule.code, Some(0), "{}", by_schedule.stderr);
        if minute_now() != minute {
            continue; // the minute turned between the two runs
        }
        let nearest: u64 = by_schedule.stdout.trim().parse().unwrap();
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 60;
        let want = if second < 30 { minute } else { minute + 1 };
        assert!(
            nearest == want || nearest == minute,
            "{nearest} vs minute {minute}"
        );
        assert_eq!(by_name.stdout.trim(), minute.to_string());
        // Hourly in Berlin and in UTC: 03:00 CET is 02:00 UTC, the same occurrence.
        let berlin = env
            .cmd([
                "run",
                "c",
                "--schedule",
                "0 * * * *",
                "--time-zone",
                "Europe/Berlin",
            ])
            .args(show)
            .output()
            .await;
        let utc = env
            .cmd(["run", "d", "--schedule", "0 * * * *"])
            .args(show)
            .output()
            .await;
        assert_eq!(
            berlin.stdout, utc.stdout,
            "{} {}",
            berlin.stderr, utc.stderr
        );
        return;
    }
    panic!("the minute kept turning");
}
