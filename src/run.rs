//! The run loop: wait for the lock → spawn → select!(child, signal, lease stop) → stop
//! leftovers → release → report.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::{sleep_until, Instant};

use crate::clock::{human, rfc3339, Clock};
use crate::error::Error;
use crate::exit::ChildStatus;
use crate::held::{Attempt, Ending, HeldLock, Request};
use crate::lease::{jitter, StopWhy};
use crate::lock::{LockRecord, LockStore, StoreError, Whole};
use crate::supervisor::{is_shutdown, ChildCommand, Event, Supervisor};

/// Everything `run` needs, validated by the CLI.
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    /// The lock to take.
    pub(crate) request: Request,
    /// The command; LOCK_EXEC_KEY/OWNER/FENCE (and SLOT) are added to its environment.
    pub(crate) command: ChildCommand,
    /// How long to wait for a held key; zero skips at once.
    pub(crate) wait: Duration,
}

/// How a run ended, when lock-exec itself did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    /// The command ran and ended with this status (also after a forwarded shutdown).
    Ran(ChildStatus),
    /// The key was held, or its slot done: the command never ran.
    Skipped(Refusal),
    /// `--wait` ran out while the key was held.
    WaitTimedOut(Refusal),
    /// The hard cap was reached and the command was stopped.
    HardCap(ChildStatus),
    /// The lease was lost or could not be renewed, and the command was stopped.
    LeaseLost(ChildStatus),
    /// A shutdown signal arrived before the command started.
    Interrupted(Signal),
}

/// Why a run could not take the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A live lease, as the store saw it (when it could tell).
    Held(Option<LockRecord>),
    /// A run of this slot, or of a later one, has completed.
    SlotDone(LockRecord),
}

/// A run's outcome with the facts its summary reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// How it ended.
    pub(crate) outcome: RunOutcome,
    /// The fence this run got, if it took the key.
    pub(crate) fence: Option<u64>,
    /// How long the key was held by this run.
    pub(crate) held: Option<Duration>,
    /// How long the command ran.
    pub(crate) ran: Option<Duration>,
}

impl Report {
    fn without_lock(outcome: RunOutcome) -> Self {
        Report {
            outcome,
            fence: None,
            held: None,
            ran: None,
        }
    }
}

/// Runs the command under the lock. Signal handlers in `sup` must already be installed.
pub(crate) async fn run<S: LockStore>(
    store: Arc<S>,
    cfg: RunConfig,
    clock: Clock,
    sup: &mut Supervisor,
) -> Result<Report, Error> {
    let req = &cfg.request;
    let run_id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let mut lock = match wait_for_lock(&store, &cfg, &run_id, &clock, sup).await? {
        Waited::Got(lock) => lock,
        Waited::Not(outcome) => return Ok(Report::without_lock(outcome)),
    };
    let held_since = Instant::now();
    let fence = lock.holding().fence;
    tracing::info!(key = %req.key, fence, lease = %human(req.timing.lease),
        deadline = %rfc3339(lock.deadline_ns()), "lock acquired");

    // A shutdown requested while we were acquiring: do not start the command.
    if let Some(sig) = sup.pending_shutdown() {
        tracing::info!(key = %req.key, signal = %sig, "shutdown requested before the command started");
        lock.release(Ending::Stopped).await;
        return Ok(Report {
            outcome: RunOutcome::Interrupted(sig),
            fence: Some(fence),
            held: Some(held_since.elapsed()),
            ran: None,
        });
    }

    // The lease may already require a stop (a renewal failed right away): never start a
    // command that would have to be stopped before it runs.
    if let Some(stop) = lock.stopped() {
        lock.release(Ending::Fenced(stop.why)).await;
        return Err(StoreError::Unreachable {
            detail: "the lease could not be kept long enough to start the command".into(),
        }
        .into());
    }

    let command = with_lock_env(&cfg.command, &cfg.request, fence);
    let pid = match sup.spawn(&command) {
        Ok(pid) => pid,
        Err(e) => {
            lock.release(Ending::Stopped).await;
            return Err(Error::Spawn(e));
        }
    };
    let started = Instant::now();
    let program = command.argv[0].to_string_lossy();
    tracing::info!(key = %req.key, pid, program = %program, "command started");
    tracing::debug!(key = %req.key, argv = %shell_words::join(command.argv.iter().map(|a| a.to_string_lossy())), "command line");

    let watched = supervise(&mut lock, sup, req).await;
    let ran = started.elapsed();
    match sup.exec_error() {
        None => {}
        Some(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(key = %req.key, program = %program,
            "command not found: check the program's name and the PATH of the command (exit 127)")
        }
        Some(e) => tracing::error!(key = %req.key, program = %program, error = %e,
            "command cannot be executed: is it a program with the execute permission? (exit 126)"),
    }
    tracing::info!(key = %req.key, exit_code = watched.status.code(), status = %watched.status, "command exited");

    // Whatever the job left behind must be gone before the lock is, and before the lease
    // ends when lock-exec is stopping because of the lease.
    let kill_at = watched.kill_at.unwrap_or_else(|| match watched.ending {
        Ending::Finished(_) => Instant::now() + req.timing.grace,
        Ending::Stopped | Ending::Fenced(_) => Instant::now(),
    });
    // Never later than the lease allows (the heartbeat goes on until the release).
    let kill_at = kill_at.min(lock.kill_at());
    sup.stop_leftovers(kill_at).await;
    lock.release(watched.ending).await;
    let outcome = match watched.ending {
        Ending::Fenced(StopWhy::HardCap) => RunOutcome::HardCap(watched.status),
        Ending::Fenced(_) => RunOutcome::LeaseLost(watched.status),
        Ending::Finished(status) => RunOutcome::Ran(status),
        Ending::Stopped => RunOutcome::Ran(watched.status),
    };
    Ok(Report {
        outcome,
        fence: Some(fence),
        held: Some(held_since.elapsed()),
        ran: Some(ran),
    })
}

