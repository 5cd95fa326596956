//! What a lock IS: the record stored per key, the claim a run makes, and the store trait.
//!
//! A key is held while its `expire` (Unix nanoseconds, the original Go tool's attribute and
//! unit) is not before the reader's clock. Every write after the acquire is conditioned on
//! the exact run that acquired it (owner, fence and run id), so two runs can never renew or
//! release each other's lock, even when they share an owner name.

pub mod dynamo;
pub mod memory;

use std::future::Future;

use crate::clock::rfc3339;

/// How long after a lock's hard cap DynamoDB's TTL may delete its item: no holder can
/// exist past its deadline, so deleting later than that can never free a live lock.
pub const TTL_AFTER_DEADLINE_SECS: i64 = 24 * 60 * 60;

/// A lock item as read from the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockRecord {
    /// The locked key.
    pub key: String,
    /// Who holds or last held it (host or pod name); absent on items the Go tool wrote.
    pub owner: Option<String>,
    /// The holder's cluster name, when it gave one.
    pub cluster: Option<String>,
    /// The holding run's random id; absent once released by `unlock --force`.
    pub run: Option<String>,
    /// The fencing token: incremented by every acquisition of the key.
    pub fence: Option<u64>,
    /// When the holder acquired it, Unix nanoseconds.
    pub acquired_ns: Option<i64>,
    /// End of the current lease, Unix nanoseconds; the key is free once this has passed.
    pub expire_ns: Option<i64>,
    /// The hard cap: acquisition + `--expire`, Unix nanoseconds.
    pub deadline_ns: Option<i64>,
}

impl LockRecord {
    /// Whether the lease is live on a clock reading `now_ns`; the inverse of the acquire
    /// condition `expire < :now`.
    pub fn is_held(&self, now_ns: i64) -> bool {
        self.expire_ns.is_some_and(|e| e >= now_ns)
    }

    /// A one-line description of the holder for log and error messages.
    pub fn describe(&self, now_ns: i64) -> String {
        let owner = self
            .owner
            .as_deref()
            .unwrap_or("unknown (an item without owner, e.g. written by the original Go tool)");
        let mut s = format!("owner {owner}");
        if let Some(c) = &self.cluster {
            s.push_str(&format!(", cluster {c}"));
        }
        if let Some(f) = self.fence {
            s.push_str(&format!(", fence {f}"));
        }
        if let Some(a) = self.acquired_ns {
            s.push_str(&format!(", held for {}", age(now_ns - a)));
        }
        if let Some(e) = self.expire_ns {
            if e >= now_ns {
                s.push_str(&format!(", lease ends in {}", age(e - now_ns)));
            } else {
                s.push_str(&format!(", lease ended {} ago", age(now_ns - e)));
            }
        }
        s
    }

    /// The record as the JSON object `status --output json` prints.
    pub fn to_json(&self, key: &str, now_ns: i64) -> serde_json::Value {
        let time = |t: Option<i64>| t.map(rfc3339);
        serde_json::json!({
            "key": key,
            "state": if self.is_held(now_ns) { "held" } else { "free" },
            "owner": self.owner,
            "cluster": self.cluster,
            "fence": self.fence,
            "run": self.run,
            "acquired_at": time(self.acquired_ns),
            "expires_at": time(self.expire_ns),
            "deadline": time(self.deadline_ns),
        })
    }
}

/// Rounds a nanosecond span to a human-readable duration (milliseconds).
fn age(ns: i64) -> String {
    let ms = (ns.max(0) / 1_000_000) as u64;
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// Everything an acquire writes: who claims the key and until when.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The key to lock.
    pub key: String,
    /// Host or pod name of the claimant.
    pub owner: String,
    /// Optional cluster name, for operators reading the table.
    pub cluster: Option<String>,
    /// A random id unique to this run, so a retried acquire can recognise its own item.
    pub run: String,
    /// The claimant's clock when the request is built, Unix nanoseconds.
    pub now_ns: i64,
    /// End of the first lease.
    pub expire_ns: i64,
    /// The hard cap.
    pub deadline_ns: i64,
}

impl Claim {
    /// DynamoDB TTL value: Unix seconds, a day after the deadline.
    pub fn ttl_secs(&self) -> i64 {
        self.deadline_ns / 1_000_000_000 + TTL_AFTER_DEADLINE_SECS
    }
}

/// The identity of a held lock: what every later write is conditioned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The key.
    pub key: String,
    /// The owner name written at acquisition.
    pub owner: String,
    /// This run's id.
    pub run: String,
    /// The fencing token this acquisition got.
    pub fence: u64,
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The key is ours.
    Acquired(Holding),
    /// Someone else holds it; their record when the store could tell.
    Held(Option<LockRecord>),
}

