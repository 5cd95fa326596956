//! `lock-exec status`: who holds a key, as text or JSON on stdout.

use crate::cli::Output;
use crate::clock::{rfc3339, Clock};
use crate::error::Error;
use crate::exit;
use crate::lock::{LockRecord, LockStore};

/// Prints the key's state; exit 0 whether it is held or free.
pub async fn status<S: LockStore>(store: &S, key: &str, output: Output) -> Result<u8, Error> {
    let now = Clock::system().now_ns();
    let record = store.get(key).await?;
    match output {
        Output::Json => {
            let r = record.unwrap_or_else(|| LockRecord {
                key: key.to_string(),
                ..Default::default()
            });
            println!("{}", r.to_json(key, now));
        }
        Output::Text => match record {
            None => println!("{key}: free (never locked, or its item expired)"),
            Some(r) if r.is_held(now) => {
                let deadline = r
                    .deadline_ns
                    .map(rfc3339)
                    .unwrap_or_else(|| "unknown".into());
                println!("{key}: held by {}; hard cap {deadline}", r.describe(now));
            }
            Some(r) => println!("{key}: free (last {})", r.describe(now)),
        },
    }
    Ok(exit::SUCCESS)
}