/// What watching the command came to.
struct Watched {
    /// How the command ended.
    status: ChildStatus,
    /// How the run ended for the lock.
    ending: Ending,
    /// A SIGKILL that was due but not yet sent when the command exited.
    kill_at: Option<Instant>,
}

/// Forwards signals and stops the command when a shutdown's grace or the lease requires,
/// until it exits.
async fn supervise<S: LockStore>(
    lock: &mut HeldLock<S>,
    sup: &mut Supervisor,
    req: &Request,
) -> Watched {
    let t = req.timing;
    let mut shutdown = false;
    let mut fenced: Option<StopWhy> = None;
    let mut kill_at: Option<Instant> = None;
    let sooner = |at: Instant, current: Option<Instant>| Some(current.map_or(at, |c| c.min(at)));
    let status = loop {
        tokio::select! {
            // A stop that comes with the child's exit decides the ending: the run did not
            // end by itself if the lease required it to stop.
            biased;
            stop = lock.stop() => {
                let reason = match stop.why {
                    StopWhy::Lost => "the lease was lost (revoked or taken over)",
                    StopWhy::Unrenewed => "the lease could not be renewed in time",
                    StopWhy::HardCap => "the hard cap (--expire) was reached",
                    StopWhy::ClockJump(_) => "the wall clock jumped",
                    StopWhy::TaskEnded => "the lease task ended",
                };
                kill_at = sooner(stop.kill_at, kill_at);
                let grace = kill_at.map(|k| k.saturating_duration_since(Instant::now())).unwrap_or_default();
                tracing::warn!(key = %req.key, reason, grace = %human(grace),
                    "stopping the command: SIGTERM now, SIGKILL when the grace period ends");
                sup.signal_child(Signal::SIGTERM);
                fenced = Some(stop.why);
            }
            ev = sup.next() => match ev {
                Event::ChildExited(status) => break status,
                Event::Signal(sig) => {
                    sup.signal_child(sig);
                    if is_shutdown(sig) && !shutdown {
                        // Like the kubelet, but sooner than it: the command gets --grace to
                        // exit, then SIGKILL, so the lock is released before the pod's
                        // terminationGracePeriodSeconds ends and lock-exec is killed.
                        shutdown = true;
                        kill_at = sooner(Instant::now() + t.grace, kill_at);
                        tracing::info!(key = %req.key, signal = %sig, grace = %human(t.grace),
                            "forwarded shutdown signal; keeping the lease until the command exits, SIGKILL after the grace period");
                    } else {
                        tracing::debug!(signal = %sig, "forwarded signal");
                    }
                }
            },
            _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                tracing::warn!(key = %req.key, "command still running after the grace period; sending SIGKILL");
                sup.signal_child(Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    let ending = match (fenced, shutdown) {
        (Some(why), _) => Ending::Fenced(why),
        (None, true) => Ending::Stopped,
        (None, false) => Ending::Finished(status),
    };
    Watched {
        status,
        ending,
        kill_at,
    }
}

/// The result of waiting for the key.
enum Waited<S: LockStore> {
    /// Ours.
    Got(HeldLock<S>),
    /// Not ours, and the run ends with this outcome.
    Not(RunOutcome),
}

/// Tries to take the key, waiting up to `cfg.wait` while it is held.
async fn wait_for_lock<S: LockStore>(
    store: &Arc<S>,
    cfg: &RunConfig,
    run_id: &str,
    clock: &Clock,
    sup: &mut Supervisor,
) -> Result<Waited<S>, Error> {
    let req = &cfg.request;
    let t = req.timing;
    let give_up = Instant::now() + cfg.wait;
    let poll = (t.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut announced = false;
    loop {
        let refused = match HeldLock::try_acquire(store, req, run_id, clock).await {
            Ok(Attempt::Acquired(lock)) => return Ok(Waited::Got(lock)),
            Ok(Attempt::Refused(record)) => refusal(record, req)?,
            Err(e) if e.is_transient() && Instant::now() + poll < give_up => {
                tracing::warn!(key = %req.key, error = %e, "acquire failed; retrying while --wait allows");
                Refusal::Held(None)
            }
            Err(e) => return Err(e.into()),
        };
        let now_ns = clock.now_ns();
        let holder = match &refused {
            Refusal::SlotDone(r) => {
                tracing::info!(key = %req.key,
                    "this slot is already done ({}); not running the command",
                    r.describe_done(now_ns).unwrap_or_default());
                return Ok(Waited::Not(RunOutcome::Skipped(refused)));
            }
            Refusal::Held(record) => record
                .as_ref()
                .map(|r| r.describe(now_ns))
                .unwrap_or_else(|| "holder unknown".into()),
        };
        if Instant::now() >= give_up {
            if cfg.wait.is_zero() {
                tracing::info!(key = %req.key, holder = %holder, "key is locked; not running the command");
                return Ok(Waited::Not(RunOutcome::Skipped(refused)));
            }
            tracing::warn!(key = %req.key, holder = %holder, waited = %human(cfg.wait),
                "gave up waiting for the key; not running the command");
            return Ok(Waited::Not(RunOutcome::WaitTimedOut(refused)));
        }
        if !announced {
            tracing::info!(key = %req.key, holder = %holder, wait = %human(cfg.wait), "key is locked; waiting for it");
            announced = true;
        }
        // Poll with jitter, but no later than just after the holder's lease ends: a
        // crashed holder's key is taken within ~100 ms of its lease end, not a poll later.
        let now = clock.now();
        let lease_end = match &refused {
            Refusal::Held(Some(r)) => r.expire_ns.map(|e| now.instant_at(e)),
            _ => None,
        }
        .filter(|end| *end > now.mono);
        let mut nap = jitter(poll, 0.5);
        if let Some(end) = lease_end {
            nap = nap.min(end - now.mono + jitter(Duration::from_millis(60), 0.5));
        }
        let until = (Instant::now() + nap).min(give_up);
        loop {
            tokio::select! {
                _ = sleep_until(until) => break,
                sig = sup.next_signal() => if is_shutdown(sig) {
                    tracing::info!(key = %req.key, signal = %sig, "shutdown requested while waiting for the lock");
                    return Ok(Waited::Not(RunOutcome::Interrupted(sig)));
                },
            }
        }
    }
}

/// Why the store refused, from the record it returned: held, slot done, or an item no run
/// can take (an error: waiting cannot help).
fn refusal(record: Option<LockRecord>, req: &Request) -> Result<Refusal, Error> {
    let Some(r) = record else {
        return Ok(Refusal::Held(None));
    };
    if let Some(slot) = req.slot {
        if r.slot_done(slot.n) {
            return Ok(Refusal::SlotDone(r));
        }
    }
    let fence_bad = matches!(r.fence, Whole::Malformed(_));
    let slot_bad = req.slot.is_some() && matches!(r.done_slot, Whole::Malformed(_));
    if fence_bad || slot_bad {
        return Err(Error::Malformed {
            key: r.key.clone(),
            what: r.malformed().unwrap_or_default(),
        });
    }
    Ok(Refusal::Held(Some(r)))
}

/// The command with LOCK_EXEC_KEY, LOCK_EXEC_OWNER, LOCK_EXEC_FENCE (and LOCK_EXEC_SLOT
/// when the run has one) set.
fn with_lock_env(cmd: &ChildCommand, req: &Request, fence: u64) -> ChildCommand {
    let mut ours = vec![
        ("LOCK_EXEC_KEY", req.key.clone()),
        ("LOCK_EXEC_OWNER", req.owner.clone()),
        ("LOCK_EXEC_FENCE", fence.to_string()),
    ];
    if let Some(slot) = req.slot {
        ours.push(("LOCK_EXEC_SLOT", slot.n.to_string()));
    }
    let mut env: Vec<(OsString, OsString)> = cmd
        .env
        .iter()
        .filter(|(k, _)| !ours.iter().any(|(name, _)| k == name))
        .cloned()
        .collect();
    env.extend(ours.into_iter().map(|(k, v)| (k.into(), v.into())));
    ChildCommand {
        argv: cmd.argv.clone(),
        env,
    }
}

#[cfg(test)]
mod tests {
    //! The run loop on the in-memory store with real child processes, so in real time
    //! (paused time would race ahead while the runtime waits for a child).
    //!
    //! The supervisor reaps with `waitpid(-1)`: two tests spawning children at once in one
    //! process would reap each other's. nextest runs each test in its own process; under
    //! `cargo test` (threads) this lock keeps them apart.

    use super::*;
    use crate::held::Slot;
    use crate::lease::{Timing, TimingInput};
    use crate::lock::memory::{MemoryStore, Mode};
    use crate::lock::Force;

    static CHILDREN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn config(argv: &[&str], lease_ms: u64, slot: Option<Slot>) -> RunConfig {
        RunConfig {
            request: Request {
                key: "k".into(),
                owner: "me".into(),
                cluster: Some("east".into()),
                slot,
                timing: Timing::new(TimingInput {
                    lease: Some(Duration::from_millis(lease_ms)),
                    ..Default::default()
                })
                .unwrap(),
            },
            command: ChildCommand {
                argv: argv.iter().map(OsString::from).collect(),
                env: std::env::vars_os().collect(),
            },
            wait: Duration::ZERO,
        }
    }

    async fn go(store: &MemoryStore, cfg: RunConfig) -> Report {
        let mut sup = Supervisor::new().unwrap();
        run(Arc::new(store.clone()), cfg, Clock::system(), &mut sup)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn short_run_takes_two_requests_and_passes_the_status_through() {
        let _one_at_a_time = CHILDREN.lock().await;
        let store = MemoryStore::new();
        let report = go(&store, config(&["sh", "-c", "exit 3"], 30_000, None)).await;
        assert_eq!(report.outcome, RunOutcome::Ran(ChildStatus::Exited(3)));
        assert_eq!(report.fence, Some(1));
        assert_eq!(store.requests(), 2, "acquire + release, nothing else");
        let item = store.item("k").unwrap();
        assert_eq!(item.cluster.as_deref(), Some("east"));
        assert!(!item.is_held(Clock::system().now_ns()));
    }

    #[tokio::test]
    async fn held_key_is_skipped_without_running_the_command() {
        let _one_at_a_time = CHILDREN.lock().await;
        let store = MemoryStore::new();
        go(&store, config(&["true"], 30_000, None)).await;
        let mut held = store.item("k").unwrap();
        held.run = Some("their-run".into());
        held.expire_ns = Some(Clock::system().now_ns() + 60_000_000_000);
        store.put(held.clone());
        let marker = std::env::temp_dir().join(format!("lock-exec-unit-{}", std::process::id()));
        let report = go(
            &store,
            config(&["touch", marker.to_str().unwrap()], 30_000, None),
        )
        .await;
        assert!(matches!(
            report.outcome,
            RunOutcome::Skipped(Refusal::Held(Some(_)))
        ));
        assert!(!marker.exists());
        assert_eq!(
            store.item("k").unwrap(),
            held,
            "the holder's item is untouched"
        );
    }

    #[tokio::test]
    async fn outage_stops_the_command_before_its_lease_ends() {
        let _one_at_a_time = CHILDREN.lock().await;
        let store = MemoryStore::new();
        let s = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.set_mode(Mode::Hang);
        });
        let report = go(&store, config(&["sleep", "60"], 5_000, None)).await;
        let died = Clock::system().now_ns();
        assert!(
            matches!(report.outcome, RunOutcome::LeaseLost(_)),
            "{report:?}"
        );
        let lease_end = store.item("k").unwrap().expire_ns.unwrap();
        // Lease 5 s: the command is dead skew + margin (750 ms) before the stored end; the
        // run returned after that, so it is an upper bound of the death.
        assert!(
            died < lease_end,
            "the command outlived the lease by {} ms",
            (died - lease_end) / 1_000_000
        );
    }

    #[tokio::test]
    async fn revoked_mid_run_is_a_lost_lease_and_frees_the_key_early() {
        let _one_at_a_time = CHILDREN.lock().await;
        let store = MemoryStore::new();
        let s = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let seen = s.item("k").unwrap();
            s.force(&seen, Force::Revoke, Clock::system().now_ns())
                .await
                .unwrap();
        });
        let report = go(&store, config(&["sleep", "60"], 3_000, None)).await;
        assert!(
            matches!(report.outcome, RunOutcome::LeaseLost(_)),
            "{report:?}"
        );
        let item = store.item("k").unwrap();
        assert!(
            !item.is_held(Clock::system().now_ns()),
            "freed once the command was dead"
        );
    }

    #[tokio::test]
    async fn slot_is_completed_once_and_a_second_run_skips() {
        let _one_at_a_time = CHILDREN.lock().await;
        let store = MemoryStore::new();
        let slot = Some(Slot {
            n: 29_000_000,
            retry_failed: false,
        });
        let first = go(&store, config(&["sh", "-c", "exit 2"], 30_000, slot)).await;
        assert_eq!(first.outcome, RunOutcome::Ran(ChildStatus::Exited(2)));
        let again = go(&store, config(&["true"], 30_000, slot)).await;
        assert!(
            matches!(again.outcome, RunOutcome::Skipped(Refusal::SlotDone(_))),
            "{again:?}"
        );
        let older = go(
            &store,
            config(
                &["true"],
                30_000,
                Some(Slot {
                    n: 28_999_999,
                    retry_failed: false,
                }),
            ),
        )
        .await;
        assert!(matches!(
            older.outcome,
            RunOutcome::Skipped(Refusal::SlotDone(_))
        ));
        // A run without a slot works as before and keeps the done slot.
        let plain = go(&store, config(&["true"], 30_000, None)).await;
        assert_eq!(plain.outcome, RunOutcome::Ran(ChildStatus::Exited(0)));
        assert_eq!(
            store.item("k").unwrap().done_slot,
            crate::lock::Whole::Valid(29_000_000)
        );
    }

    #[tokio::test]
    async fn min_hold_keeps_the_key_after_the_command() {
        let _one_at_a_time = CHILDREN.lock().await;
        let store = MemoryStore::new();
        let mut cfg = config(&["true"], 30_000, None);
        cfg.request.timing.min_hold = Duration::from_secs(60);
        let report = go(&store, cfg).await;
        assert_eq!(report.outcome, RunOutcome::Ran(ChildStatus::Exited(0)));
        let item = store.item("k").unwrap();
        assert_eq!(
            item.expire_ns,
            Some(item.acquired_ns.unwrap() + 60_000_000_000)
        );
    }

    #[tokio::test]
    async fn unknown_program_exits_127_through_the_reaper() {
        let _one_at_a_time = CHILDREN.lock().await;
        let store = MemoryStore::new();
        let report = go(
            &store,
            config(&["/nonexistent/lock-exec-test"], 30_000, None),
        )
        .await;
        assert_eq!(report.outcome, RunOutcome::Ran(ChildStatus::Exited(127)));
        assert!(!store.item("k").unwrap().is_held(Clock::system().now_ns()));
    }
}
