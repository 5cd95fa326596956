//! Many racers for one key: exactly one runs per round; with --wait all run, never two at
//! once. The soak races holders while a fault injector hits whoever holds the key.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::both;
use crate::harness::*;

both!(racers_one_runs_per_round, waiters_all_run_without_overlap);

const RACERS: usize = 20;

async fn racers_one_runs_per_round(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    for round in 0..3 {
        // The winner's job runs until every other racer has given up (at most 60 s), so
        // slow starters on a loaded machine still find the key held.
        let others_done = jobs.dir().join(format!("round-{round}-done"));
        let racers: Vec<Running> = (0..RACERS)
            .map(|i| {
                let mut job = jobs.argv(
                    &format!("r{round}-{i}"),
                    Duration::from_secs(60),
                    OnTerm::Die,
                    0,
                );
                job.extend(["--until".into(), others_done.display().to_string()]);
                env.cmd(["run", "race", "--owner", &format!("racer-{i}")])
                    .args(["--locked-exit-code", "75", "--"])
                    .args(job)
                    .timeout(Duration::from_secs(120))
                    .spawn()
            })
            .collect();
        // The losers exit at once with the locked exit code; one racer is left running.
        let mut pending = racers;
        let mut skipped = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while pending.len() > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: racers did not finish"
            );
            let mut still = Vec::new();
            for mut r in pending {
                match r.child.try_wait().unwrap().map(|s| s.code()) {
                    Some(Some(75)) => skipped += 1,
                    Some(other) => panic!(
                        "round {round}: a racer exited {other:?}: {}",
                        r.wait().await.stderr
                    ),
                    None => still.push(r),
                }
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::write(&others_done, "").unwrap();
        let mut ran = 0;
        for r in pending {
            let out = r.wait().await;
            assert_eq!(out.code, Some(0), "round {round}: {}", out.stderr);
            ran += 1;
        }
        assert_eq!((ran, skipped), (1, RACERS - 1), "round {round}");
        let started = jobs
            .intervals()
            .iter()
            .filter(|i| i.name.starts_with(&format!("r{round}-")))
            .count();
        assert_eq!(started, 1, "round {round}: {started} jobs ran");
    }
    assert_no_overlap(&jobs.intervals());
    assert_eq!(env.item("race").await.unwrap().fence, Some(3));
}

async fn waiters_all_run_without_overlap(b: Backend) {
    let env = Env::new(b).await;
    let jobs = Jobs::new();
    let racers: Vec<Running> = (0..RACERS)
        .map(|i| {
            env.cmd(["run", "queue", "--owner", &format!("w-{i}")])
                .args(["--wait", "240s", "--lease", "2s", "--"])
                .args(jobs.argv(&format!("w{i}"), Duration::from_millis(100), OnTerm::Die, 0))
                .timeout(Duration::from_secs(300))
                .spawn()
        })
        .collect();
    for r in racers {
        let out = r.wait().await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let v = jobs.intervals();
    assert_eq!(v.len(), RACERS);
    assert!(v.iter().all(|i| i.clean), "{v:#?}");
    assert_no_overlap(&v);
    assert_eq!(env.item("queue").await.unwrap().fence, Some(RACERS as i64));
}

/// A short soak in every test run; `make soak` runs the long one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    soak(40).await;
}

/// The long soak (`make soak`): LOCK_EXEC_SOAK_RUNS contended runs (default 1000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long; run with `make soak`"]
async fn soak_long() {
    let runs = std::env::var("LOCK_EXEC_SOAK_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    soak(runs).await;
}

/// The faults the injector deals out, one at a time, to the current holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Injected {
    /// Its network stops answering for a while.
    Blackhole,
    /// The answer to its next request is lost.
    LostResponse,
    /// Its next request arrives late, after its retry (reordered).
    LateRequest,
    /// Its answers come late for a while.
    SlowResponses,
    /// lock-exec is SIGKILLed.
    Kill,
    /// An operator runs `unlock --force`.
    ForceUnlock,
}

/// How each run of a racer is set up, apart from the injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Setup {
    /// stderr is a closed pipe.
    ClosedStderr,
    /// stderr is /dev/full.
    FullStderr,
    /// The job leaves a descendant behind that ignores SIGTERM.
    Leftover,
}

