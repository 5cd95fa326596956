//! What a lock IS: the item stored per key, the requests a run makes, and the store trait.
//!
//! A key is held while its `expire` (Unix nanoseconds, the original Go tool's attribute and
//! unit) is a number not before the reader's clock. While a run holds it, the item carries
//! that run's random id (`run`); every write after the acquire is conditioned on that id,
//! the fence and the owner, so two runs can never renew or release each other's lock. The
//! stored lease end only moves forward while a run holds the key, so a late renewal can
//! never shorten it.
//!
//! Slots (`--slot` and friends) name a schedule occurrence: the item remembers the highest
//! slot whose run completed (`done_slot`), and a run for a slot at or below it skips.

pub(crate) mod dynamo;
#[cfg(test)]
pub(crate) mod memory;

use std::future::Future;
use std::time::Duration;

use crate::clock::{human_ns, rfc3339};

/// How long after a lock's hard cap DynamoDB's TTL may delete its item: no holder can
/// exist past its deadline, so deleting later than that never frees a live lock, and the
/// done slot outlives any late-firing cluster by a day.
pub(crate) const TTL_AFTER_DEADLINE_SECS: i64 = 24 * 60 * 60;

/// The largest fence or slot lock-exec takes or writes: below 2^53, so every JSON reader
/// (and every language's number type) gets it exactly.
pub(crate) const MAX_WHOLE: u64 = (1 << 53) - 1;

/// A numeric attribute that must be a whole number to be usable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Whole {
    /// Not in the item.
    #[default]
    Absent,
    /// A whole number from 0 to [`MAX_WHOLE`].
    Valid(u64),
    /// Present but unusable (wrong type, negative, fractional, too large): the raw value.
    Malformed(String),
}

impl Whole {
    /// The value, when valid.
    pub(crate) fn valid(&self) -> Option<u64> {
        match self {
            Whole::Valid(v) => Some(*v),
            _ => None,
        }
    }
}

/// A lock item as read from the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LockRecord {
    /// The locked key.
    pub(crate) key: String,
    /// Who holds or last held it (host or pod name); absent on items the Go tool wrote.
    pub(crate) owner: Option<String>,
    /// The holder's cluster name, when it gave one.
    pub(crate) cluster: Option<String>,
    /// The holding run's random id; removed when that run releases or is revoked.
    pub(crate) run: Option<String>,
    /// A `run` attribute is there but not a string: no run of lock-exec wrote it.
    pub(crate) run_malformed: bool,
    /// The fencing token: incremented by every acquisition of the key.
    pub(crate) fence: Whole,
    /// When the holder acquired it, Unix nanoseconds.
    pub(crate) acquired_ns: Option<i64>,
    /// End of the lease, Unix nanoseconds; the key is free once this has passed. `None`
    /// when absent or not a number: the acquire condition treats both as free.
    pub(crate) expire_ns: Option<i64>,
    /// The hard cap: acquisition + `--expire`, Unix nanoseconds.
    pub(crate) deadline_ns: Option<i64>,
    /// The slot the holding run was started for, when it gave one.
    pub(crate) slot: Option<u64>,
    /// When the last holder released it (its command had ended), Unix nanoseconds.
    pub(crate) released_ns: Option<i64>,
    /// When `unlock --force` revoked the holding run, Unix nanoseconds.
    pub(crate) revoked_ns: Option<i64>,
    /// The highest slot a run completed on this key.
    pub(crate) done_slot: Whole,
    /// Who completed it.
    pub(crate) done_by: Option<String>,
    /// That run's cluster.
    pub(crate) done_cluster: Option<String>,
    /// When it completed, Unix nanoseconds.
    pub(crate) done_ns: Option<i64>,
}

/// What holds a key, as an operator needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// No live lease.
    Free,
    /// A run's command is running (or being started) under the lease.
    Running,
    /// `unlock --force` revoked the run: its holder stops the command at its next renewal,
    /// and the key is free at the lease end, when the command is certainly dead.
    Revoked,
    /// The command has ended; the key is kept until the end of its `--min-hold`.
    MinHold,
    /// A lease without a run of lock-exec: written by the original Go tool (or by hand).
    Foreign,
}

