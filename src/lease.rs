//! The lease: timing rules, the heartbeat task, and the self-fencing deadline.
//!
//! The holder renews `expire` to `min(now + lease, deadline)` every `heartbeat`. From the
//! last renewal that succeeded, measured from when it was SENT, it knows the latest moment
//! a contender (whose clock may run up to `max_clock_skew` ahead) could consider the lease
//! lapsed. The command must be dead before that moment, so:
//!
//! ```text
//!  sent ─ heartbeat ─▶ renew … retries …  SIGTERM ── grace ──▶ SIGKILL ─ margin+skew ─▶ lease end
//! ```
//!
//! The task never panics and never only logs: a lost or expiring lease, a clock that jumped,
//! even the task itself ending, is a [`Stop`] the holder of the lock selects on.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::clock::{human, nanos, Clock, ClockGuard, Diverged, Reading};
use crate::lock::{Holding, LockStore, Patience, StoreError};

/// The shortest lease: below it the renewal, grace and clock-skew timers have no room.
pub(crate) const MIN_LEASE: Duration = Duration::from_secs(1);
/// Default `--lease`.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default `--expire`, the Go tool's lock lifetime.
pub(crate) const DEFAULT_EXPIRE: Duration = Duration::from_secs(24 * 60 * 60);

/// The lease settings, validated so the command can never outlive the lease it last
/// renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// How long one renewal keeps the key (`--lease`).
    pub(crate) lease: Duration,
    /// Time between renewals (`--heartbeat`).
    pub(crate) heartbeat: Duration,
    /// SIGTERM-to-SIGKILL time when lock-exec must stop the command (`--grace`).
    pub(crate) grace: Duration,
    /// How far a contender's clock may run ahead of ours (`--max-clock-skew`).
    pub(crate) max_clock_skew: Duration,
    /// Hard cap on one run holding the key (`--expire`).
    pub(crate) expire: Duration,
    /// Keep the key locked until this long after acquisition (`--min-hold`).
    pub(crate) min_hold: Duration,
}

/// The optional parts of [`Timing`]; `None` takes the documented default.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimingInput {
    /// `--lease`.
    pub(crate) lease: Option<Duration>,
    /// `--heartbeat`; default lease/3.
    pub(crate) heartbeat: Option<Duration>,
    /// `--grace`; default the smaller of 10 s and lease/3.
    pub(crate) grace: Option<Duration>,
    /// `--max-clock-skew`; default the smaller of 1 s and lease/10.
    pub(crate) max_clock_skew: Option<Duration>,
    /// `--expire`.
    pub(crate) expire: Option<Duration>,
    /// `--min-hold`.
    pub(crate) min_hold: Option<Duration>,
}

/// Settings under which the command could outlive its lease, or that make no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TimingError {
    /// The lease is below [`MIN_LEASE`].
    #[error("--lease {0} is too short: it must be at least 1s so that renewals, the grace period and the clock-skew allowance fit in it")]
    LeaseTooShort(String),
    /// A duration that must be positive is zero.
    #[error("{0} must be more than 0")]
    Zero(&'static str),
    /// Renewals so frequent they would flood the table.
    #[error("--heartbeat {0} is too short: at least 50ms (each renewal is a write)")]
    HeartbeatTooShort(String),
    /// One lost renewal would lapse the lease.
    #[error("--heartbeat ({heartbeat}) must be less than half of --lease ({lease}) so that one lost renewal cannot lapse the lease")]
    HeartbeatTooLong {
        /// The heartbeat.
        heartbeat: String,
        /// The lease.
        lease: String,
    },
    /// The stop sequence does not fit in the lease.
    #[error("--heartbeat ({heartbeat}) + --grace ({grace}) + --max-clock-skew ({skew}) + margin ({margin}) must be less than --lease ({lease}), or the command could still run when the lease ends: raise --lease or lower the others")]
    NoRoom {
        /// The heartbeat.
        heartbeat: String,
        /// The grace period.
        grace: String,
        /// The clock-skew allowance.
        skew: String,
        /// The kill margin.
        margin: String,
        /// The lease.
        lease: String,
    },
    /// The hard cap is not above the lease.
    #[error("--expire ({expire}) must be longer than --lease ({lease})")]
    ExpireNotAboveLease {
        /// The hard cap.
        expire: String,
        /// The lease.
        lease: String,
    },
    /// Min-hold beyond the hard cap.
    #[error("--min-hold ({min_hold}) must not exceed --expire ({expire})")]
    MinHoldAboveExpire {
        /// The min-hold.
        min_hold: String,
        /// The hard cap.
        expire: String,
    },
}

