//! The lease: timing rules, the heartbeat task, and the self-fencing deadline.
//!
//! The holder renews `expire` to `min(now + lease, deadline)` every `heartbeat`. From the
//! last renewal that succeeded, measured from when it was SENT on the monotonic clock, it
//! knows the latest moment a contender (whose clock may run up to `max_clock_skew` ahead)
//! could consider the lease lapsed. The child must be dead before that moment, so:
//!
//! ```text
//!  sent ─ heartbeat ─▶ renew … retries …  SIGTERM ── grace ──▶ SIGKILL ─ margin+skew ─▶ lease end
//! ```
//!
//! A failed condition (someone took or force-unlocked the key) is reported at once. The
//! task never panics and never only logs: a lost or expiring lease is an event the run loop
//! selects on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use crate::clock::{nanos, Clock};
use crate::lock::{Holding, LockStore, StoreError};

/// The lease settings, validated so the child can never outlive the lease it last renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long one renewal keeps the key (`--lease`).
    pub lease: Duration,
    /// Time between renewals (`--heartbeat`).
    pub heartbeat: Duration,
    /// SIGTERM-to-SIGKILL time when lock-exec must stop the child (`--grace`).
    pub grace: Duration,
    /// How far a contender's clock may run ahead of ours (`--max-clock-skew`).
    pub max_clock_skew: Duration,
    /// Hard cap on one run holding the key (`--expire`).
    pub expire: Duration,
    /// Keep the key locked until this long after acquisition (`--min-hold`).
    pub min_hold: Duration,
}

/// The optional parts of [`Timing`]; `None` takes the documented default.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingInput {
    /// `--lease`.
    pub lease: Option<Duration>,
    /// `--heartbeat`; default lease/3.
    pub heartbeat: Option<Duration>,
    /// `--grace`; default the smaller of 10 s and lease/3.
    pub grace: Option<Duration>,
    /// `--max-clock-skew`; default the smaller of 1 s and lease/10.
    pub max_clock_skew: Option<Duration>,
    /// `--expire`.
    pub expire: Option<Duration>,
    /// `--min-hold`.
    pub min_hold: Option<Duration>,
}

/// Default `--lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default `--expire`, the Go tool's lock lifetime.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(24 * 60 * 60);

impl Timing {
    /// Fills defaults and rejects settings under which the child could outlive its lease.
    pub fn new(input: TimingInput) -> Result<Self, String> {
        let lease = input.lease.unwrap_or(DEFAULT_LEASE);
        let t = Timing {
            lease,
            heartbeat: input.heartbeat.unwrap_or(lease / 3),
            grace: input
                .grace
                .unwrap_or((lease / 3).min(Duration::from_secs(10))),
            max_clock_skew: input
                .max_clock_skew
                .unwrap_or((lease / 10).min(Duration::from_secs(1))),
            expire: input.expire.unwrap_or(DEFAULT_EXPIRE),
            min_hold: input.min_hold.unwrap_or(Duration::ZERO),
        };
        let d = |d: Duration| {
            humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
        };
        for (name, value) in [
            ("--lease", t.lease),
            ("--heartbeat", t.heartbeat),
            ("--grace", t.grace),
            ("--expire", t.expire),
        ] {
            if value < Duration::from_millis(1) {
                return Err(format!("{name} must be at least 1ms"));
            }
        }
        if t.heartbeat * 2 >= t.lease {
            return Err(format!(
                "--heartbeat ({}) must be less than half of --lease ({}) so one lost renewal cannot lapse the lease",
                d(t.heartbeat),
                d(t.lease)
            ));
        }
        if t.heartbeat + t.grace + t.max_clock_skew + t.margin() >= t.lease {
            return Err(format!(
                "--heartbeat ({}) + --grace ({}) + --max-clock-skew ({}) + margin ({}) must be less than --lease ({}): \
                 otherwise the command could still run when the lease ends; raise --lease or lower the others",
                d(t.heartbeat),
                d(t.grace),
                d(t.max_clock_skew),
                d(t.margin()),
                d(t.lease)
            ));
        }
        if t.expire <= t.lease {
            return Err(format!(
                "--expire ({}) must be longer than --lease ({})",
                d(t.expire),
                d(t.lease)
            ));
        }
        if t.min_hold > t.expire {
            return Err(format!(
                "--min-hold ({}) must not exceed --expire ({})",
                d(t.min_hold),
                d(t.expire)
            ));
        }
        Ok(t)
    }