/// What the soak's racers and injector share.
#[derive(Default)]
struct Board {
    /// The current run of each racer: owner → (lock-exec's pid, racer index).
    running: Mutex<HashMap<String, (i32, usize)>>,
    /// Faults injected per owner.
    faults: Mutex<HashMap<String, Vec<Injected>>>,
    /// Runs started so far.
    started: AtomicUsize,
    /// Set when the soak is over.
    done: AtomicBool,
}

/// Racers contend for one key with jobs that outlive their lease unless fenced, while an
/// injector deals faults to whoever holds it. Every job, and every descendant a job leaves,
/// records its own interval; none may intersect another. A run may end in 125 only if a
/// fault was injected into it.
async fn soak(runs: usize) {
    let env = Arc::new(Env::new(Backend::Dynalite).await);
    let jobs = Arc::new(Jobs::new());
    let board = Arc::new(Board::default());
    // Each racer's clock is off by a fixed amount within the allowance (lease 2 s: 200 ms;
    // the largest difference between two racers is 180 ms).
    let offsets = ["+0s", "+0.09s", "-0.09s", "+0.045s"];
    let mut proxies = Vec::new();
    for _ in &offsets {
        proxies.push(Arc::new(Proxy::start(env.server.port).await));
    }
    let mut racers = Vec::new();
    for (i, offset) in offsets.iter().enumerate() {
        let (env, jobs, board, proxy) =
            (env.clone(), jobs.clone(), board.clone(), proxies[i].clone());
        let offset = offset.to_string();
        racers.push(tokio::spawn(async move {
            let mut outcomes: Vec<(String, Option<i32>, Option<Setup>)> = Vec::new();
            let mut seq = 0;
            while board.started.fetch_add(1, Ordering::SeqCst) < runs {
                seq += 1;
                let owner = format!("r{i}-{seq}");
                proxy.set(Fault::Pass);
                let setup = match fastrand::u8(0..10) {
                    0 => Some(Setup::ClosedStderr),
                    1 => Some(Setup::FullStderr),
                    2 => Some(Setup::Leftover),
                    _ => None,
                };
                let sleep = Duration::from_millis(fastrand::u64(300..3000));
                let on_term = [OnTerm::Die, OnTerm::Exit, OnTerm::Ignore][fastrand::usize(0..3)];
                let mut job = jobs.argv(&owner, sleep, on_term, 0);
                if setup == Some(Setup::Leftover) {
                    job.extend(["--leftover".into(), format!("{owner}-left"), "5".into()]);
                }
                let mut cmd = LockExec::new(&proxy.endpoint(), &env.table)
                    .env("LD_PRELOAD", libfaketime())
                    .env("FAKETIME", &offset)
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                    .args([
                        "run", "soak", "--owner", &owner, "--wait", "60s", "--lease", "2s",
                    ])
                    .args(["--", "env", "-u", "LD_PRELOAD", "-u", "FAKETIME"])
                    .args(&job)
                    .timeout(Duration::from_secs(120));
                if setup == Some(Setup::FullStderr) {
                    cmd = cmd.stderr(Stdio::from(std::fs::File::create("/dev/full").unwrap()));
                }
                let mut running = cmd.spawn();
                if setup == Some(Setup::ClosedStderr) {
                    drop(running.child.stderr.take());
                }
                board
                    .running
                    .lock()
                    .unwrap()
                    .insert(owner.clone(), (running.pid(), i));
                let out = running.wait().await;
                board.running.lock().unwrap().remove(&owner);
                outcomes.push((owner, out.code, setup));
            }
            outcomes
        }));
    }

    // The injector: every 0.3–1.5 s, one fault for the run that holds the key.
    let injector = {
        let (env, board, proxies) = (env.clone(), board.clone(), proxies.clone());
        tokio::spawn(async move {
            while !board.done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1500))).await;
                let Some(item) = env.item("soak").await else {
                    continue;
                };
                if !item.is_held(now_ns()) || item.run.is_none() {
                    continue;
                }
                let owner = item.owner.unwrap();
                let Some((pid, racer)) = board.running.lock().unwrap().get(&owner).copied() else {
                    continue;
                };
                let proxy = &proxies[racer];
                let fault = match fastrand::u8(0..8) {
                    0 | 1 => Injected::Blackhole,
                    2 => Injected::LostResponse,
                    3 => Injected::LateRequest,
                    4 => Injected::SlowResponses,
                    5 => Injected::Kill,
                    6 => Injected::ForceUnlock,
                    _ => continue, // a holder left alone
                };
                board
                    .faults
                    .lock()
                    .unwrap()
                    .entry(owner.clone())
                    .or_default()
                    .push(fault);
                match fault {
                    Injected::Blackhole => {
                        proxy.set(Fault::Blackhole);
                        let p = proxy.clone();
                        let for_ms = fastrand::u64(500..3000);
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(for_ms)).await;
                            if p.get() == Fault::Blackhole {
                                p.set(Fault::Pass);
                            }
                        });
                    }
                    Injected::LostResponse => proxy.set(Fault::DropResponse),
                    Injected::LateRequest => proxy.set(Fault::HoldRequest(
                        Duration::from_millis(fastrand::u64(500..2500)),
                        None,
                    )),
                    Injected::SlowResponses => {
                        proxy.set(Fault::DelayResponses(Duration::from_millis(fastrand::u64(
                            100..600,
                        ))));
                        let p = proxy.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            if matches!(p.get(), Fault::DelayResponses(_)) {
                                p.set(Fault::Pass);
                            }
                        });
                    }
                    Injected::Kill => {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            Signal::SIGKILL,
                        );
                    }
                    Injected::ForceUnlock => {
                        let out = env.cmd(["unlock", "soak", "--force"]).output().await;
                        assert!(matches!(out.code, Some(0) | Some(1)), "{}", out.stderr);
                    }
                }
            }
        })
    };

    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.extend(r.await.unwrap());
    }
    board.done.store(true, Ordering::SeqCst);
    injector.await.unwrap();

    // Every interval, leftovers included: none may intersect another.
    let v = jobs.intervals();
    let bad = overlaps(&v);
    assert!(bad.is_empty(), "OVERLAP of runs under one key: {bad:#?}");

    let faults = board.faults.lock().unwrap().clone();
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut fault_counts: HashMap<Injected, usize> = HashMap::new();
    let mut setup_counts: HashMap<Setup, usize> = HashMap::new();
    for f in faults.values().flatten() {
        *fault_counts.entry(*f).or_default() += 1;
    }
    for (owner, code, setup) in &outcomes {
        let hit = faults.get(owner);
        let label = match code {
            Some(c) => c.to_string(),
            None => "killed".into(),
        };
        *by_code.entry(label).or_default() += 1;
        if let Some(s) = setup {
            *setup_counts.entry(*s).or_default() += 1;
        }
        match code {
            // The job's own code, or 75: the wait ran out.
            Some(0) | Some(75) => {}
            Some(125) | None => assert!(
                hit.is_some(),
                "{owner} ended {code:?} with no fault injected"
            ),
            other => panic!("{owner} ended {other:?} (faults {hit:?})"),
        }
    }
    let ran = v.iter().filter(|i| !i.name.ends_with("-left")).count();
    let leftovers = v.len() - ran;
    assert!(ran * 2 >= runs, "only {ran} of {runs} runs got to run");
    let mut codes: Vec<_> = by_code.into_iter().collect();
    codes.sort();
    let mut fault_list: Vec<_> = fault_counts.into_iter().collect();
    fault_list.sort();
    let mut setups: Vec<_> = setup_counts.into_iter().collect();
    setups.sort();
    eprintln!(
        "FIGURE soak: {} runs, {ran} jobs ran (+{leftovers} leftover descendants), {} of them stopped or killed, {} overlapping pairs among {} intervals\n  exits: {codes:?}\n  faults injected: {fault_list:?} ({} in all)\n  run set-ups: {setups:?}; clock offsets {offsets:?}",
        outcomes.len(),
        v.iter().filter(|i| !i.clean).count(),
        bad.len(),
        v.len(),
        faults.values().map(Vec::len).sum::<usize>(),
    );
}
