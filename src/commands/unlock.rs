//! `lock-exec unlock`: release a free or lapsed key; a live lease only with `--force`.

use crate::clock::Clock;
use crate::error::Error;
use crate::exit;
use crate::lock::{unlock as unlock_key, LockStore, Unlocked};

/// Releases `key`; exit 1 when a live lease was left alone.
pub async fn unlock<S: LockStore>(store: &S, key: &str, force: bool) -> Result<u8, Error> {
    let now = Clock::system().now_ns();
    match unlock_key(store, key, force, now).await? {
        Unlocked::NotLocked => {
            tracing::info!(key, "key was not locked");
            Ok(exit::SUCCESS)
        }
        Unlocked::AlreadyFree(r) => {
            tracing::info!(key, previous = %r.describe(now), "key was already free (its lease had lapsed)");
            Ok(exit::SUCCESS)
        }
        Unlocked::Released(r) => {
            tracing::warn!(key, holder = %r.describe(now),
                "force-released a live lease; its holder stops its command at its next heartbeat");
            Ok(exit::SUCCESS)
        }
        Unlocked::Refused(r) => {
            tracing::error!(key, holder = %r.describe(now),
                "key is held by a live lease; not releasing it (use --force to release it anyway, which stops the holder's command)");
            Ok(exit::HELD)
        }
    }
}