    /// Time allowed for SIGKILL to take effect and the group to be reaped: 250 ms, or
    /// lease/20 for very short leases.
    pub fn margin(&self) -> Duration {
        (self.lease / 20).min(Duration::from_millis(250))
    }

    /// How long before the lease end (as written in the table) the child must be dead.
    pub fn safety(&self) -> Duration {
        self.max_clock_skew + self.margin()
    }

    /// Delay before the next renewal attempt after `failures` failed ones: doubling from
    /// 100 ms, at most a quarter heartbeat (so several attempts fit before SIGTERM is
    /// due), with ±25% jitter so holders do not retry in step.
    fn retry_delay(&self, failures: u32) -> Duration {
        let base = Duration::from_millis(100)
            .saturating_mul(1 << failures.saturating_sub(1).min(10))
            .min(self.heartbeat / 4);
        jitter(base, 0.25)
    }
}

/// Scales `d` by a random factor in `[1 - spread, 1 + spread)`.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - spread + 2.0 * spread * unit)
}

/// Why the run loop must stop the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A renewal's condition failed: the lock is no longer ours. Stop the child now.
    Lost,
    /// No renewal succeeded in time, or the hard cap is near: SIGTERM now, SIGKILL at
    /// `kill_at`, which leaves the margin and skew allowance before the lease ends.
    Expiring {
        /// When to send SIGKILL.
        kill_at: Instant,
        /// True when this is the hard cap (`--expire`), not a failure to renew.
        hard_cap: bool,
    },
}

/// A running heartbeat task. Dropping it aborts the task; [`Lease::stop`] lets an
/// in-flight renewal finish first, so a renewal can never land after the release.
pub struct Lease {
    /// Tells the task to stop between renewals.
    stop: watch::Sender<bool>,
    /// The task, until stopped.
    task: Option<JoinHandle<()>>,
    /// At most one event ever arrives.
    events: mpsc::Receiver<LeaseEvent>,
}

/// What the heartbeat task needs to know about the lock it keeps.
pub struct LeaseState {
    /// The lock being kept.
    pub holding: Holding,
    /// The current lease end, Unix ns, as written by the acquire.
    pub expire_ns: i64,
    /// The hard cap, Unix ns.
    pub deadline_ns: i64,
    /// When the acquire that wrote `expire_ns` was sent.
    pub sent: Instant,
}

impl Lease {
    /// Starts renewing `state.holding` in the background.
    pub fn start<S: LockStore>(
        store: Arc<S>,
        state: LeaseState,
        timing: Timing,
        clock: Clock,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (tx, events) = mpsc::channel(1);
        let task = tokio::spawn(keep(store, state, timing, clock, tx, stop_rx));
        Lease {
            stop,
            task: Some(task),
            events,
        }
    }

    /// The next lease event; pending forever once the task has reported or stopped.
    /// Cancel-safe, for use in `select!`.
    pub async fn event(&mut self) -> LeaseEvent {
        match self.events.recv().await {
            Some(ev) => ev,
            None => std::future::pending().await,
        }
    }