impl LockRecord {
    /// Whether the lease is live on a clock reading `now_ns`; the inverse of the acquire
    /// condition `expire < :now` (a missing or non-numeric `expire` is no lease).
    pub(crate) fn is_held(&self, now_ns: i64) -> bool {
        self.expire_ns.is_some_and(|e| e >= now_ns)
    }

    /// What holds the key at `now_ns`.
    pub(crate) fn holder(&self, now_ns: i64) -> Holder {
        if !self.is_held(now_ns) {
            Holder::Free
        } else if self.run.is_some() {
            Holder::Running
        } else if self.revoked_ns.is_some() {
            Holder::Revoked
        } else if self.released_ns.is_some() {
            Holder::MinHold
        } else {
            Holder::Foreign
        }
    }

    /// Why no run can take this item as it is, if it is malformed: the same conditions the
    /// acquire writes, so `run`, `status` and `unlock` agree.
    pub(crate) fn malformed(&self) -> Option<String> {
        let mut what = Vec::new();
        if let Whole::Malformed(v) = &self.fence {
            what.push(format!("fence {v} is not a whole number"));
        }
        if let Whole::Malformed(v) = &self.done_slot {
            what.push(format!("done_slot {v} is not a whole number"));
        }
        if self.run_malformed {
            what.push("run is not a string".into());
        }
        (!what.is_empty()).then(|| what.join(", "))
    }

    /// Whether the completed slot rules out a run for `slot`.
    pub(crate) fn slot_done(&self, slot: u64) -> bool {
        self.done_slot.valid().is_some_and(|done| done >= slot)
    }

    /// The holder in one phrase for log and error messages.
    pub(crate) fn describe(&self, now_ns: i64) -> String {
        let mut s = match self.holder(now_ns) {
            Holder::Foreign if self.owner.is_none() => {
                "a lock without owner (written by the original Go tool or by hand)".to_string()
            }
            _ => format!("owner {}", self.owner.as_deref().unwrap_or("unknown")),
        };
        if let Some(c) = &self.cluster {
            s.push_str(&format!(", cluster {c}"));
        }
        if let Some(f) = self.fence.valid() {
            s.push_str(&format!(", fence {f}"));
        }
        if let Some(slot) = self.slot {
            s.push_str(&format!(", slot {slot}"));
        }
        if let Some(a) = self.acquired_ns {
            s.push_str(&format!(
                ", acquired {} ago",
                human_ns(now_ns.saturating_sub(a))
            ));
        }
        if let Some(e) = self.expire_ns {
            if e >= now_ns {
                s.push_str(&format!(
                    ", lease ends in {}",
                    human_ns(e.saturating_sub(now_ns))
                ));
            } else {
                s.push_str(&format!(
                    ", lease ended {} ago",
                    human_ns(now_ns.saturating_sub(e))
                ));
            }
        }
        s
    }

    /// The completed slot in one phrase, if any.
    pub(crate) fn describe_done(&self, now_ns: i64) -> Option<String> {
        let slot = self.done_slot.valid()?;
        let mut s = format!("slot {slot} done");
        if let Some(by) = &self.done_by {
            s.push_str(&format!(" by {by}"));
        }
        if let Some(c) = &self.done_cluster {
            s.push_str(&format!(" in cluster {c}"));
        }
        if let Some(at) = self.done_ns {
            s.push_str(&format!(
                " at {} ({} ago)",
                rfc3339(at),
                human_ns(now_ns - at)
            ));
        }
        Some(s)
    }

