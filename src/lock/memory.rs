//! An in-memory [`LockStore`] with DynamoDB's conditional-write semantics, for unit tests
//! of the lease and the run loop. It can also be told to fail or hang, as a network would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Acquire, Claim, Holding, LockRecord, LockStore, StoreError};

/// How the store answers, set by tests to simulate faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Answers normally.
    Up = 0,
    /// Every request fails at once as unreachable.
    Down = 1,
    /// Every request hangs forever (a network that stops answering).
    Hang = 2,
}

/// A lock table in a `HashMap`, shareable between tasks.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    /// Items by key.
    items: Arc<Mutex<HashMap<String, LockRecord>>>,
    /// The current [`Mode`], as its `u8`.
    mode: Arc<AtomicU8>,
    /// How many requests reached the store, to check "one request per step".
    requests: Arc<AtomicUsize>,
}

impl MemoryStore {
    /// An empty, answering store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes how the store answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Writes an item directly, as another tool (or the Go original) would.
    pub fn put(&self, record: LockRecord) {
        self.items
            .lock()
            .unwrap()
            .insert(record.key.clone(), record);
    }

    /// Reads an item directly.
    pub fn item(&self, key: &str) -> Option<LockRecord> {
        self.items.lock().unwrap().get(key).cloned()
    }

    /// Applies the current mode: counts the request, then fails or hangs as told.
    async fn gate(&self) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            0 => Ok(()),
            1 => Err(StoreError::Unreachable {
                detail: "memory store is down".into(),
            }),
            _ => std::future::pending().await,
        }
    }

    fn with_ours<T>(
        &self,
        h: &Holding,
        f: impl FnOnce(&mut LockRecord) -> T,
    ) -> Result<T, StoreError> {
        let mut items = self.items.lock().unwrap();
        match items.get_mut(&h.key) {
            Some(r)
                if r.run.as_deref() == Some(&h.run)
                    && r.fence == Some(h.fence)
                    && r.owner.as_deref() == Some(&h.owner) =>
            {
                Ok(f(r))
            }
            _ => Err(StoreError::Lost),
        }
    }
}

impl LockStore for MemoryStore {
    async fn acquire(&self, claim: &Claim) -> Result<Acquire, StoreError> {
        self.gate().await?;
        let mut items = self.items.lock().unwrap();
        let old = items.get(&claim.key).cloned();
        if let Some(old) = &old {
            // Same condition as DynamoDB: free when absent or `expire < :now`.
            if old.expire_ns.is_some_and(|e| e >= claim.now_ns) {
                if old.run.as_deref() == Some(&claim.run) {
                    return Ok(Acquire::Acquired(Holding {
                        key: claim.key.clone(),
                        owner: claim.owner.clone(),
                        run: claim.run.clone(),
                        fence: old.fence.unwrap_or(0),
                    }));
                }
                return Ok(Acquire::Held(Some(old.clone())));
            }
        }
        let fence = old.and_then(|o| o.fence).unwrap_or(0) + 1;
        items.insert(
            claim.key.clone(),
            LockRecord {
                key: claim.key.clone(),
                owner: Some(claim.owner.clone()),
                cluster: claim.cluster.clone(),
                run: Some(claim.run.clone()),
                fence: Some(fence),
                acquired_ns: Some(claim.now_ns),
                expire_ns: Some(claim.expire_ns),
                deadline_ns: Some(claim.deadline_ns),
            },
        );
        Ok(Acquire::Acquired(Holding {
            key: claim.key.clone(),
            owner: claim.owner.clone(),
            run: claim.run.clone(),
            fence,
        }))
    }

    async fn renew(&self, holding: &Holding, expire_ns: i64) -> Result<(), StoreError> {
        self.gate().await?;
        self.with_ours(holding, |r| r.expire_ns = Some(expire_ns))
    }

    async fn release(&self, holding: &Holding, expire_ns: i64) -> Result<(), StoreError> {
        self.gate().await?;
        self.with_ours(holding, |r| r.expire_ns = Some(expire_ns))
    }

    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        self.gate().await?;
        Ok(self.item(key))
    }

    async fn force_release(
        &self,
        key: &str,
        now_ns: i64,
    ) -> Result<Option<LockRecord>, StoreError> {
        self.gate().await?;
        let mut items = self.items.lock().unwrap();
        Ok(items.get_mut(key).map(|r| {
            let old = r.clone();
            r.expire_ns = Some(now_ns);
            r.run = None;
            old
        }))
    }
}
