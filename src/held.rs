//! The held lock: one value from acquisition to release.
//!
//! [`HeldLock::try_acquire`] returns it; it owns the store handle, the holding, the claim's
//! times, the clock, the timing and the heartbeat task. The run loop asks it for lease
//! stops ([`HeldLock::stop`]) and gives it back once with [`HeldLock::release`], saying
//! how the run ended; the [`Ending`] decides what the release writes (min-hold, the
//! completed slot, how patiently, or nothing at all). Dropping it stops the heartbeat.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{nanos, rfc3339, Clock};
use crate::exit::ChildStatus;
use crate::lease::{jitter, Lease, LeaseEnd, Stop, StopWhy, Timing};
use crate::lock::{
    Acquire, Claim, Done, Holding, LockRecord, LockStore, Patience, Release, ReleaseOf, Released,
    StoreError,
};

/// What a run asks for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The key to lock.
    pub(crate) key: String,
    /// Our owner name (host or pod name).
    pub(crate) owner: String,
    /// Our cluster name, if given.
    pub(crate) cluster: Option<String>,
    /// The schedule occurrence this run is for, if any.
    pub(crate) slot: Option<Slot>,
    /// Lease settings.
    pub(crate) timing: Timing,
}

/// A schedule occurrence and when a run completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The occurrence: by convention, its scheduled time in minutes since the Unix epoch.
    pub(crate) n: u64,
    /// Only an exit 0 completes it (`--retry-failed-slot`); otherwise any exit does.
    pub(crate) retry_failed: bool,
}

/// The result of one acquire.
pub(crate) enum Attempt<S: LockStore> {
    /// The key is ours.
    Acquired(HeldLock<S>),
    /// It is not: the record as the store saw it, when it could tell.
    Refused(Option<LockRecord>),
}

/// How the run ended, as far as the lock is concerned. Every ending needs the command,
/// and everything it left behind, to be dead already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The command ended by itself: min-hold applies and the slot may be completed.
    Finished(ChildStatus),
    /// lock-exec stopped the command for a shutdown signal, or never started it.
    Stopped,
    /// The lease required the command to stop.
    Fenced(StopWhy),
}

/// What the release did, for the run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseReport {
    /// The key is free from `free_at_ns` (now, or the end of min-hold).
    Released {
        /// When the key is free, Unix nanoseconds.
        free_at_ns: i64,
        /// The slot recorded as done, if any.
        done_slot: Option<u64>,
    },
    /// The lock was not ours any more: nothing was written.
    NotOurs,
    /// The store did not answer; the key frees itself when the lease ends.
    Failed,
}

/// The lock, while this run holds it.
pub(crate) struct HeldLock<S: LockStore> {
    /// The table.
    store: Arc<S>,
    /// What every write is conditioned on.
    holding: Holding,
    /// The acquisition time in the table, Unix ns (min-hold counts from it).
    acquired_ns: i64,
    /// The hard cap in the table, Unix ns.
    deadline_ns: i64,
    /// Our cluster, recorded with a completed slot.
    cluster: Option<String>,
    /// The slot this run is for.
    slot: Option<Slot>,
    /// The clock every stored time is read from.
    clock: Clock,
    /// Lease settings.
    timing: Timing,
    /// The heartbeat task.
    lease: Lease,
}