    /// The record as the JSON object `status --output json` and `list` print.
    pub(crate) fn to_json(&self, now_ns: i64) -> serde_json::Value {
        let time = |t: Option<i64>| t.map(rfc3339);
        let state = match self.holder(now_ns) {
            Holder::Free => "free",
            Holder::Running => "held",
            Holder::Revoked => "revoked",
            Holder::MinHold => "min-hold",
            Holder::Foreign => "held-foreign",
        };
        serde_json::json!({
            "key": self.key,
            "state": state,
            "held": self.is_held(now_ns),
            "owner": self.owner,
            "cluster": self.cluster,
            "fence": self.fence.valid(),
            "run": self.run,
            "slot": self.slot,
            "acquired_at": time(self.acquired_ns),
            "expires_at": time(self.expire_ns),
            "deadline": time(self.deadline_ns),
            "released_at": time(self.released_ns),
            "revoked_at": time(self.revoked_ns),
            "done_slot": self.done_slot.valid(),
            "done_by": self.done_by,
            "done_cluster": self.done_cluster,
            "done_at": time(self.done_ns),
            "malformed": self.malformed(),
        })
    }
}

/// Everything an acquire writes: who claims the key and until when.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// The key to lock.
    pub(crate) key: String,
    /// Host or pod name of the claimant.
    pub(crate) owner: String,
    /// Optional cluster name, for operators reading the table.
    pub(crate) cluster: Option<String>,
    /// A random id unique to this run, so a retried acquire can recognise its own item.
    pub(crate) run: String,
    /// The schedule occurrence this run is for, if any.
    pub(crate) slot: Option<u64>,
    /// The claimant's clock when the request is built, Unix nanoseconds.
    pub(crate) now_ns: i64,
    /// End of the first lease.
    pub(crate) expire_ns: i64,
    /// The hard cap.
    pub(crate) deadline_ns: i64,
}

impl Claim {
    /// What the claimant holds once the store has given it `fence`.
    pub(crate) fn holding(&self, fence: u64) -> Holding {
        Holding {
            key: self.key.clone(),
            owner: self.owner.clone(),
            run: self.run.clone(),
            fence,
        }
    }

    /// DynamoDB TTL value: Unix seconds, a day after the deadline.
    pub(crate) fn ttl_secs(&self) -> i64 {
        self.deadline_ns / 1_000_000_000 + TTL_AFTER_DEADLINE_SECS
    }
}

/// The identity of a held lock: what every later write is conditioned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holding {
    /// The key.
    pub(crate) key: String,
    /// The owner name written at acquisition.
    pub(crate) owner: String,
    /// This run's id.
    pub(crate) run: String,
    /// The fencing token this acquisition got.
    pub(crate) fence: u64,
}

/// The answer to an acquire.
// One value per request: boxing the refused record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The key is ours, with the lease end and deadline as stored in the table.
    Acquired {
        /// What later writes are conditioned on.
        holding: Holding,
        /// The lease end in the table (ours, or our lost earlier attempt's).
        expire_ns: i64,
        /// The hard cap in the table.
        deadline_ns: i64,
        /// The acquisition time in the table.
        acquired_ns: i64,
    },
    /// The key is not ours: held, its slot done, or its item malformed. The record as the
    /// store returned or read it, when there is one.
    Refused(Option<LockRecord>),
}

/// How a run gives the key back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Release {
    /// The new lease end: now, or the end of `--min-hold`.
    pub(crate) expire_ns: i64,
    /// When the release is made, Unix nanoseconds.
    pub(crate) now_ns: i64,
    /// The slot this run completed, recorded in the same write.
    pub(crate) done: Option<Done>,
    /// Whose lock the write is for.
    pub(crate) of: ReleaseOf,
}

/// A completed slot, as recorded on release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    /// The slot.
    pub(crate) slot: u64,
    /// The run's cluster, if any (the owner is the holding's).
    pub(crate) cluster: Option<String>,
}

/// Which lock a release writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseOf {
    /// Our live lock: conditioned on run, fence and owner.
    Own,
    /// Our acquisition after `unlock --force` revoked it, once our command is dead: frees
    /// the key before the revoked lease ends. Conditioned on the fence and the revocation.
    Revoked,
}

