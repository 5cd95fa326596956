//! `lock-exec status`: who holds a key, as text or JSON on stdout.

use super::print;
use crate::cli::Output;
use crate::clock::{rfc3339, Clock};
use crate::error::Error;
use crate::exit::Outcome;
use crate::lock::{Holder, LockRecord, LockStore};

/// Prints the key's state; exit 0 whether it is held or free.
pub(super) async fn status<S: LockStore>(
    store: &S,
    key: &str,
    output: Output,
) -> Result<Outcome, Error> {
    let now = Clock::system().now_ns();
    let record = store.get(key).await?;
    match output {
        Output::Json => {
            let r = record.unwrap_or_else(|| LockRecord {
                key: key.to_string(),
                ..Default::default()
            });
            print(&r.to_json(now).to_string());
        }
        Output::Text => print(&match record {
            None => format!("{key}: free (never locked, or its item expired)"),
            Some(r) => describe(&r, now),
        }),
    }
    Ok(Outcome::Done)
}

/// One line on a key's state, for `status` and `list`.
pub(super) fn describe(r: &LockRecord, now: i64) -> String {
    let key = &r.key;
    let mut line = match r.holder(now) {
        Holder::Free => format!("{key}: free (last {})", r.describe(now)),
        Holder::Running => format!(
            "{key}: held by {}; hard cap {}",
            r.describe(now),
            r.deadline_ns.map(rfc3339).unwrap_or_else(|| "unknown".into())
        ),
        Holder::Revoked => format!(
            "{key}: revoked by unlock --force (its holder stops its command at its next renewal); free when the lease ends: {}",
            r.describe(now)
        ),
        Holder::MinHold => format!(
            "{key}: held by --min-hold after the command ended (no command runs): {}",
            r.describe(now)
        ),
        Holder::Foreign => format!("{key}: held by {}", r.describe(now)),
    };
    if let Some(done) = r.describe_done(now) {
        line.push_str(&format!("; {done}"));
    }
    if let Some(what) = r.malformed() {
        line.push_str(&format!(
            "; MALFORMED ({what}): repair with lock-exec unlock --force"
        ));
    }
    line
}