impl Timing {
    /// Fills defaults and rejects settings under which the command could outlive its lease.
    pub(crate) fn new(input: TimingInput) -> Result<Self, TimingError> {
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
        if t.lease < MIN_LEASE {
            return Err(TimingError::LeaseTooShort(human(t.lease)));
        }
        for (name, value) in [
            ("--heartbeat", t.heartbeat),
            ("--grace", t.grace),
            ("--expire", t.expire),
        ] {
            if value.is_zero() {
                return Err(TimingError::Zero(name));
            }
        }
        if t.heartbeat < Duration::from_millis(50) {
            return Err(TimingError::HeartbeatTooShort(human(t.heartbeat)));
        }
        if t.heartbeat * 2 >= t.lease {
            return Err(TimingError::HeartbeatTooLong {
                heartbeat: human(t.heartbeat),
                lease: human(t.lease),
            });
        }
        if t.heartbeat + t.grace + t.max_clock_skew + t.margin() >= t.lease {
            return Err(TimingError::NoRoom {
                heartbeat: human(t.heartbeat),
                grace: human(t.grace),
                skew: human(t.max_clock_skew),
                margin: human(t.margin()),
                lease: human(t.lease),
            });
        }
        if t.expire <= t.lease {
            return Err(TimingError::ExpireNotAboveLease {
                expire: human(t.expire),
                lease: human(t.lease),
            });
        }
        if t.min_hold > t.expire {
            return Err(TimingError::MinHoldAboveExpire {
                min_hold: human(t.min_hold),
                expire: human(t.expire),
            });
        }
        Ok(t)
    }

    /// Time allowed for SIGKILL to take effect and the group to be reaped: 250 ms, or
    /// lease/20 for short leases.
    pub(crate) fn margin(&self) -> Duration {
        (self.lease / 20).min(Duration::from_millis(250))
    }

    /// How long before the lease end (as written in the table) the command must be dead.
    pub(crate) fn safety(&self) -> Duration {
        self.max_clock_skew + self.margin()
    }

    /// The time from a due renewal to the SIGTERM point, in which renewals can be retried.
    pub(crate) fn renewal_window(&self) -> Duration {
        self.lease
            .saturating_sub(self.heartbeat + self.grace + self.max_clock_skew + self.margin())
    }

    /// One renewal attempt may take half the renewal window, so a retry on a fresh
    /// connection still fits when the first one hangs.
    pub(crate) fn attempt_limit(&self) -> Duration {
        self.renewal_window() / 2
    }

    /// How often the task wakes to compare the clocks, between renewals.
    fn check_every(&self) -> Duration {
        (self.heartbeat / 2).min(Duration::from_secs(1))
    }

    /// Delay before the next renewal attempt after `failures` failed ones: doubling from
    /// 100 ms, at most a quarter heartbeat, with ±25% jitter so holders do not retry in
    /// step.
    fn retry_delay(&self, failures: u32) -> Duration {
        let base = Duration::from_millis(100)
            .saturating_mul(1 << failures.saturating_sub(1).min(10))
            .min(self.heartbeat / 4);
        jitter(base, 0.25)
    }
}

/// Scales `d` by a random factor in `[1 - spread, 1 + spread)`.
pub(crate) fn jitter(d: Duration, spread: f64) -> Duration {
    d.mul_f64(1.0 - spread + 2.0 * spread * fastrand::f64())
}