/// What a release found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// Written now.
    Done,
    /// An earlier attempt of the same release was applied and its answer lost.
    AlreadyDone,
}

/// What `unlock --force` is to do to the item it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Force {
    /// Revoke the running holder: remove its run id (its next renewal fails, it stops its
    /// command) but keep the lease end, so the key frees only when the command is dead.
    Revoke,
    /// End the lease now: nothing of lock-exec runs under it (min-hold, a Go tool's lock).
    EndLease,
    /// Rewrite unusable attributes (and end a lapsed lease's leftovers) so runs can take it.
    Repair,
}

/// Failures of the lock store, classified so users can act on them.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    /// A conditional write on our own lock failed: another run took it or it was revoked.
    #[error("the lock is no longer ours (it was taken over or force-unlocked)")]
    Lost,
    /// A renewal was refused because the stored lease end is already later (our own
    /// earlier renewal, applied though its answer was lost, with the clock since stepped
    /// back): still ours, the lease end unchanged.
    #[error("the stored lease end is later than this renewal's (an earlier renewal was applied)")]
    Behind,
    /// `unlock --force`: the item changed between the read and the write.
    #[error("the lock changed while unlocking it; nothing was changed (run unlock again to see its new state)")]
    Changed,
    /// The table does not exist.
    #[error("table '{table}' not found: create it with `lock-exec create-table -t {table}` (README: The table and IAM)")]
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
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use IRSA / EKS Pod Identity / an instance role ({detail})")]
    NoCredentials {
        /// What the credential chain said.
        detail: String,
    },
    /// A credential endpoint (EKS Pod Identity, ECS) answered with an error.
    #[error("the credential provider refused to hand out AWS credentials: {detail} (check the token file and the role association: EKS Pod Identity, IRSA)")]
    CredentialsRefused {
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
    /// The endpoint's TLS certificate was not accepted.
    #[error("TLS to the DynamoDB endpoint failed: {detail} (trust its CA with SSL_CERT_FILE or SSL_CERT_DIR)")]
    Tls {
        /// What the TLS stack said.
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
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::Throttled { .. }
                | StoreError::Other { .. }
        )
    }
}

/// How long a request may take in all, retries included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// The client's configured timeouts and retries.
    Normal,
    /// One attempt, answered within this time (renewals; a release after an outage).
    Once(Duration),
}

/// One page of a scan.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    /// The items of this page.
    pub(crate) records: Vec<LockRecord>,
    /// Where the next page starts, if there is one.
    pub(crate) next: Option<String>,
}