impl<S: LockStore> HeldLock<S> {
    /// Makes one acquire for `req` as run `run_id`, and on success starts the heartbeat.
    pub(crate) async fn try_acquire(
        store: &Arc<S>,
        req: &Request,
        run_id: &str,
        clock: &Clock,
    ) -> Result<Attempt<S>, StoreError> {
        let t = req.timing;
        let sent = clock.now();
        let claim = Claim {
            key: req.key.clone(),
            owner: req.owner.clone(),
            cluster: req.cluster.clone(),
            run: run_id.to_string(),
            slot: req.slot.map(|s| s.n),
            now_ns: sent.wall_ns,
            expire_ns: sent.wall_ns.saturating_add(nanos(t.lease)),
            deadline_ns: sent.wall_ns.saturating_add(nanos(t.expire)),
        };
        let (holding, expire_ns, deadline_ns, acquired_ns) = match store.acquire(&claim).await? {
            Acquire::Acquired {
                holding,
                expire_ns,
                deadline_ns,
                acquired_ns,
            } => (holding, expire_ns, deadline_ns, acquired_ns),
            Acquire::Refused(record) => return Ok(Attempt::Refused(record)),
        };
        // The lease end the table holds (ours, or our lost earlier attempt's), mapped from
        // before the send: never later than the truth.
        let mut end = LeaseEnd::new(expire_ns, sent);
        // The write that stored this lease end was sent a lease before it. An answer that
        // came late (or our lost earlier attempt's lease, recognised) may leave too little
        // of it for the stop sequence: renew before the command starts, or give the key
        // back and let the caller try again.
        let written = end.mono.checked_sub(t.lease).unwrap_or(sent.mono);
        if clock.now().mono >= written + t.heartbeat {
            let now = clock.now();
            let renewed = now.wall_ns.saturating_add(nanos(t.lease)).min(deadline_ns);
            match store
                .renew(&holding, renewed, Patience::Once(t.attempt_limit()))
                .await
            {
                Ok(()) => end = LeaseEnd::new(renewed, now),
                Err(StoreError::Lost) => return Ok(Attempt::Refused(None)),
                Err(e) => {
                    let release = Release {
                        expire_ns: now.wall_ns,
                        now_ns: now.wall_ns,
                        done: None,
                        of: ReleaseOf::Own,
                    };
                    let _ = store
                        .release(&holding, &release, Patience::Once(t.heartbeat))
                        .await;
                    return Err(e);
                }
            }
        }
        let lease = Lease::start(
            store.clone(),
            holding.clone(),
            end,
            deadline_ns,
            t,
            clock.clone(),
        );
        Ok(Attempt::Acquired(HeldLock {
            store: store.clone(),
            holding,
            acquired_ns,
            deadline_ns,
            cluster: req.cluster.clone(),
            slot: req.slot,
            clock: clock.clone(),
            timing: t,
            lease,
        }))
    }

    /// What later writes are conditioned on (the key, owner, run and fence).
    pub(crate) fn holding(&self) -> &Holding {
        &self.holding
    }

    /// The hard cap, Unix nanoseconds.
    pub(crate) fn deadline_ns(&self) -> i64 {
        self.deadline_ns
    }

    /// When the command (and what it left) must be dead at the latest, by the lease as
    /// last renewed.
    pub(crate) fn kill_at(&self) -> tokio::time::Instant {
        self.lease.end().kill_at(self.clock.now(), &self.timing)
    }

