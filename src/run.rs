//! The run loop: acquire → spawn → select!(child, signal, lease event) → release.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::clock::{nanos, rfc3339, Clock};
use crate::error::Error;
use crate::exit::ChildStatus;
use crate::lease::{jitter, Lease, LeaseEvent, LeaseState, Timing};
use crate::lock::{Acquire, Claim, Holding, LockStore, StoreError};
use crate::supervisor::{is_shutdown, ChildCommand, Event, Supervisor};

/// Everything `run` needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The key to lock.
    pub key: String,
    /// Our owner name (host or pod name).
    pub owner: String,
    /// Our cluster name, if given.
    pub cluster: Option<String>,
    /// The command; LOCK_EXEC_KEY/OWNER/FENCE are added to its environment.
    pub command: ChildCommand,
    /// Lease settings.
    pub timing: Timing,
    /// How long to wait for a held key; zero skips at once.
    pub wait: Duration,
}

/// How a run ended, when lock-exec itself did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The command ran and ended with this status.
    Exited(ChildStatus),
    /// The key was held: the command never ran.
    Locked,
    /// The hard cap was reached and the command was stopped.
    HardCap,
    /// The lease was lost or could not be renewed and the command was stopped.
    LeaseLost,
    /// A shutdown signal arrived before the command started.
    Interrupted(Signal),
}

/// Why lock-exec is stopping the child itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Lost,
    Unrenewed,
    HardCap,
}