/// A lease end: the wall-clock time stored in the table, and the monotonic instant it
/// corresponds to on the holder's clock when the write carrying it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseEnd {
    /// Unix nanoseconds, as stored.
    pub(crate) wall_ns: i64,
    /// The monotonic instant of `wall_ns`, measured from the send.
    pub(crate) mono: Instant,
}

impl LeaseEnd {
    /// The lease end `wall_ns`, mapped through the reading taken before the write was sent.
    pub(crate) fn new(wall_ns: i64, sent: Reading) -> Self {
        LeaseEnd {
            wall_ns,
            mono: sent.instant_at(wall_ns),
        }
    }

    /// When the command must be dead: `safety` before the earlier of the monotonic end
    /// and the end as the wall clock now maps it (a wall clock that ran ahead brings it
    /// forward).
    pub(crate) fn kill_at(&self, now: Reading, t: &Timing) -> Instant {
        let end = self.mono.min(now.instant_at(self.wall_ns));
        end.checked_sub(t.safety()).unwrap_or(end)
    }
}

/// Why the command must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopWhy {
    /// A renewal's condition failed: the lock was revoked or taken.
    Lost,
    /// No renewal succeeded in time.
    Unrenewed,
    /// The hard cap (`--expire`) is near.
    HardCap,
    /// The wall clock jumped (a step, or a suspend): the lease end is no longer known.
    ClockJump(Diverged),
    /// The heartbeat task ended without being stopped (it cannot happen; if it did, the
    /// lease would no longer be kept).
    TaskEnded,
}

/// The lease requires the command to stop: SIGTERM now, SIGKILL at `kill_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Why.
    pub(crate) why: StopWhy,
    /// When SIGKILL is due, `safety` or more before the lease end.
    pub(crate) kill_at: Instant,
}

/// A running heartbeat task; dropping it aborts the task. A late renewal cannot harm a
/// released lock: the release removes the run id every renewal is conditioned on.
pub(crate) struct Lease {
    /// The task.
    task: JoinHandle<()>,
    /// At most one stop ever arrives.
    events: mpsc::Receiver<Stop>,
    /// The last confirmed lease end, for when the task is gone.
    end: watch::Receiver<LeaseEnd>,
    /// The settings, for the same reason.
    timing: Timing,
    /// The clock, likewise.
    clock: Clock,
    /// Set once a stop has been delivered.
    reported: bool,
}

impl Lease {
    /// Starts renewing `holding` in the background, from the lease end `end` with the
    /// hard cap `deadline_ns`.
    pub(crate) fn start<S: LockStore>(
        store: std::sync::Arc<S>,
        holding: Holding,
        end: LeaseEnd,
        deadline_ns: i64,
        timing: Timing,
        clock: Clock,
    ) -> Self {
        let (tx, events) = mpsc::channel(1);
        let (end_tx, end_rx) = watch::channel(end);
        let keeper = Keeper {
            store,
            holding,
            deadline_ns,
            timing,
            clock: clock.clone(),
            events: tx,
            end: end_tx,
        };
        Lease {
            task: tokio::spawn(keeper.run()),
            events,
            end: end_rx,
            timing,
            clock,
            reported: false,
        }
    }

    /// The last confirmed lease end.
    pub(crate) fn end(&self) -> LeaseEnd {
        *self.end.borrow()
    }