/// A lock table: one conditional write per step, nothing read before a write.
///
/// Futures are `Send` so the lease task can run on any runtime thread.
pub(crate) trait LockStore: Send + Sync + 'static {
    /// Takes the key if it is free (absent, or its lease lapsed on the claimant's clock),
    /// its item well-formed, and (with a slot) no slot at or above the claim's completed,
    /// incrementing its fence. A retried request whose first attempt won comes back as
    /// `Acquired`, recognised by the run id, with the lease end that attempt stored.
    fn acquire(&self, claim: &Claim) -> impl Future<Output = Result<Acquire, StoreError>> + Send;

    /// Moves the lease end of our lock forward to `expire_ns` in one attempt; `Err(Lost)`
    /// if the lock is no longer ours or the stored lease end is already later.
    fn renew(
        &self,
        holding: &Holding,
        expire_ns: i64,
        patience: Patience,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives the key back (see [`Release`]); `Err(Lost)` if it was not ours to release.
    fn release(
        &self,
        holding: &Holding,
        release: &Release,
        patience: Patience,
    ) -> impl Future<Output = Result<Released, StoreError>> + Send;

    /// Reads a key's record with a consistent read.
    fn get(&self, key: &str)
        -> impl Future<Output = Result<Option<LockRecord>, StoreError>> + Send;

    /// Applies `force` to the item, conditioned on its run and fence being as `seen`
    /// (`Err(Changed)` otherwise).
    fn force(
        &self,
        seen: &LockRecord,
        force: Force,
        now_ns: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the table's items whose key starts with `prefix`.
    fn scan(
        &self,
        prefix: &str,
        start: Option<String>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;
}

/// What `unlock` found, and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unlocked {
    /// There was no item for the key.
    NotLocked,
    /// No live lease and nothing to repair.
    AlreadyFree(LockRecord),
    /// A live lease, left alone (no `--force`).
    Refused(LockRecord),
    /// `--force` did this to the record as read.
    Forced(Force, LockRecord),
    /// `--force` on a revoked run: nothing to do until its lease ends.
    AlreadyRevoked(LockRecord),
}

/// `lock-exec unlock`: frees a key whose lease lapsed; a live lease only with `force`,
/// which never frees a key while a command of lock-exec may still run under it.
pub(crate) async fn unlock<S: LockStore>(
    store: &S,
    key: &str,
    force: bool,
    now_ns: i64,
) -> Result<Unlocked, StoreError> {
    let Some(record) = store.get(key).await? else {
        return Ok(Unlocked::NotLocked);
    };
    let action = match (record.holder(now_ns), force) {
        (Holder::Free, _) if record.malformed().is_none() => {
            return Ok(Unlocked::AlreadyFree(record))
        }
        (Holder::Free, false) => return Ok(Unlocked::Refused(record)),
        (Holder::Free, true) => Force::Repair,
        (_, false) => return Ok(Unlocked::Refused(record)),
        (Holder::Running, true) => Force::Revoke,
        (Holder::Revoked, true) => return Ok(Unlocked::AlreadyRevoked(record)),
        (Holder::MinHold | Holder::Foreign, true) => Force::EndLease,
    };
    store.force(&record, action.clone(), now_ns).await?;
    Ok(Unlocked::Forced(action, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expire: Option<i64>) -> LockRecord {
        LockRecord {
            key: "k".into(),
            owner: Some("pod-a".into()),
            fence: Whole::Valid(3),
            expire_ns: expire,
            ..Default::default()
        }
    }

    #[test]
    fn holder_follows_the_item() {
        let now = 1_000;
        assert_eq!(record(None).holder(now), Holder::Free);
        assert_eq!(record(Some(999)).holder(now), Holder::Free);
        let mut r = record(Some(1_000));
        assert_eq!(
            r.holder(now),
            Holder::Foreign,
            "expire == now is still held"
        );
        r.released_ns = Some(900);
        assert_eq!(r.holder(now), Holder::MinHold);
        r.revoked_ns = Some(950);
        assert_eq!(r.holder(now), Holder::Revoked);
        r.run = Some("x".into());
        assert_eq!(r.holder(now), Holder::Running);
    }

    #[test]
    fn malformed_and_done_slots_are_named() {
        let mut r = record(None);
        assert_eq!(r.malformed(), None);
        r.fence = Whole::Malformed("-5".into());
        r.done_slot = Whole::Malformed("\"soon\" (S)".into());
        let why = r.malformed().unwrap();
        assert!(
            why.contains("fence -5") && why.contains("done_slot"),
            "{why}"
        );
        r.done_slot = Whole::Valid(100);
        assert!(r.slot_done(100) && r.slot_done(99) && !r.slot_done(101));
    }

    #[test]
    fn describe_says_who_and_for_how_long() {
        let now = 10_000_000_000;
        let mut r = record(Some(now + 2_500_000_000));
        r.cluster = Some("east".into());
        r.acquired_ns = Some(now - 61_000_000_000);
        r.run = Some("x".into());
        assert_eq!(
            r.describe(now),
            "owner pod-a, cluster east, fence 3, acquired 1m01s ago, lease ends in 2.5s"
        );
        let go = LockRecord {
            key: "k".into(),
            expire_ns: Some(now + 1),
            ..Default::default()
        };
        assert!(go.describe(now).contains("original Go tool"));
    }
}
