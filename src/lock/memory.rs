//! An in-memory [`LockStore`] with the DynamoDB store's conditions, for unit tests of the
//! lease, the held lock and the run loop. It can be told to fail or hang, as a network
//! would. Compiled for tests only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{
    Acquire, Claim, Force, Holding, LockRecord, LockStore, Page, Patience, Release, ReleaseOf,
    Released, StoreError, Whole,
};

/// How the store answers, set by tests to simulate faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Answers normally.
    Up = 0,
    /// Every request fails at once as unreachable.
    Down = 1,
    /// Every request hangs (a network that stops answering) until its patience runs out.
    Hang = 2,
    /// Renewals fail at once as unreachable; everything else answers.
    RenewalsDown = 3,
    /// Renewals panic, as a bug in the heartbeat task would.
    RenewalsPanic = 4,
}

/// A lock table in a `HashMap`, shareable between tasks.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryStore {
    /// Items by key.
    items: Arc<Mutex<HashMap<String, LockRecord>>>,
    /// The current [`Mode`], as its `u8`.
    mode: Arc<AtomicU8>,
    /// How many requests reached the store, to check "one request per step".
    requests: Arc<AtomicUsize>,
}

impl MemoryStore {
    /// An empty, answering store.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Changes how the store answers from now on.
    pub(crate) fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Writes an item directly, as another tool (or the Go original) would.
    pub(crate) fn put(&self, record: LockRecord) {
        self.items
            .lock()
            .unwrap()
            .insert(record.key.clone(), record);
    }

    /// Reads an item directly.
    pub(crate) fn item(&self, key: &str) -> Option<LockRecord> {
        self.items.lock().unwrap().get(key).cloned()
    }

    /// Applies the current mode: counts the request, then fails or hangs as told.
    async fn gate(&self, patience: Patience) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            0 | 3 | 4 => Ok(()),
            1 => Err(StoreError::Unreachable {
                detail: "memory store is down".into(),
            }),
            _ => match patience {
                Patience::Once(limit) => {
                    tokio::time::sleep(limit).await;
                    Err(StoreError::Unreachable {
                        detail: "no answer in time (memory store hangs)".into(),
                    })
                }
                Patience::Normal => std::future::pending().await,
            },
        }
    }

    fn is_ours(r: &LockRecord, h: &Holding) -> bool {
        r.run.as_deref() == Some(&h.run)
            && r.fence == Whole::Valid(h.fence)
            && r.owner.as_deref() == Some(&h.owner)
    }
}

impl LockStore for MemoryStore {
    async fn acquire(&self, claim: &Claim) -> Result<Acquire, StoreError> {
        self.gate(Patience::Normal).await?;
        let mut items = self.items.lock().unwrap();
        let old = items.get(&claim.key).cloned();
        if let Some(old) = &old {
            let free = old.expire_ns.is_none_or(|e| e < claim.now_ns);
            let fence_ok = !matches!(old.fence, Whole::Malformed(_));
            let slot_ok = claim.slot.is_none_or(|s| match &old.done_slot {
                Whole::Absent => true,
                Whole::Valid(d) => *d < s,
                Whole::Malformed(_) => false,
            });
            if !(free && fence_ok && slot_ok) {
                if old.run.as_deref() == Some(&claim.run) {
                    return Ok(Acquire::Acquired {
                        holding: claim.holding(old.fence.valid().unwrap_or(0)),
                        expire_ns: old.expire_ns.unwrap_or(claim.now_ns),
                        deadline_ns: old.deadline_ns.unwrap_or(claim.deadline_ns),
                        acquired_ns: old.acquired_ns.unwrap_or(claim.now_ns),
                    });
                }
                return Ok(Acquire::Refused(Some(old.clone())));
            }
        }
        let old = old.unwrap_or_default();
        let fence = old.fence.valid().unwrap_or(0) + 1;
        items.insert(
            claim.key.clone(),
            LockRecord {
                key: claim.key.clone(),
                owner: Some(claim.owner.clone()),
                cluster: claim.cluster.clone(),
                run: Some(claim.run.clone()),
                fence: Whole::Valid(fence),
                acquired_ns: Some(claim.now_ns),
                expire_ns: Some(claim.expire_ns),
                deadline_ns: Some(claim.deadline_ns),
                slot: claim.slot,
                released_ns: None,
                revoked_ns: None,
                ..old
            },
        );
        Ok(Acquire::Acquired {
            holding: claim.holding(fence),
            expire_ns: claim.expire_ns,
            deadline_ns: claim.deadline_ns,
            acquired_ns: claim.now_ns,
        })
    }

