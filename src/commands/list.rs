//! `lock-exec list`: every key in the table, as a table or a JSON array.

use super::print;
use crate::cli::Output;
use crate::clock::{rfc3339, Clock};
use crate::error::Error;
use crate::exit::Outcome;
use crate::lock::{LockRecord, LockStore};

/// Prints every key starting with `prefix`, reading the table page by page.
pub(super) async fn list<S: LockStore>(
    store: &S,
    prefix: &str,
    output: Output,
) -> Result<Outcome, Error> {
    let mut records: Vec<LockRecord> = Vec::new();
    let mut start = None;
    loop {
        let page = store.scan(prefix, start).await?;
        records.extend(page.records);
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let now = Clock::system().now_ns();
    match output {
        Output::Json => print(
            &serde_json::Value::Array(records.iter().map(|r| r.to_json(now)).collect()).to_string(),
        ),
        Output::Text => {
            let rows: Vec<[String; 7]> = records
                .iter()
                .map(|r| {
                    let json = r.to_json(now);
                    let text = |v: &serde_json::Value| match v {
                        serde_json::Value::Null => "-".to_string(),
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    [
                        r.key.clone(),
                        text(&json["state"]),
                        text(&json["owner"]),
                        text(&json["cluster"]),
                        text(&json["fence"]),
                        r.expire_ns.map(rfc3339).unwrap_or_else(|| "-".into()),
                        text(&json["done_slot"]),
                    ]
                })
                .collect();
            let header = [
                "KEY",
                "STATE",
                "OWNER",
                "CLUSTER",
                "FENCE",
                "LEASE END",
                "DONE SLOT",
            ]
            .map(String::from);
            let mut widths = header.clone().map(|h| h.chars().count());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let cells: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                print(cells.join("  ").trim_end());
            }
        }
    }
    Ok(Outcome::Done)
}
