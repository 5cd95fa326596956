//! What the real-parts tests read back: lock items as stored (raw attributes, not the
//! crate's own record type) and the run intervals the commands record themselves.

use std::collections::HashMap;
use std::path::Path;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::harness::client;

/// A lock item's attributes, as the README documents them.
#[derive(Debug, Clone, Default)]
pub struct Item {
    pub owner: Option<String>,
    pub cluster: Option<String>,
    /// The holding run's id; `unlock --force` removes it.
    pub run: Option<String>,
    pub fence: Option<i64>,
    /// End of the current lease, Unix nanoseconds.
    pub expire: Option<i64>,
}

impl Item {
    /// Whether the key was free at `t` (Unix ns): a release ends the lease at once, by
    /// setting `expire` to the time of the release.
    pub fn free_at(&self, t: i64) -> bool {
        self.expire.is_some_and(|e| e <= t)
    }

    fn from(attrs: &HashMap<String, AttributeValue>) -> Self {
        let s = |name: &str| attrs.get(name).and_then(|v| v.as_s().ok()).cloned();
        let n = |name: &str| {
            attrs
                .get(name)
                .and_then(|v| v.as_n().ok())
                .map(|v| v.parse().expect("a numeric attribute"))
        };
        Item {
            owner: s("owner"),
            cluster: s("cluster"),
            run: s("run"),
            fence: n("fence"),
            expire: n("expire"),
        }
    }
}

/// The item of `key`, read consistently straight from the server at `endpoint`.
pub async fn read_item(endpoint: &str, table: &str, key: &str) -> Option<Item> {
    let out = client(endpoint)
        .get_item()
        .table_name(table)
        .key("key", AttributeValue::S(key.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
    out.item().map(Item::from)
}

/// A shell function `now` that prints Unix nanoseconds with busybox alone (its `date` has
/// no %N; `adjtimex` reads the kernel clock to the microsecond).
pub const NOW: &str = r#"now() { adjtimex | awk '/tv_sec/ {s=$2} /tv_usec/ {u=$2} END {printf "%d%06d000\n", s, u}'; }"#;

/// A busybox `sh` script that records its own run interval in DIR/TAG.start and
/// DIR/TAG.end around BODY (TAG may be a shell expression such as `$LOCK_EXEC_OWNER`).
/// Backquotes, not `$(...)`: Kubernetes would read `$(...)` in a command as a variable.
pub fn recording(dir: &str, tag: &str, body: &str) -> String {
    format!("{NOW}\nnow > {dir}/{tag}.start\n{body}\nnow > {dir}/{tag}.end\n")
}

/// One command's run, as it recorded it (Unix ns); `end` is None when it never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub tag: String,
    pub start: i64,
    pub end: Option<i64>,
}

/// Every interval recorded in `dir`, by start time.
pub fn intervals(dir: &Path) -> Vec<Interval> {
    let read = |p: &Path| -> Option<i64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let mut v: Vec<Interval> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let tag = name.strip_suffix(".start")?.to_string();
            Some(Interval {
                start: read(&dir.join(&name)).expect("a start time"),
                end: read(&dir.join(format!("{tag}.end"))),
                tag,
            })
        })
        .collect();
    v.sort_by_key(|i| i.start);
    v
}

/// Fails unless no two runs intersect. A run without an end (killed) lasts until `dead`,
/// the time its death was observed.
pub fn assert_disjoint(runs: &[Interval], dead: i64) {
    for w in runs.windows(2) {
        let end = w[0].end.unwrap_or(dead);
        assert!(
            w[1].start > end,
            "two runs intersect: {:?} (until {end}) and {:?}",
            w[0],
            w[1]
        );
    }
}
