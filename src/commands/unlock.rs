//! `lock-exec unlock`: free a lapsed key; a live lease only with `--force`.

use crate::clock::Clock;
use crate::error::Error;
use crate::exit::Outcome;
use crate::lock::{unlock as unlock_key, Force, Holder, LockStore, StoreError, Unlocked};

/// Frees `key`, or says why not; exit 1 when a live lease was left alone or the key
/// changed while unlocking.
pub(super) async fn unlock<S: LockStore>(
    store: &S,
    key: &str,
    force: bool,
) -> Result<Outcome, Error> {
    let now = Clock::system().now_ns();
    let unlocked = match unlock_key(store, key, force, now).await {
        Err(StoreError::Changed) => {
            tracing::error!(key, "{}", StoreError::Changed);
            return Ok(Outcome::Refused);
        }
        other => other?,
    };
    Ok(match unlocked {
        Unlocked::NotLocked => {
            tracing::info!(key, "key was not locked");
            Outcome::Done
        }
        Unlocked::AlreadyFree(r) => {
            tracing::info!(key, previous = %r.describe(now), "key was already free (its lease had lapsed)");
            Outcome::Done
        }
        Unlocked::Refused(r) => {
            let why = match r.holder(now) {
                Holder::Free => format!(
                    "the item is malformed ({}); unlock --force repairs it",
                    r.malformed().unwrap_or_default()
                ),
                Holder::Running => "a command runs under it; --force revokes it: the holder stops its command at its next renewal (exit 125) and the key is free when the lease ends".into(),
                Holder::Revoked => "it was revoked already; it is free when the lease ends".into(),
                Holder::MinHold => "it is kept by --min-hold after its command ended; --force frees it now".into(),
                Holder::Foreign => "a lock without a lock-exec run (the original Go tool's?); --force frees it now, but cannot stop a command that tool runs".into(),
            };
            tracing::error!(key, holder = %r.describe(now), "not unlocking a live lease: {why}");
            Outcome::Refused
        }
        Unlocked::AlreadyRevoked(r) => {
            tracing::warn!(key, holder = %r.describe(now),
                "already revoked: its holder stops its command at its next renewal; the key is free when the lease ends, not sooner");
            Outcome::Done
        }
        Unlocked::Forced(action, r) => {
            match action {
                Force::Revoke => tracing::warn!(key, holder = %r.describe(now),
                    "revoked the running holder: it stops its command at its next renewal (exit 125); the key is free when the command is dead, at the latest when the lease ends"),
                Force::EndLease if r.owner.is_none() => {
                    tracing::warn!(key, holder = %r.describe(now),
                    "freed a lock without a lock-exec run (the original Go tool's?); a command that tool still runs is NOT stopped")
                }
                Force::EndLease => tracing::warn!(key, holder = %r.describe(now),
                    "freed a key kept by --min-hold (no command was running)"),
                Force::Repair => tracing::warn!(key, was = %r.malformed().unwrap_or_default(),
                    "repaired the malformed item: the fence restarts from 0, a malformed done slot is removed"),
            }
            Outcome::Done
        }
    })
}