    /// A stop the lease has already reported, without waiting.
    pub(crate) fn stopped(&mut self) -> Option<Stop> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(self.lease.event()).poll(&mut cx) {
            std::task::Poll::Ready(stop) => Some(stop),
            std::task::Poll::Pending => None,
        }
    }

    /// The next time the lease requires the command to stop. Cancel-safe; after one stop
    /// it stays pending.
    pub(crate) async fn stop(&mut self) -> Stop {
        self.lease.event().await
    }

    /// Gives the lock back. The heartbeat stops first; the ending decides the write.
    pub(crate) async fn release(self, ending: Ending) -> ReleaseReport {
        let HeldLock {
            store,
            holding,
            acquired_ns,
            cluster,
            slot,
            clock,
            timing: t,
            lease,
            ..
        } = self;
        let now_ns = clock.now_ns();
        let (of, expire_ns, done) = match ending {
            Ending::Finished(status) => {
                let min_hold_end = acquired_ns.saturating_add(nanos(t.min_hold));
                let done = slot
                    .filter(|s| !s.retry_failed || status == ChildStatus::Exited(0))
                    .map(|s| Done {
                        slot: s.n,
                        cluster: cluster.clone(),
                    });
                (ReleaseOf::Own, now_ns.max(min_hold_end), done)
            }
            // Revoked (or taken): our command is dead, so a revoked lease may end now.
            Ending::Fenced(StopWhy::Lost) => (ReleaseOf::Revoked, now_ns, None),
            Ending::Stopped | Ending::Fenced(_) => (ReleaseOf::Own, now_ns, None),
        };
        let release = Release {
            expire_ns,
            now_ns,
            done: done.clone(),
            of,
        };
        let key = &holding.key;
        // Retried until the lease's kill point: the run id is surely ours until then, and
        // a completed slot that is not written lets another cluster run the occurrence
        // again. The heartbeat stays alive meanwhile (after a normal end it keeps the
        // lease, and that point, moving); it is dropped once the release is done.
        let mut delay = Duration::from_millis(200);
        let result = loop {
            let now = clock.now();
            let left = lease
                .end()
                .kill_at(now, &t)
                .saturating_duration_since(now.mono);
            // Attempts as short as renewals', so several fit; at least one, however late.
            let limit = t
                .attempt_limit()
                .clamp(Duration::from_millis(500), Duration::from_secs(5))
                .min(left.max(Duration::from_millis(500)));
            match store
                .release(&holding, &release, Patience::Once(limit))
                .await
            {
                Err(e) if e.is_transient() && limit + delay < left => {
                    tracing::warn!(key = %key, error = %e, "release failed; retrying while the lease lasts");
                    tokio::time::sleep(jitter(delay, 0.25)).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => break other,
            }
        };
        drop(lease);
        match result {
            Ok(how) => {
                // Only said when it happened: the retry found our own applied release.
                let answer_lost = (how == Released::AlreadyDone).then_some(true);
                match (&done, expire_ns > now_ns) {
                    (Some(d), _) => {
                        tracing::info!(key = %key, fence = holding.fence, slot = d.slot,
                        free_at = %rfc3339(expire_ns), answer_lost, "lock released; slot recorded as done")
                    }
                    (None, true) => tracing::info!(key = %key, fence = holding.fence,
                        free_at = %rfc3339(expire_ns), answer_lost, "lock released; held until --min-hold ends"),
                    (None, false) if of == ReleaseOf::Revoked => {
                        tracing::info!(key = %key, fence = holding.fence,
                        "revoked lock freed: the command is dead")
                    }
                    (None, false) => {
                        tracing::info!(key = %key, fence = holding.fence, answer_lost, "lock released")
                    }
                }
                ReleaseReport::Released {
                    free_at_ns: expire_ns,
                    done_slot: done.map(|d| d.slot),
                }
            }
            Err(StoreError::Lost) => {
                if of == ReleaseOf::Own {
                    tracing::warn!(key = %key, fence = holding.fence,
                        "lock was no longer ours at release (taken over or force-unlocked); nothing written");
                }
                ReleaseReport::NotOurs
            }
            Err(e) => {
                tracing::error!(key = %key, fence = holding.fence, error = %e,
                    "could not release the lock; it frees itself when its lease ends");
                if let Some(d) = &done {
                    tracing::error!(key = %key, slot = d.slot,
                        "the slot was NOT recorded as done: a waiting or later cluster may run this occurrence again");
                }
                ReleaseReport::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! What each ending writes, on the in-memory store with paused time.

    use super::*;
    use crate::lease::TimingInput;
    use crate::lock::memory::MemoryStore;
    use crate::lock::{Force, Whole};

    const T0: i64 = 1_700_000_000_000_000_000;
    const S: i64 = 1_000_000_000;

    fn request(slot: Option<Slot>, min_hold_s: u64) -> Request {
        Request {
            key: "k".into(),
            owner: "pod-a".into(),
            cluster: Some("east".into()),
            slot,
            timing: Timing::new(TimingInput {
                lease: Some(Duration::from_secs(30)),
                min_hold: Some(Duration::from_secs(min_hold_s)),
                ..Default::default()
            })
            .unwrap(),
        }
    }

    async fn acquire(store: &MemoryStore, clock: &Clock, req: &Request) -> HeldLock<MemoryStore> {
        match HeldLock::try_acquire(&Arc::new(store.clone()), req, "run-1", clock)
            .await
            .unwrap()
        {
            Attempt::Acquired(lock) => lock,
            Attempt::Refused(r) => panic!("refused: {r:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn finished_run_honours_min_hold_and_completes_its_slot() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let slot = Slot {
            n: 100,
            retry_failed: false,
        };
        let lock = acquire(&store, &clock, &request(Some(slot), 60)).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let report = lock.release(Ending::Finished(ChildStatus::Exited(3))).await;
        assert_eq!(
            report,
            ReleaseReport::Released {
                free_at_ns: T0 + 60 * S,
                done_slot: Some(100)
            }
        );
        let item = store.item("k").unwrap();
        assert_eq!(
            item.expire_ns,
            Some(T0 + 60 * S),
            "held until min-hold ends"
        );
        assert_eq!(item.run, None, "late renewals can no longer match");
        assert_eq!(item.released_ns, Some(T0 + 5 * S));
        assert_eq!(item.done_slot, Whole::Valid(100));
        assert_eq!(item.done_by.as_deref(), Some("pod-a"));
        assert_eq!(item.done_cluster.as_deref(), Some("east"));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_run_completes_its_slot_only_without_retry_failed() {
        for (retry_failed, done) in [(false, Whole::Valid(7)), (true, Whole::Absent)] {
            let store = MemoryStore::new();
            let clock = Clock::test(T0);
            let slot = Slot { n: 7, retry_failed };
            let lock = acquire(&store, &clock, &request(Some(slot), 0)).await;
            lock.release(Ending::Finished(ChildStatus::Exited(1))).await;
            assert_eq!(store.item("k").unwrap().done_slot, done, "{retry_failed}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stopped_or_fenced_runs_release_now_without_min_hold_or_slot() {
        for ending in [
            Ending::Stopped,
            Ending::Fenced(StopWhy::HardCap),
            Ending::Fenced(StopWhy::Unrenewed),
        ] {
            let store = MemoryStore::new();
            let clock = Clock::test(T0);
            let slot = Slot {
                n: 7,
                retry_failed: false,
            };
            let lock = acquire(&store, &clock, &request(Some(slot), 60)).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            lock.release(ending).await;
            let item = store.item("k").unwrap();
            assert_eq!(item.expire_ns, Some(T0 + 2 * S), "{ending:?}");
            assert_eq!(item.done_slot, Whole::Absent, "{ending:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn revoked_run_frees_the_key_once_its_command_is_dead() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let mut lock = acquire(&store, &clock, &request(None, 0)).await;
        let seen = store.item("k").unwrap();
        store.force(&seen, Force::Revoke, T0).await.unwrap();
        assert_eq!(
            store.item("k").unwrap().expire_ns,
            Some(T0 + 30 * S),
            "revoking keeps the lease end"
        );
        let stop = lock.stop().await;
        assert_eq!(stop.why, StopWhy::Lost);
        // The command is dead: the revoked lease may end now, not at its end.
        let now = clock.now_ns();
        assert_eq!(
            lock.release(Ending::Fenced(StopWhy::Lost)).await,
            ReleaseReport::Released {
                free_at_ns: now,
                done_slot: None
            }
        );
        assert_eq!(store.item("k").unwrap().expire_ns, Some(now));
    }

    #[tokio::test(start_paused = true)]
    async fn taken_over_run_writes_nothing() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let lock = acquire(&store, &clock, &request(None, 0)).await;
        // Another holder, after an outage, at a later fence.
        let mut other = store.item("k").unwrap();
        other.run = Some("run-2".into());
        other.fence = Whole::Valid(2);
        other.expire_ns = Some(T0 + 100 * S);
        store.put(other.clone());
        assert_eq!(
            lock.release(Ending::Fenced(StopWhy::Lost)).await,
            ReleaseReport::NotOurs
        );
        assert_eq!(store.item("k").unwrap(), other);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_acquire_answer_is_renewed_before_the_command_starts() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let req = request(None, 0);
        drop(acquire(&store, &clock, &req).await);
        // The same run tries again 20 s later (its first answer was lost): its stored
        // lease has 10 s left, less than the stop sequence needs, so it is renewed first.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let mut again = acquire(&store, &clock, &req).await;
        let stored = store.item("k").unwrap().expire_ns.unwrap();
        assert_eq!(stored, T0 + 50 * S, "renewed from now");
        store.set_mode(crate::lock::memory::Mode::Hang);
        let stop = again.stop().await;
        // SIGKILL 1.25 s before the lease end in the table, never after it.
        assert_eq!(stop.kill_at, clock.now().instant_at(stored - 1_250_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_acquire_answer_without_a_renewal_does_not_start_the_command() {
        let store = MemoryStore::new();
        let clock = Clock::test(T0);
        let req = request(None, 0);
        drop(acquire(&store, &clock, &req).await);
        tokio::time::sleep(Duration::from_secs(20)).await;
        store.set_mode(crate::lock::memory::Mode::RenewalsDown);
        let again = HeldLock::try_acquire(&Arc::new(store.clone()), &req, "run-1", &clock).await;
        assert!(matches!(again, Err(StoreError::Unreachable { .. })));
        // Recognised, not renewed, and given back at once.
        let item = store.item("k").unwrap();
        assert_eq!(item.fence, Whole::Valid(1));
        assert_eq!(item.expire_ns, Some(T0 + 20 * S));
        assert_eq!(item.run, None);
    }
}