    /// The next stop; pending forever once one has been delivered. Cancel-safe, for use in
    /// `select!`. A task that ended without reporting is a stop too.
    pub(crate) async fn event(&mut self) -> Stop {
        if self.reported {
            return std::future::pending().await;
        }
        let stop = match self.events.recv().await {
            Some(stop) => stop,
            None => {
                let kill_at = self.end.borrow().kill_at(self.clock.now(), &self.timing);
                Stop {
                    why: StopWhy::TaskEnded,
                    kill_at: kill_at.min(Instant::now() + self.timing.grace),
                }
            }
        };
        self.reported = true;
        stop
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The heartbeat task's state.
struct Keeper<S> {
    /// The table.
    store: std::sync::Arc<S>,
    /// The lock kept.
    holding: Holding,
    /// The hard cap, Unix nanoseconds.
    deadline_ns: i64,
    /// The settings.
    timing: Timing,
    /// The clock.
    clock: Clock,
    /// Where the one stop goes.
    events: mpsc::Sender<Stop>,
    /// The last confirmed lease end.
    end: watch::Sender<LeaseEnd>,
}

impl<S: LockStore> Keeper<S> {
    async fn run(self) {
        let stop = self.keep().await;
        let _ = self.events.send(stop).await;
    }

    /// Renews until the lease must be given up; returns why.
    async fn keep(&self) -> Stop {
        let t = self.timing;
        let mut end = *self.end.borrow();
        // Jumps within the skew allowance are what the allowance is for; within the kill
        // margin, what the margin absorbs. (With --max-clock-skew 0, scheduling noise
        // alone would otherwise read as a jump.)
        let mut guard = ClockGuard::new(self.clock.now(), t.max_clock_skew.max(t.margin()));
        // The lease end was written by a request sent a lease before it: renew a heartbeat
        // after that send.
        let sent = end.mono.checked_sub(t.lease).unwrap_or_else(Instant::now);
        let mut next_renewal = sent + t.heartbeat;
        let mut failures = 0u32;
        loop {
            let now = self.clock.now();
            let kill_at = end.kill_at(now, &t);
            if let Err(jump) = guard.check(now) {
                return self.jumped(jump, &end, now);
            }
            let term_at = kill_at.checked_sub(t.grace).unwrap_or(kill_at);
            let capped = end.wall_ns >= self.deadline_ns;
            let expiring = Stop {
                why: if capped {
                    StopWhy::HardCap
                } else {
                    StopWhy::Unrenewed
                },
                kill_at,
            };
            if now.mono >= term_at {
                return expiring;
            }
            let mut wake = term_at.min(now.mono + t.check_every());
            if !capped {
                wake = wake.min(next_renewal);
            }
            sleep_until(wake).await;
            if capped || Instant::now() < next_renewal {
                continue;
            }

            // Checked again right before the write: a jump during the sleep must not be
            // written into the table.
            let sent = self.clock.now();
            if let Err(jump) = guard.check(sent) {
                return self.jumped(jump, &end, sent);
            }
            let new_end = (sent.wall_ns.saturating_add(nanos(t.lease))).min(self.deadline_ns);
            let renewal =
                self.store
                    .renew(&self.holding, new_end, Patience::Once(t.attempt_limit()));
            let mut renewal = std::pin::pin!(renewal);
            // While the renewal is in flight the clocks are still watched, and the stop
            // point follows the wall clock as before.
            let result = loop {
                tokio::select! {
                    r = &mut renewal => break r,
                    _ = sleep_until(term_at) => return expiring,
                    _ = tokio::time::sleep(t.check_every()) => {
                        let now = self.clock.now();
                        if let Err(jump) = guard.check(now) {
                            return self.jumped(jump, &end, now);
                        }
                        let kill_at = end.kill_at(now, &t);
                        if now.mono >= kill_at.checked_sub(t.grace).unwrap_or(kill_at) {
                            return Stop { kill_at, ..expiring };
                        }
                    }
                }
            };
            match result {
                Ok(()) => {
                    tracing::debug!(key = %self.holding.key, fence = self.holding.fence, expire_ns = new_end, "lease renewed");
                    if failures > 0 {
                        tracing::info!(key = %self.holding.key, failures, "lease renewal recovered");
                    }
                    end = LeaseEnd::new(new_end, sent);
                    let _ = self.end.send(end);
                    failures = 0;
                    next_renewal = sent.mono + t.heartbeat;
                }
                Err(StoreError::Lost) => {
                    tracing::error!(key = %self.holding.key, owner = %self.holding.owner, fence = self.holding.fence,
                        "lease lost: the lock was revoked (unlock --force) or taken over");
                    let now = Instant::now();
                    return Stop {
                        why: StopWhy::Lost,
                        kill_at: end.kill_at(self.clock.now(), &t).min(now + t.grace),
                    };
                }
                Err(e) => {
                    failures += 1;
                    let left = term_at.saturating_duration_since(Instant::now());
                    tracing::warn!(key = %self.holding.key, failures, error = %e,
                        stop_in = %human(left),
                        "lease renewal failed; retrying until the command must be stopped");
                    next_renewal = Instant::now() + t.retry_delay(failures);
                }
            }
        }
    }
}

impl<S> Keeper<S> {
    /// The stop for a clock jump: the lease end, mapped through the jumped wall clock, may
    /// already have passed.
    fn jumped(&self, jump: Diverged, end: &LeaseEnd, now: Reading) -> Stop {
        tracing::error!(key = %self.holding.key, jump = %signed_human(jump.by_ns),
            "the wall clock jumped against the monotonic clock (a clock step or a suspend): the lease end is no longer certain");
        Stop {
            why: StopWhy::ClockJump(jump),
            kill_at: end
                .kill_at(now, &self.timing)
                .min(now.mono + self.timing.grace),
        }
    }
}

/// A signed nanosecond span for people: `+10s`, `-500ms`.
fn signed_human(ns: i64) -> String {
    let sign = if ns < 0 { '-' } else { '+' };
    format!("{sign}{}", human(Duration::from_nanos(ns.unsigned_abs())))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lock::memory::{MemoryStore, Mode};
    use crate::lock::{Acquire, Claim};

    const T0: i64 = 1_700_000_000_000_000_000;

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
        let ms = Duration::from_millis;
        assert_eq!(
            (t.lease, t.heartbeat, t.grace, t.max_clock_skew, t.margin()),
            (ms(30_000), ms(10_000), ms(10_000), ms(1_000), ms(250))
        );
        assert_eq!(t.safety(), ms(1_250));
        assert_eq!(t.renewal_window(), ms(8_750));
        assert_eq!(t.expire, Duration::from_secs(86_400));
        let short = timing(2000);
        assert_eq!(short.heartbeat, Duration::from_nanos(666_666_666));
        assert_eq!(short.max_clock_skew, ms(200));
        assert_eq!(short.margin(), ms(100));
    }

    #[test]
    fn rejects_settings_that_could_outlive_the_lease() {
        let bad = |input: TimingInput| Timing::new(input).unwrap_err();
        let s = Duration::from_secs;
        assert_eq!(
            bad(TimingInput {
                lease: Some(s(10)),
                heartbeat: Some(s(5)),
                ..Default::default()
            }),
            TimingError::HeartbeatTooLong {
                heartbeat: "5s".into(),
                lease: "10s".into()
            }
        );
        assert!(matches!(
            bad(TimingInput {
                lease: Some(s(10)),
                grace: Some(s(7)),
                ..Default::default()
            }),
            TimingError::NoRoom { .. }
        ));
        assert!(matches!(
            bad(TimingInput {
                lease: Some(s(10)),
                max_clock_skew: Some(s(5)),
                ..Default::default()
            }),
            TimingError::NoRoom { .. }
        ));
        let too_short = bad(TimingInput {
            lease: Some(Duration::from_millis(400)),
            ..Default::default()
        });
        assert_eq!(too_short, TimingError::LeaseTooShort("400ms".into()));
        assert!(too_short.to_string().contains("at least 1s"));
        assert_eq!(
            bad(TimingInput {
                heartbeat: Some(Duration::ZERO),
                ..Default::default()
            }),
            TimingError::Zero("--heartbeat")
        );
        assert!(matches!(
            bad(TimingInput {
                expire: Some(s(10)),
                ..Default::default()
            }),
            TimingError::ExpireNotAboveLease { .. }
        ));
        assert!(matches!(
            bad(TimingInput {
                min_hold: Some(s(90_000)),
                ..Default::default()
            }),
            TimingError::MinHoldAboveExpire { .. }
        ));
        // The shortest lease works with its defaults.
        assert!(Timing::new(TimingInput {
            lease: Some(MIN_LEASE),
            ..Default::default()
        })
        .is_ok());
    }

    /// Acquires `k` on the store and starts its lease, as the held lock does.
    async fn start(store: &MemoryStore, clock: &Clock, t: Timing) -> (Lease, LeaseEnd) {
        let sent = clock.now();
        let claim = Claim {
            key: "k".into(),
            owner: "me".into(),
            cluster: None,
            run: "run-1".into(),
            slot: None,
            now_ns: sent.wall_ns,
            expire_ns: sent.wall_ns + nanos(t.lease),
            deadline_ns: sent.wall_ns + nanos(t.expire),
        };
        let Acquire::Acquired {
            holding,
            expire_ns,
            deadline_ns,
            ..
        } = store.acquire(&claim).await.unwrap()
        else {
            panic!("not acquired")
        };
        let end = LeaseEnd::new(expire_ns, sent);
        let lease = Lease::start(
            Arc::new(store.clone()),
            holding,
            end,
            deadline_ns,
            t,
            clock.clone(),
        );
        (lease, end)
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_heartbeat_and_keeps_the_lease_ahead() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(3000);
        let (mut lease, _) = start(&store, &clock, t).await;
        tokio::select! {
            ev = lease.event() => panic!("unexpected {ev:?}"),
            _ = tokio::time::sleep(Duration::from_millis(10_500)) => {}
        }
        // The acquire, then one renewal a second: at 1, 2, … 10 s.
        assert_eq!(store.requests(), 11);
        let expire = store.item("k").unwrap().expire_ns.unwrap();
        assert_eq!(expire, T0 + 10_000_000_000 + 3_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn outage_stops_the_command_skew_and_margin_before_the_stored_end() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(3000);
        let (mut lease, _) = start(&store, &clock, t).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // The renewal at 2 s was the last one to get through.
        let last_expire = store.item("k").unwrap().expire_ns.unwrap();
        assert_eq!(last_expire, T0 + 5_000_000_000);
        store.set_mode(Mode::Hang);
        let stop = lease.event().await;
        assert_eq!(stop.why, StopWhy::Unrenewed);
        let at = |ns: i64| clock.now().instant_at(ns);
        // Lease 3 s: skew 300 ms, margin 150 ms, grace 1 s. SIGKILL at 5 - 0.45 = 4.55 s,
        // SIGTERM (this event) at 3.55 s: written out, not derived from the code.
        assert_eq!(stop.kill_at, at(T0 + 4_550_000_000));
        assert_eq!(Instant::now(), at(T0 + 3_550_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn down_store_is_retried_with_backoff_then_expires() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(30_000);
        let (mut lease, _) = start(&store, &clock, t).await;
        store.set_mode(Mode::Down);
        let stop = lease.event().await;
        assert_eq!(stop.why, StopWhy::Unrenewed);
        // SIGTERM due at 30 - 1 - 0.25 - 10 = 18.75 s; failures from 10 s, backing off from
        // 100 ms doubling to at most 2.5 s (±25%): between 7 and 12 attempts fit.
        let renewals = store.requests() - 1;
        assert!((7..=12).contains(&renewals), "{renewals} renewal attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn short_outage_is_retried_and_the_lease_kept() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(30_000);
        let (mut lease, _) = start(&store, &clock, t).await;
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        store.set_mode(Mode::Down);
        tokio::time::sleep(Duration::from_secs(2)).await;
        store.set_mode(Mode::Up);
        tokio::select! {
            ev = lease.event() => panic!("unexpected {ev:?}"),
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        let expire = store.item("k").unwrap().expire_ns.unwrap();
        assert!(
            expire > clock.now_ns() + 15_000_000_000,
            "renewed after the outage"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn revoked_lock_is_lost_with_sigkill_after_grace() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(3000);
        let (mut lease, _) = start(&store, &clock, t).await;
        let seen = store.item("k").unwrap();
        store
            .force(&seen, crate::lock::Force::Revoke, clock.now_ns())
            .await
            .unwrap();
        let stop = lease.event().await;
        assert_eq!(stop.why, StopWhy::Lost);
        // Noticed at the first renewal (1 s); SIGKILL a grace (1 s) later, at 2 s, which is
        // before the revoked lease's end (3 s) less skew and margin (2.55 s).
        assert_eq!(stop.kill_at, clock.now().instant_at(T0 + 2_000_000_000));
        assert_eq!(
            store.item("k").unwrap().expire_ns,
            Some(T0 + 3_000_000_000),
            "revoking keeps the lease end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hard_cap_stops_before_the_deadline_and_never_renews_past_it() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = Timing::new(TimingInput {
            lease: Some(Duration::from_secs(1)),
            expire: Some(Duration::from_secs(3)),
            ..Default::default()
        })
        .unwrap();
        let (mut lease, _) = start(&store, &clock, t).await;
        let stop = lease.event().await;
        assert_eq!(stop.why, StopWhy::HardCap);
        // Deadline 3 s; skew 100 ms, margin 50 ms: SIGKILL at 2.85 s.
        assert_eq!(stop.kill_at, clock.now().instant_at(T0 + 2_850_000_000));
        let item = store.item("k").unwrap();
        assert_eq!(item.expire_ns, item.deadline_ns);
    }

    #[tokio::test(start_paused = true)]
    async fn suspend_longer_than_the_lease_is_a_stop_with_sigkill_now() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(3000);
        let (mut lease, _) = start(&store, &clock, t).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // The machine sleeps for 10 s: the wall clock moves, the monotonic one does not.
        clock.step(10_000_000_000);
        let stop = lease.event().await;
        assert!(matches!(stop.why, StopWhy::ClockJump(_)), "{stop:?}");
        assert!(
            stop.kill_at <= Instant::now(),
            "the stored lease end has passed in real time: kill at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_task_dying_is_a_stop_not_silence() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(3000);
        let (mut lease, _) = start(&store, &clock, t).await;
        store.set_mode(Mode::RenewalsPanic);
        let stop = lease.event().await;
        assert_eq!(stop.why, StopWhy::TaskEnded);
        // It died at the first renewal (1 s): SIGKILL a grace later, before the lease end
        // (3 s) less skew and margin.
        assert_eq!(stop.kill_at, clock.now().instant_at(T0 + 2_000_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_behind_an_applied_one_is_retried_not_lost() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(3000);
        let (mut lease, _) = start(&store, &clock, t).await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        // An earlier renewal was applied though its answer was lost, and the clock then
        // stepped back 200 ms (within the 300 ms allowance): the next renewal is behind.
        let mut item = store.item("k").unwrap();
        item.expire_ns = Some(T0 + 3_500_000_000);
        store.put(item);
        clock.step(-200_000_000);
        tokio::select! {
            ev = lease.event() => panic!("unexpected {ev:?}"),
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        assert!(store.item("k").unwrap().expire_ns.unwrap() > clock.now_ns());
    }

    #[tokio::test(start_paused = true)]
    async fn late_renewal_cannot_move_the_stored_lease_end_back() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let t = timing(3000);
        let (_lease, _) = start(&store, &clock, t).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let item = store.item("k").unwrap();
        let holding = crate::lock::Holding {
            key: "k".into(),
            owner: "me".into(),
            run: "run-1".into(),
            fence: 1,
        };
        // A renewal sent at 0.5 s that the network delivered only now.
        let stale = T0 + 3_500_000_000;
        let r = store.renew(&holding, stale, Patience::Normal).await;
        assert!(matches!(r, Err(StoreError::Behind)), "{r:?}");
        assert_eq!(store.item("k").unwrap().expire_ns, item.expire_ns);
    }
}