/// Runs the command under the lock. Signal handlers in `sup` must already be installed.
pub async fn run<S: LockStore>(
    store: Arc<S>,
    cfg: RunConfig,
    clock: Clock,
    sup: &mut Supervisor,
) -> Result<RunOutcome, Error> {
    let run_id = random_id();
    let (holding, claim, sent) = match acquire(&*store, &cfg, &run_id, &clock, sup).await? {
        Acquired::Got(got) => *got,
        Acquired::Held => return Ok(RunOutcome::Locked),
        Acquired::Interrupted(sig) => return Ok(RunOutcome::Interrupted(sig)),
    };
    let t = cfg.timing;
    tracing::info!(key = %cfg.key, owner = %cfg.owner, fence = holding.fence,
        lease = %humantime::format_duration(t.lease), deadline = %rfc3339(claim.deadline_ns), "lock acquired");

    // A shutdown requested while we were acquiring: do not start the command.
    if let Some(sig) = sup.pending_signal().filter(|s| is_shutdown(*s)) {
        tracing::info!(key = %cfg.key, signal = %sig, "shutdown requested before the command started");
        release(&*store, &holding, &claim, &clock, t, false).await;
        return Ok(RunOutcome::Interrupted(sig));
    }

    let mut lease = Lease::start(
        store.clone(),
        LeaseState {
            holding: holding.clone(),
            expire_ns: claim.expire_ns,
            deadline_ns: claim.deadline_ns,
            sent,
        },
        t,
        clock,
    );

    let command = with_lock_env(&cfg.command, &holding);
    let pid = match sup.spawn(&command) {
        Ok(pid) => pid,
        Err(e) => {
            lease.stop().await;
            release(&*store, &holding, &claim, &clock, t, false).await;
            return Err(Error::Spawn(e));
        }
    };
    tracing::info!(key = %cfg.key, pid, command = ?command.argv, "command started");

    let mut stop: Option<Stop> = None;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        tokio::select! {
            ev = sup.next() => match ev {
                Event::ChildExited(status) => break status,
                Event::Signal(sig) => {
                    sup.signal_child(sig);
                    if is_shutdown(sig) && kill_at.is_none() {
                        // Like the kubelet, but sooner than it: the command gets --grace to
                        // exit, then SIGKILL, so the lock is released before the pod's
                        // terminationGracePeriodSeconds ends and lock-exec is killed.
                        kill_at = Some(Instant::now() + t.grace);
                        tracing::info!(key = %cfg.key, signal = %sig, grace = %humantime::format_duration(t.grace),
                            "forwarded shutdown signal; keeping the lease until the command exits, SIGKILL after the grace period");
                    } else if is_shutdown(sig) {
                        tracing::info!(key = %cfg.key, signal = %sig, "forwarded shutdown signal");
                    } else {
                        tracing::debug!(signal = %sig, "forwarded signal");
                    }
                }
            },
            ev = lease.event(), if stop.is_none() => {
                let (why, at) = match ev {
                    LeaseEvent::Lost => (Stop::Lost, Instant::now() + t.grace),
                    LeaseEvent::Expiring { kill_at, hard_cap: true } => (Stop::HardCap, kill_at),
                    LeaseEvent::Expiring { kill_at, hard_cap: false } => (Stop::Unrenewed, kill_at),
                };
                // A shutdown's SIGKILL may already be due sooner; keep the earlier one.
                let at = kill_at.map_or(at, |k| k.min(at));
                let reason = match why {
                    Stop::Lost => "the lease was lost",
                    Stop::Unrenewed => "the lease could not be renewed in time",
                    Stop::HardCap => "the hard cap (--expire) was reached",
                };
                let grace = at.saturating_duration_since(Instant::now());
                tracing::warn!(key = %cfg.key, owner = %cfg.owner, reason,
                    grace = %humantime::format_duration(Duration::from_millis(grace.as_millis() as u64)),
                    "stopping the command: SIGTERM now, SIGKILL when the grace period ends");
                sup.signal_child(Signal::SIGTERM);
                stop = Some(why);
                kill_at = Some(at);
            }
            _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                tracing::warn!(key = %cfg.key, owner = %cfg.owner, "command still running after the grace period; sending SIGKILL");
                sup.signal_child(Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    tracing::info!(key = %cfg.key, code = status.code(), status = ?status, "command exited");

    // Whatever the job left behind must be gone before the lock is, and before the lease
    // ends when lock-exec is already stopping because of it.
    let grace = match kill_at {
        Some(at) => at.saturating_duration_since(Instant::now()),
        None if stop.is_some() => Duration::ZERO,
        None => t.grace,
    };
    sup.stop_leftovers(grace).await;
    lease.stop().await;

    match stop {
        None => release(&*store, &holding, &claim, &clock, t, true).await,
        Some(Stop::HardCap) => release(&*store, &holding, &claim, &clock, t, false).await,
        // The store did not answer renewals: one short try, then the lease lapses anyway.
        Some(Stop::Unrenewed) => {
            if timeout(t.heartbeat, store.release(&holding, clock.now_ns()))
                .await
                .is_err()
            {
                tracing::warn!(key = %cfg.key, "release got no answer; the key frees itself when its lease ends");
            }
        }
        Some(Stop::Lost) => {}
    }
    Ok(match stop {
        None => RunOutcome::Exited(status),
        Some(Stop::HardCap) => RunOutcome::HardCap,
        Some(Stop::Lost | Stop::Unrenewed) => RunOutcome::LeaseLost,
    })
}

/// The result of trying to take the key.
enum Acquired {
    /// Ours: the lock, the claim written, and when the winning request was first sent.
    Got(Box<(Holding, Claim, Instant)>),
    /// Still held when `--wait` ran out.
    Held,
    /// A shutdown signal arrived while waiting.
    Interrupted(Signal),
}

/// Tries to take the key, waiting up to `cfg.wait` while it is held.
async fn acquire<S: LockStore>(
    store: &S,
    cfg: &RunConfig,
    run_id: &str,
    clock: &Clock,
    sup: &mut Supervisor,
) -> Result<Acquired, Error> {
    let t = cfg.timing;
    let give_up = Instant::now() + cfg.wait;
    let poll = (t.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut announced = false;
    loop {
        let sent = Instant::now();
        let now_ns = clock.wall_at(sent);
        let claim = Claim {
            key: cfg.key.clone(),
            owner: cfg.owner.clone(),
            cluster: cfg.cluster.clone(),
            run: run_id.to_string(),
            now_ns,
            expire_ns: now_ns + nanos(t.lease),
            deadline_ns: now_ns + nanos(t.expire),
        };
        let holder = match store.acquire(&claim).await {
            Ok(Acquire::Acquired(h)) => return Ok(Acquired::Got(Box::new((h, claim, sent)))),
            Ok(Acquire::Held(holder)) => holder,
            Err(e) if e.is_transient() && Instant::now() + poll < give_up => {
                tracing::warn!(key = %cfg.key, error = %e, "acquire failed; retrying while --wait allows");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let holder_desc = holder
            .as_ref()
            .map(|h| h.describe(clock.now_ns()))
            .unwrap_or_else(|| "holder unknown".into());
        if Instant::now() >= give_up {
            tracing::info!(key = %cfg.key, holder = %holder_desc, "key is locked; not running the command");
            return Ok(Acquired::Held);
        }
        if !announced {
            tracing::info!(key = %cfg.key, holder = %holder_desc,
                wait = %humantime::format_duration(cfg.wait), "key is locked; waiting for it");
            announced = true;
        }
        // Poll with jitter, but no later than just after the holder's lease ends: a
        // crashed holder's key is taken within ~100 ms of its lease end, not a poll later.
        let lease_end = holder
            .and_then(|h| h.expire_ns)
            .map(|e| clock.instant_at(e))
            .filter(|end| *end > Instant::now());
        let mut nap = jitter(poll, 0.5);
        if let Some(end) = lease_end {
            nap = nap.min(end - Instant::now() + jitter(Duration::from_millis(60), 0.5));
        }
        let nap = nap.min(give_up.saturating_duration_since(Instant::now()));
        let until = Instant::now() + nap;
        loop {
            tokio::select! {
                _ = sleep_until(until) => break,
                sig = sup.next_signal() => if is_shutdown(sig) {
                    tracing::info!(key = %cfg.key, signal = %sig, "shutdown requested while waiting for the lock");
                    return Ok(Acquired::Interrupted(sig));
                },
            }
        }
    }
}

/// Releases our lock: its lease ends now, or when `--min-hold` ends if that is later and
/// the run finished normally. Retried briefly; failure is logged, never fatal, because the
/// key frees itself when the lease ends.
async fn release<S: LockStore>(
    store: &S,
    holding: &Holding,
    claim: &Claim,
    clock: &Clock,
    t: Timing,
    honour_min_hold: bool,
) {
    let now = clock.now_ns();
    let min_hold_end = claim.now_ns + nanos(t.min_hold);
    let expire_ns = if honour_min_hold {
        now.max(min_hold_end)
    } else {
        now
    };
    for attempt in 1..=3u32 {
        match timeout(Duration::from_secs(5), store.release(holding, expire_ns)).await {
            Ok(Ok(())) => {
                if expire_ns > now {
                    tracing::info!(key = %holding.key, fence = holding.fence, free_at = %rfc3339(expire_ns),
                        "lock released; held until --min-hold ends");
                } else {
                    tracing::info!(key = %holding.key, fence = holding.fence, "lock released");
                }
                return;
            }
            Ok(Err(StoreError::Lost)) => {
                tracing::warn!(key = %holding.key, fence = holding.fence,
                    "lock was no longer ours at release (taken over or force-unlocked)");
                return;
            }
            Ok(Err(e)) => tracing::warn!(key = %holding.key, attempt, error = %e, "release failed"),
            Err(_) => {
                tracing::warn!(key = %holding.key, attempt, "release got no answer within 5s")
            }
        }
        sleep(Duration::from_millis(200 * attempt as u64)).await;
    }
    tracing::error!(key = %holding.key, "could not release the lock; it frees itself when its lease ends");
}

/// The command with LOCK_EXEC_KEY, LOCK_EXEC_OWNER and LOCK_EXEC_FENCE set.
fn with_lock_env(cmd: &ChildCommand, h: &Holding) -> ChildCommand {
    let ours = [
        ("LOCK_EXEC_KEY", h.key.clone()),
        ("LOCK_EXEC_OWNER", h.owner.clone()),
        ("LOCK_EXEC_FENCE", h.fence.to_string()),
    ];
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

/// 128 random bits as hex: unique per run, so retries recognise their own item.
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for salt in 0..2u64 {
        // RandomState is seeded from the OS's random source.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    //! The run loop against the in-memory store, with real child processes (so real time:
    //! paused time would race ahead while the runtime waits for a child). nextest runs each
    //! test in its own process, which then owns its signals and children.

    use super::*;
    use crate::lease::TimingInput;
    use crate::lock::memory::{MemoryStore, Mode};
    use crate::lock::LockRecord;

    fn config(argv: &[&str], lease_ms: u64) -> RunConfig {
        RunConfig {
            key: "k".into(),
            owner: "me".into(),
            cluster: Some("east".into()),
            command: ChildCommand {
                argv: argv.iter().map(OsString::from).collect(),
                env: std::env::vars_os().collect(),
            },
            timing: Timing::new(TimingInput {
                lease: Some(Duration::from_millis(lease_ms)),
                ..Default::default()
            })
            .unwrap(),
            wait: Duration::ZERO,
        }
    }

    async fn go(store: &MemoryStore, cfg: RunConfig) -> RunOutcome {
        let mut sup = Supervisor::new().unwrap();
        run(Arc::new(store.clone()), cfg, Clock::system(), &mut sup)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn short_run_takes_two_requests_and_passes_the_status_through() {
        let store = MemoryStore::new();
        let outcome = go(&store, config(&["sh", "-c", "exit 3"], 30_000)).await;
        assert_eq!(outcome, RunOutcome::Exited(ChildStatus::Exited(3)));
        assert_eq!(store.requests(), 2, "acquire + release, nothing else");
        let item = store.item("k").unwrap();
        assert_eq!(item.fence, Some(1));
        assert_eq!(item.cluster.as_deref(), Some("east"));
        assert!(!item.is_held(Clock::system().now_ns()));
    }

    #[tokio::test]
    async fn held_key_is_skipped_without_running_the_command() {
        let store = MemoryStore::new();
        let now = Clock::system().now_ns();
        store.put(LockRecord {
            key: "k".into(),
            owner: Some("other".into()),
            run: Some("their-run".into()),
            fence: Some(7),
            expire_ns: Some(now + 60_000_000_000),
            ..Default::default()
        });
        let marker = std::env::temp_dir().join(format!("lock-exec-unit-{}", std::process::id()));
        let outcome = go(&store, config(&["touch", marker.to_str().unwrap()], 30_000)).await;
        assert_eq!(outcome, RunOutcome::Locked);
        assert!(!marker.exists());
        assert_eq!(store.requests(), 1);
        assert_eq!(
            store.item("k").unwrap().fence,
            Some(7),
            "the holder's item is untouched"
        );
    }

    #[tokio::test]
    async fn outage_stops_the_command_before_its_lease_ends() {
        let store = MemoryStore::new();
        let s = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.set_mode(Mode::Hang);
        });
        let started = Instant::now();
        let outcome = go(&store, config(&["sleep", "30"], 2_000)).await;
        assert_eq!(outcome, RunOutcome::LeaseLost);
        let item = store.item("k").unwrap();
        let lease_end = item.expire_ns.unwrap();
        assert!(
            Clock::system().now_ns() < lease_end,
            "the command outlived the lease"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn force_unlock_mid_run_is_a_lost_lease() {
        let store = MemoryStore::new();
        let s = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.force_release("k", Clock::system().now_ns())
                .await
                .unwrap();
        });
        let outcome = go(&store, config(&["sleep", "30"], 1_500)).await;
        assert_eq!(outcome, RunOutcome::LeaseLost);
    }

    #[tokio::test]
    async fn min_hold_keeps_the_key_after_the_command() {
        let store = MemoryStore::new();
        let mut cfg = config(&["true"], 30_000);
        cfg.timing.min_hold = Duration::from_secs(60);
        assert_eq!(
            go(&store, cfg).await,
            RunOutcome::Exited(ChildStatus::Exited(0))
        );
        let item = store.item("k").unwrap();
        assert_eq!(
            item.expire_ns,
            Some(item.acquired_ns.unwrap() + 60_000_000_000)
        );
    }

    #[tokio::test]
    async fn unknown_program_exits_127_through_the_reaper() {
        let store = MemoryStore::new();
        let outcome = go(&store, config(&["/nonexistent/lock-exec-test"], 30_000)).await;
        assert_eq!(outcome, RunOutcome::Exited(ChildStatus::Exited(127)));
        assert!(!store.item("k").unwrap().is_held(Clock::system().now_ns()));
    }
}