/// What `unlock` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlocked {
    /// There was no item for the key.
    NotLocked,
    /// The item's lease had already lapsed: the key was free.
    AlreadyFree(LockRecord),
    /// A live lease was ended (`--force`).
    Released(LockRecord),
    /// A live lease was left alone (no `--force`).
    Refused(LockRecord),
}

/// Failures of the lock store, classified so users can act on them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A conditional write on our own lock failed: another run took it or it was unlocked.
    #[error("the lock is no longer ours (it was taken over or force-unlocked)")]
    Lost,
    /// The table does not exist.
    #[error("table '{table}' not found: create it with `lock-exec create-table -t {table}` or see README (Table set-up)")]
    TableNotFound {
        /// Table name.
        table: String,
    },
    /// The table's key schema is not a partition key `key` of type S.
    #[error("table '{table}' has the wrong key schema: its partition key must be `key` of type S (string) with no sort key ({detail})")]
    KeySchema {
        /// Table name.
        table: String,
        /// The server's message.
        detail: String,
    },
    /// IAM refused the call.
    #[error("access denied for dynamodb:{action} on table '{table}': grant it in the IAM policy (see deploy/iam/) ({detail})")]
    AccessDenied {
        /// The DynamoDB action that was refused.
        action: &'static str,
        /// Table name.
        table: String,
        /// The server's message.
        detail: String,
    },
    /// The credential chain found nothing usable.
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use IRSA / an instance role ({detail})")]
    NoCredentials {
        /// What the credential chain said.
        detail: String,
    },
    /// The credentials were rejected.
    #[error(
        "AWS rejected the credentials: check the access key, secret and session token ({detail})"
    )]
    BadCredentials {
        /// The server's message.
        detail: String,
    },
    /// The request could not reach the endpoint, or got no answer in time.
    #[error("DynamoDB unreachable: {detail} (check --endpoint-url / the region and the network)")]
    Unreachable {
        /// What failed.
        detail: String,
    },
    /// The server throttled us.
    #[error("DynamoDB throttled the request: {detail}")]
    Throttled {
        /// The server's message.
        detail: String,
    },
    /// Anything else, with the server's own words.
    #[error("DynamoDB {action} failed: {detail}")]
    Other {
        /// The DynamoDB action.
        action: &'static str,
        /// The error chain.
        detail: String,
    },
}

impl StoreError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::Throttled { .. }
                | StoreError::Other { .. }
        )
    }
}

/// A lock table: one conditional write per step, nothing read before a write.
///
/// Futures are `Send` so the lease task can run on any runtime thread.
pub trait LockStore: Send + Sync + 'static {
    /// Takes the key if it is free (absent, or its lease lapsed on the claimant's clock),
    /// incrementing its fence. A retried request whose first attempt won must come back as
    /// `Acquired`, recognised by the run id.
    fn acquire(&self, claim: &Claim) -> impl Future<Output = Result<Acquire, StoreError>> + Send;

    /// Moves the lease end of our lock to `expire_ns`; `Err(Lost)` if it is no longer ours.
    fn renew(
        &self,
        holding: &Holding,
        expire_ns: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends our lease by setting its end to `expire_ns` (now, or the end of `--min-hold`),
    /// keeping the item so the fence keeps increasing; `Err(Lost)` if it is not ours.
    fn release(
        &self,
        holding: &Holding,
        expire_ns: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads a key's record with a consistent read.
    fn get(&self, key: &str)
        -> impl Future<Output = Result<Option<LockRecord>, StoreError>> + Send;

    /// Ends whatever lease the key has, at `now_ns`, and forgets its run id so the holder's
    /// next renewal fails. Returns the record as it was, or `None` if there was no item.
    fn force_release(
        &self,
        key: &str,
        now_ns: i64,
    ) -> impl Future<Output = Result<Option<LockRecord>, StoreError>> + Send;
}

/// `lock-exec unlock`: releases a key that is free or lapsed; a live lease only with `force`.
pub async fn unlock<S: LockStore>(
    store: &S,
    key: &str,
    force: bool,
    now_ns: i64,
) -> Result<Unlocked, StoreError> {
    let Some(record) = store.get(key).await? else {
        return Ok(Unlocked::NotLocked);
    };
    if !record.is_held(now_ns) {
        return Ok(Unlocked::AlreadyFree(record));
    }
    if !force {
        return Ok(Unlocked::Refused(record));
    }
    match store.force_release(key, now_ns).await? {
        Some(old) => Ok(Unlocked::Released(old)),
        None => Ok(Unlocked::NotLocked),
    }
}