    /// Stops renewing, after any renewal in flight has finished.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn keep<S: LockStore>(
    store: Arc<S>,
    state: LeaseState,
    timing: Timing,
    clock: Clock,
    events: mpsc::Sender<LeaseEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let LeaseState {
        holding,
        mut expire_ns,
        deadline_ns,
        sent,
    } = state;
    let mut next_renewal = sent + timing.heartbeat;
    let mut failures = 0u32;
    loop {
        let kill_at = clock.instant_at(expire_ns) - timing.safety();
        let term_at = kill_at - timing.grace;
        let capped = expire_ns >= deadline_ns;
        let expiring = LeaseEvent::Expiring {
            kill_at,
            hard_cap: capped,
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = sleep_until(term_at) => {
                let _ = events.send(expiring).await;
                return;
            }
            _ = sleep_until(next_renewal), if !capped => {}
        }

        let sent = Instant::now();
        let new_expire = (clock.wall_at(sent) + nanos(timing.lease)).min(deadline_ns);
        // One attempt may take up to half a lease (a slow but answering server still
        // renews), but no longer: a hung request must not use up the time in which a
        // retry on a fresh connection could still save the lease.
        let attempt_limit = (timing.lease / 2).max(timing.heartbeat);
        let result = tokio::select! {
            _ = sleep_until(term_at) => {
                let _ = events.send(expiring).await;
                return;
            }
            r = timeout(attempt_limit, store.renew(&holding, new_expire)) => r,
        };
        match result {
            Ok(Ok(())) => {
                tracing::debug!(key = %holding.key, fence = holding.fence, expire_ns = new_expire, "lease renewed");
                if failures > 0 {
                    tracing::info!(key = %holding.key, failures, "lease renewal recovered");
                }
                expire_ns = new_expire;
                failures = 0;
                next_renewal = sent + timing.heartbeat;
            }
            Ok(Err(StoreError::Lost)) => {
                tracing::error!(key = %holding.key, owner = %holding.owner, fence = holding.fence,
                    "lease lost: the lock was taken over or force-unlocked");
                let _ = events.send(LeaseEvent::Lost).await;
                return;
            }
            other => {
                failures += 1;
                let error = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!(
                        "no answer within {}",
                        humantime::format_duration(timing.heartbeat)
                    ),
                };
                let left = term_at.saturating_duration_since(Instant::now());
                tracing::warn!(key = %holding.key, failures, %error,
                    stop_in = %humantime::format_duration(Duration::from_millis(left.as_millis() as u64)),
                    "lease renewal failed; retrying until the command must be stopped");
                next_renewal = Instant::now() + timing.retry_delay(failures);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::memory::{MemoryStore, Mode};
    use crate::lock::{Acquire, Claim};

    fn timing(lease_ms: u64) -> Timing {
        Timing::new(TimingInput {
            lease: Some(Duration::from_millis(lease_ms)),
            expire: Some(Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn defaults_follow_the_lease() {
        let t = Timing::new(TimingInput::default()).unwrap();
        assert_eq!(t.lease, Duration::from_secs(30));
        assert_eq!(t.heartbeat, Duration::from_secs(10));
        assert_eq!(t.grace, Duration::from_secs(10));
        assert_eq!(t.max_clock_skew, Duration::from_secs(1));
        assert_eq!(t.margin(), Duration::from_millis(250));
        let short = timing(1000);
        assert_eq!(short.heartbeat, Duration::from_nanos(333_333_333));
        assert_eq!(short.max_clock_skew, Duration::from_millis(100));
        assert_eq!(short.margin(), Duration::from_millis(50));
    }

    #[test]
    fn rejects_settings_that_could_outlive_the_lease() {
        let bad = |input: TimingInput| Timing::new(input).unwrap_err();
        let s = Duration::from_secs;
        assert!(bad(TimingInput {
            lease: Some(s(10)),
            heartbeat: Some(s(5)),
            ..Default::default()
        })
        .contains("half"));
        assert!(bad(TimingInput {
            lease: Some(s(10)),
            grace: Some(s(7)),
            ..Default::default()
        })
        .contains("--grace"));
        assert!(bad(TimingInput {
            lease: Some(s(10)),
            max_clock_skew: Some(s(5)),
            ..Default::default()
        })
        .contains("skew"));
        assert!(bad(TimingInput {
            lease: Some(Duration::ZERO),
            ..Default::default()
        })
        .contains("--lease"));
        assert!(bad(TimingInput {
            expire: Some(s(10)),
            ..Default::default()
        })
        .contains("--expire"));
        assert!(bad(TimingInput {
            min_hold: Some(s(90_000)),
            ..Default::default()
        })
        .contains("--min-hold"));
    }

    async fn acquire(store: &MemoryStore, clock: &Clock, t: &Timing) -> LeaseState {
        let sent = Instant::now();
        let now_ns = clock.wall_at(sent);
        let claim = Claim {
            key: "k".into(),
            owner: "me".into(),
            cluster: None,
            run: "run-1".into(),
            now_ns,
            expire_ns: now_ns + nanos(t.lease),
            deadline_ns: now_ns + nanos(t.expire),
        };
        let Acquire::Acquired(holding) = store.acquire(&claim).await.unwrap() else {
            panic!("not acquired")
        };
        LeaseState {
            holding,
            expire_ns: claim.expire_ns,
            deadline_ns: claim.deadline_ns,
            sent,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_heartbeat_while_running() {
        let store = MemoryStore::new();
        let clock = Clock::anchored(1_000_000_000_000_000_000);
        let t = timing(3000);
        let state = acquire(&store, &clock, &t).await;
        let mut lease = Lease::start(Arc::new(store.clone()), state, t, clock);
        tokio::select! {
            ev = lease.event() => panic!("unexpected {ev:?}"),
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        // Acquire + one renewal per second for 10 s (the last one races the timer).
        assert!(
            (10..=11).contains(&store.requests()),
            "{} requests",
            store.requests()
        );
        let expire = store.item("k").unwrap().expire_ns.unwrap();
        assert!(
            expire >= clock.now_ns() + 2_000_000_000,
            "lease kept ahead of now"
        );
        lease.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn outage_stops_the_child_before_the_lease_ends() {
        let store = MemoryStore::new();
        let clock = Clock::anchored(1_000_000_000_000_000_000);
        let t = timing(3000);
        let state = acquire(&store, &clock, &t).await;
        let mut lease = Lease::start(Arc::new(store.clone()), state, t, clock);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let last_expire = store.item("k").unwrap().expire_ns.unwrap();
        store.set_mode(Mode::Hang);
        let started = Instant::now();
        let LeaseEvent::Expiring { kill_at, hard_cap } = lease.event().await else {
            panic!("expected Expiring")
        };
        assert!(!hard_cap);
        let lease_end = clock.instant_at(last_expire);
        // SIGTERM now, SIGKILL at kill_at: both before the recorded lease end by skew + margin.
        assert_eq!(lease_end - kill_at, t.safety());
        assert_eq!(kill_at - Instant::now(), t.grace);
        assert!(Instant::now() > started);
    }

    #[tokio::test(start_paused = true)]
    async fn down_store_is_retried_then_expires() {
        let store = MemoryStore::new();
        let clock = Clock::anchored(1_000_000_000_000_000_000);
        let t = timing(30_000);
        let state = acquire(&store, &clock, &t).await;
        let mut lease = Lease::start(Arc::new(store.clone()), state, t, clock);
        store.set_mode(Mode::Down);
        let ev = lease.event().await;
        assert!(matches!(
            ev,
            LeaseEvent::Expiring {
                hard_cap: false,
                ..
            }
        ));
        // Failures from 10 s until SIGTERM time at 18.75 s, backing off from 100 ms.
        assert!(
            store.requests() > 5,
            "renewals were retried, got {}",
            store.requests()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_is_reported_as_lost() {
        let store = MemoryStore::new();
        let clock = Clock::anchored(1_000_000_000_000_000_000);
        let t = timing(3000);
        let state = acquire(&store, &clock, &t).await;
        let mut lease = Lease::start(Arc::new(store.clone()), state, t, clock);
        store.force_release("k", clock.now_ns()).await.unwrap();
        assert_eq!(lease.event().await, LeaseEvent::Lost);
    }

    #[tokio::test(start_paused = true)]
    async fn hard_cap_is_reported_before_the_deadline() {
        let store = MemoryStore::new();
        let clock = Clock::anchored(1_000_000_000_000_000_000);
        let t = Timing::new(TimingInput {
            lease: Some(Duration::from_secs(1)),
            expire: Some(Duration::from_secs(3)),
            ..Default::default()
        })
        .unwrap();
        let state = acquire(&store, &clock, &t).await;
        let deadline = clock.instant_at(state.deadline_ns);
        let mut lease = Lease::start(Arc::new(store.clone()), state, t, clock);
        let LeaseEvent::Expiring { kill_at, hard_cap } = lease.event().await else {
            panic!("expected Expiring")
        };
        assert!(hard_cap);
        assert_eq!(deadline - kill_at, t.safety());
        assert_eq!(
            store.item("k").unwrap().expire_ns,
            store.item("k").unwrap().deadline_ns
        );
    }
}
