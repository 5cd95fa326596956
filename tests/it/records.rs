//! Run intervals that busybox commands record themselves (the container tests' jobs have
//! no Python for tests/fixtures/job.py), checked by the harness's overlap checker.

use std::path::Path;

use crate::harness::{assert_no_overlap, Interval};

/// A shell function `now` that prints Unix nanoseconds with busybox alone (its `date` has
/// no %N; `adjtimex` reads the kernel clock to the microsecond).
pub const NOW: &str = r#"now() { adjtimex | awk '/tv_sec/ {s=$2} /tv_usec/ {u=$2} END {printf "%d%06d000\n", s, u}'; }"#;

/// A busybox `sh` script that records its own run interval in DIR/TAG.start and
/// DIR/TAG.end around BODY (TAG may be a shell expression such as `$LOCK_EXEC_OWNER`).
/// Backquotes, not `$(...)`: Kubernetes would read `$(...)` in a command as a variable.
pub fn recording(dir: &str, tag: &str, body: &str) -> String {
    recording_after(dir, tag, "", body)
}

/// The same with SETUP (a `trap`) run before the start is recorded, so a test that signals
/// the command once it has started never finds the default action.
pub fn recording_after(dir: &str, tag: &str, setup: &str, body: &str) -> String {
    format!("{NOW}\n{setup}\nnow > {dir}/{tag}.start\n{body}\nnow > {dir}/{tag}.end\n")
}

/// One command's run, as it recorded it (Unix ns); `end` is None when it never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellRun {
    pub tag: String,
    pub start: i64,
    pub end: Option<i64>,
}

/// Every interval recorded in `dir`, by start time.
pub fn intervals(dir: &Path) -> Vec<ShellRun> {
    let read = |p: &Path| -> Option<i64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let mut v: Vec<ShellRun> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let tag = name.strip_suffix(".start")?.to_string();
            Some(ShellRun {
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
pub fn assert_disjoint(runs: &[ShellRun], dead: i64) {
    let v: Vec<Interval> = runs
        .iter()
        .map(|r| Interval {
            name: r.tag.clone(),
            start: r.start,
            end: r.end.unwrap_or(dead),
            clean: r.end.is_some(),
            fence: None,
        })
        .collect();
    assert_no_overlap(&v);
}
