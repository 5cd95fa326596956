//! Test jobs that record their own run intervals, and the checker that no two runs under
//! one key intersect (tests/fixtures/job.py writes the records).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{read_num, repo, unique, TempDir};

/// How long after its last heartbeat a killed job can still have run (job.py beats every
/// 10 ms; the rest covers a write in progress).
pub const HEARTBEAT_SLACK_NS: i64 = 15_000_000;

/// What a job does on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTerm {
    /// The default action: it dies.
    Die,
    /// It records its end and exits 143.
    Exit,
    /// It ignores it; only SIGKILL ends it.
    Ignore,
}

/// A directory of job records.
pub struct Jobs {
    dir: TempDir,
}

/// One job's run, as it recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub name: String,
    /// When it started, Unix ns.
    pub start: i64,
    /// When it ended: its own end record, or its last heartbeat + slack when it was killed.
    pub end: i64,
    /// Whether it recorded its end (it was not killed).
    pub clean: bool,
    /// Its LOCK_EXEC_FENCE.
    pub fence: Option<u64>,
}

impl Jobs {
    pub fn new() -> Self {
        Jobs {
            dir: TempDir::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The argv of a job named `name` (unique names: each run gets its own).
    pub fn argv(&self, name: &str, sleep: Duration, on_term: OnTerm, exit: u8) -> Vec<String> {
        let on_term = match on_term {
            OnTerm::Die => "die",
            OnTerm::Exit => "exit",
            OnTerm::Ignore => "ignore",
        };
        vec![
            "python3".into(),
            repo().join("tests/fixtures/job.py").display().to_string(),
            self.dir.path().display().to_string(),
            name.into(),
            "--sleep".into(),
            format!("{}", sleep.as_secs_f64()),
            "--on-term".into(),
            on_term.into(),
            "--exit".into(),
            exit.to_string(),
        ]
    }

    /// A fresh job name.
    pub fn name(&self, prefix: &str) -> String {
        unique(prefix)
    }

    fn file(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.file(&format!("{name}.{ext}"))
    }

    /// Whether `name` has started (its start record is written whole, by a rename).
    pub fn started(&self, name: &str) -> bool {
        self.file(name, "start").exists()
    }

    /// Waits (at most 30 s) until `name` has started.
    pub async fn wait_started(&self, name: &str) {
        super::wait_for(
            &format!("job {name} to start"),
            Duration::from_secs(30),
            || self.started(name),
        )
        .await;
    }

    /// Its start, if it started.
    pub fn start_of(&self, name: &str) -> Option<i64> {
        read_num(&self.file(name, "start"))
    }

    /// Its interval, if it started.
    pub fn interval(&self, name: &str) -> Option<Interval> {
        let start_line = std::fs::read_to_string(self.file(name, "start")).ok()?;
        let mut start_fields = start_line.split_whitespace();
        let start: i64 = start_fields.next()?.parse().ok()?;
        let fence = start_fields.next().and_then(|f| f.parse().ok());
        let end_line = std::fs::read_to_string(self.file(name, "end")).ok();
        let (end, clean) = match end_line.and_then(|l| l.split_whitespace().next()?.parse().ok()) {
            Some(end) => (end, true),
            None => {
                let hb = read_num(&self.file(name, "hb")).unwrap_or(start);
                (hb + HEARTBEAT_SLACK_NS, false)
            }
        };
        Some(Interval {
            name: name.to_string(),
            start,
            end,
            clean,
            fence,
        })
    }

    /// Every job that started, by start time.
    pub fn intervals(&self) -> Vec<Interval> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".start").map(str::to_string)
            })
            .collect();
        names.sort();
        let mut v: Vec<Interval> = names.iter().filter_map(|n| self.interval(n)).collect();
        v.sort_by_key(|i| i.start);
        v
    }
}

/// Pairs of intervals that intersect (each with the one that started next), and pairs
/// whose fences do not grow with their start times.
pub fn overlaps(v: &[Interval]) -> Vec<(Interval, Interval)> {
    // A job and the descendants it left behind are one run: same fence.
    let mut runs: Vec<Interval> = Vec::new();
    for i in v {
        match runs
            .iter_mut()
            .find(|r| r.fence.is_some() && r.fence == i.fence)
        {
            Some(r) => {
                r.name = format!("{}+{}", r.name, i.name);
                r.start = r.start.min(i.start);
                r.end = r.end.max(i.end);
                r.clean &= i.clean;
            }
            None => runs.push(i.clone()),
        }
    }
    let mut sorted = runs;
    sorted.sort_by_key(|i| i.start);
    // Against the latest end so far, not only the previous interval: a long run that
    // started earlier may still be running.
    let mut bad = Vec::new();
    let mut latest: Option<&Interval> = None;
    for w in sorted.windows(2) {
        if latest.is_none_or(|l| w[0].end > l.end) {
            latest = Some(&w[0]);
        }
        let before = latest.unwrap();
        let fences_shrink = matches!((w[0].fence, w[1].fence), (Some(a), Some(b)) if b <= a);
        if w[1].start <= before.end || fences_shrink {
            bad.push((before.clone(), w[1].clone()));
        }
    }
    bad
}

/// Asserts that no two intervals intersect and that fences grow with start times.
pub fn assert_no_overlap(v: &[Interval]) {
    let bad = overlaps(v);
    assert!(bad.is_empty(), "OVERLAP of runs under one key: {bad:#?}");
}