    async fn renew(
        &self,
        holding: &Holding,
        expire_ns: i64,
        patience: Patience,
    ) -> Result<(), StoreError> {
        self.gate(patience).await?;
        if self.mode.load(Ordering::SeqCst) == Mode::RenewalsPanic as u8 {
            panic!("memory store: renewal panics (test)");
        }
        if self.mode.load(Ordering::SeqCst) == Mode::RenewalsDown as u8 {
            return Err(StoreError::Unreachable {
                detail: "memory store refuses renewals".into(),
            });
        }
        let mut items = self.items.lock().unwrap();
        match items.get_mut(&holding.key) {
            Some(r) if Self::is_ours(r, holding) && r.expire_ns.is_some_and(|e| e <= expire_ns) => {
                r.expire_ns = Some(expire_ns);
                Ok(())
            }
            Some(r) if Self::is_ours(r, holding) => Err(StoreError::Behind),
            _ => Err(StoreError::Lost),
        }
    }

    async fn release(
        &self,
        holding: &Holding,
        release: &Release,
        patience: Patience,
    ) -> Result<Released, StoreError> {
        self.gate(patience).await?;
        let mut items = self.items.lock().unwrap();
        let Some(r) = items.get_mut(&holding.key) else {
            return Err(StoreError::Lost);
        };
        match release.of {
            ReleaseOf::Own if Self::is_ours(r, holding) => {
                r.expire_ns = Some(release.expire_ns);
                r.released_ns = Some(release.now_ns);
                r.run = None;
                if let Some(done) = &release.done {
                    r.done_slot = Whole::Valid(done.slot);
                    r.done_by = Some(holding.owner.clone());
                    r.done_cluster = done.cluster.clone();
                    r.done_ns = Some(release.now_ns);
                }
                Ok(Released::Done)
            }
            ReleaseOf::Revoked
                if r.fence == Whole::Valid(holding.fence)
                    && r.run.is_none()
                    && r.revoked_ns.is_some()
                    && r.expire_ns.is_some_and(|e| e > release.expire_ns) =>
            {
                r.expire_ns = Some(release.expire_ns);
                Ok(Released::Done)
            }
            _ => Err(StoreError::Lost),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        self.gate(Patience::Normal).await?;
        Ok(self.item(key))
    }

    async fn force(&self, seen: &LockRecord, force: Force, now_ns: i64) -> Result<(), StoreError> {
        self.gate(Patience::Normal).await?;
        let mut items = self.items.lock().unwrap();
        let Some(r) = items.get_mut(&seen.key) else {
            return Err(StoreError::Changed);
        };
        let fence_same = match (&seen.fence, &r.fence) {
            (Whole::Malformed(_), Whole::Malformed(_)) => true,
            (a, b) => a == b,
        };
        let live = r.expire_ns.is_some_and(|e| e >= now_ns);
        if !fence_same || r.run != seen.run || (force != Force::Repair && !live) {
            return Err(StoreError::Changed);
        }
        match force {
            Force::Revoke => {
                r.run = None;
                r.revoked_ns = Some(now_ns);
            }
            Force::EndLease => r.expire_ns = Some(now_ns),
            Force::Repair => {}
        }
        if matches!(r.fence, Whole::Malformed(_)) {
            r.fence = Whole::Valid(0);
        }
        if matches!(r.done_slot, Whole::Malformed(_)) {
            r.done_slot = Whole::Absent;
        }
        r.run_malformed = false;
        Ok(())
    }

    async fn scan(&self, prefix: &str, start: Option<String>) -> Result<Page, StoreError> {
        self.gate(Patience::Normal).await?;
        let items = self.items.lock().unwrap();
        let mut records: Vec<LockRecord> = items
            .values()
            .filter(|r| r.key.starts_with(prefix))
            .filter(|r| start.as_ref().is_none_or(|s| r.key > *s))
            .cloned()
            .collect();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        // Two items a page, so tests see pagination.
        let next = (records.len() > 2).then(|| records[1].key.clone());
        records.truncate(2);
        Ok(Page { records, next })
    }
}
