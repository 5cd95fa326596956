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

/// Asserts that no two intervals intersect and that fences grow with start times.
pub fn assert_no_overlap(v: &[Interval]) {
    let mut sorted = v.to_vec();
    sorted.sort_by_key(|i| i.start);
    for w in sorted.windows(2) {
        assert!(
            w[1].start > w[0].end,
            "OVERLAP: {} started {} ms before {} ended\n{:#?}",
            w[1].name,
            (w[0].end - w[1].start) / 1_000_000,
            w[0].name,
            w
        );
        if let (Some(a), Some(b)) = (w[0].fence, w[1].fence) {
            assert!(b > a, "fences do not grow with start times: {w:#?}");
        }
    }
}
