//! Time: wall-clock nanoseconds for the table, monotonic instants for the timers, and a
//! guard that notices when the two part ways.
//!
//! DynamoDB items carry wall-clock times (`expire` is Unix nanoseconds, as in the original
//! tool) that other hosts compare with their own clocks, so every time we store is read
//! from the wall clock at the moment it is computed. The holder's safety timers run on the
//! monotonic clock, which NTP steps cannot move. The two agree while nothing unusual
//! happens; a step of the wall clock, or a suspend (the monotonic clock stops, the wall
//! clock does not), makes them diverge, and then the holder's idea of when its lease ends
//! is no longer trustworthy: [`ClockGuard`] reports it so the lease can be given up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A reading of both clocks, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The monotonic clock.
    pub(crate) mono: Instant,
    /// The wall clock, Unix nanoseconds.
    pub(crate) wall_ns: i64,
}

impl Reading {
    /// The monotonic instant at which the wall clock will read `unix_ns`, if both advance
    /// at the same rate from this reading on; readings in the past map to earlier instants
    /// (never before the runtime's epoch).
    pub(crate) fn instant_at(&self, unix_ns: i64) -> Instant {
        let ahead = unix_ns.saturating_sub(self.wall_ns);
        if ahead >= 0 {
            self.mono + Duration::from_nanos(ahead as u64)
        } else {
            self.mono
                .checked_sub(Duration::from_nanos(ahead.unsigned_abs()))
                .unwrap_or(self.mono)
        }
    }
}

/// Where readings come from: the system, or (in unit tests) tokio's pausable clock with a
/// wall clock that a test can step.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    /// The source of wall-clock time.
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// `SystemTime::now()`.
    System,
    /// Wall time derived from tokio's clock, which paused-time tests drive.
    #[cfg(test)]
    Test(std::sync::Arc<TestWall>),
}

/// A test wall clock: `base_ns` at `base`, advancing with tokio's clock, plus a step.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct TestWall {
    /// Unix nanoseconds at `base`.
    base_ns: i64,
    /// The tokio instant `base_ns` corresponds to.
    base: Instant,
    /// Nanoseconds added by [`Clock::step`], as a wall-clock step or a suspend would.
    step_ns: std::sync::atomic::AtomicI64,
}

impl Clock {
    /// The system's clocks.
    pub(crate) fn system() -> Self {
        Clock {
            source: Source::System,
        }
    }

    /// A test clock reading `unix_ns` now and advancing with tokio's (pausable) clock.
    #[cfg(test)]
    pub(crate) fn test(unix_ns: i64) -> Self {
        Clock {
            source: Source::Test(std::sync::Arc::new(TestWall {
                base_ns: unix_ns,
                base: Instant::now(),
                step_ns: std::sync::atomic::AtomicI64::new(0),
            })),
        }
    }

    /// Steps the test clock's wall time by `ns` (negative: backwards).
    #[cfg(test)]
    pub(crate) fn step(&self, ns: i64) {
        let Source::Test(w) = &self.source else {
            panic!("only a test clock can be stepped")
        };
        w.step_ns.fetch_add(ns, std::sync::atomic::Ordering::SeqCst);
    }

    /// Both clocks, now.
    pub(crate) fn now(&self) -> Reading {
        let mono = Instant::now();
        let wall_ns = match &self.source {
            Source::System => system_ns(),
            #[cfg(test)]
            Source::Test(w) => {
                w.base_ns
                    + nanos(mono - w.base)
                    + w.step_ns.load(std::sync::atomic::Ordering::SeqCst)
            }
        };
        Reading { mono, wall_ns }
    }

    /// Unix nanoseconds now.
    pub(crate) fn now_ns(&self) -> i64 {
        self.now().wall_ns
    }
}

/// The system's wall clock in Unix nanoseconds (0 before 1970, saturating in 2262).
fn system_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(nanos)
        .unwrap_or(0)
}

/// The two clocks moved apart by more than the allowance since the last check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Diverged {
    /// How far the wall clock moved beyond (positive) or short of (negative) the
    /// monotonic clock, in nanoseconds.
    pub(crate) by_ns: i64,
}

/// Compares successive readings: both clocks must advance by the same amount, within
/// `allowance` (NTP slews both alike; only steps and suspends part them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockGuard {
    /// The previous reading.
    last: Reading,
    /// The largest tolerated difference, nanoseconds.
    allowance_ns: i64,
}

impl ClockGuard {
    /// A guard starting from `first`.
    pub(crate) fn new(first: Reading, allowance: Duration) -> Self {
        ClockGuard {
            last: first,
            allowance_ns: nanos(allowance),
        }
    }

    /// Checks `now` against the previous reading and makes it the new reference.
    pub(crate) fn check(&mut self, now: Reading) -> Result<(), Diverged> {
        let wall = now.wall_ns.saturating_sub(self.last.wall_ns);
        let mono = nanos(now.mono.saturating_duration_since(self.last.mono));
        self.last = now;
        let by_ns = wall.saturating_sub(mono);
        if by_ns.abs() > self.allowance_ns {
            Err(Diverged { by_ns })
        } else {
            Ok(())
        }
    }
}

/// A duration in nanoseconds, saturating at `i64::MAX` (292 years).
pub(crate) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Formats Unix nanoseconds as RFC 3339 with millisecond precision, in UTC.
pub(crate) fn rfc3339(unix_ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(unix_ns.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A duration for people: `950ms`, `29.97s`, `4m12s`, `3h05m`, `2d04h`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        let hundredths = (d.as_millis() / 10) as f64 / 100.0;
        format!("{hundredths}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// [`human`] for a span of Unix nanoseconds (negative spans count as zero).
pub(crate) fn human_ns(ns: i64) -> String {
    human(Duration::from_nanos(ns.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn test_clock_advances_with_tokio_and_steps() {
        let clock = Clock::test(1_000_000_000_000);
        let start = clock.now();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let later = clock.now();
        assert_eq!(later.wall_ns, 1_001_500_000_000);
        assert_eq!(later.instant_at(start.wall_ns), start.mono);
        assert_eq!(
            start.instant_at(1_000_250_000_000),
            start.mono + Duration::from_millis(250)
        );
        clock.step(-2_000_000_000);
        assert_eq!(clock.now_ns(), 999_500_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn guard_reports_steps_and_suspends_beyond_the_allowance() {
        let clock = Clock::test(5_000_000_000_000);
        let mut guard = ClockGuard::new(clock.now(), Duration::from_millis(100));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(guard.check(clock.now()), Ok(()));
        clock.step(99_000_000);
        assert_eq!(guard.check(clock.now()), Ok(()), "within the allowance");
        // A suspend: the wall clock went on for 10 s while the monotonic one stood still.
        clock.step(10_000_000_000);
        assert_eq!(
            guard.check(clock.now()),
            Err(Diverged {
                by_ns: 10_000_000_000
            })
        );
        clock.step(-500_000_000);
        assert_eq!(
            guard.check(clock.now()),
            Err(Diverged {
                by_ns: -500_000_000
            })
        );
        assert_eq!(
            guard.check(clock.now()),
            Ok(()),
            "the new reading is the reference"
        );
    }

    #[test]
    fn formats_times_and_durations_for_people() {
        assert_eq!(
            rfc3339(1_651_558_192_655_782_000),
            "2022-05-03T06:09:52.655Z"
        );
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        let cases = [
            (Duration::from_millis(950), "950ms"),
            (Duration::from_millis(29_973), "29.97s"),
            (Duration::from_secs(252), "4m12s"),
            (Duration::from_secs(3 * 3600 + 5 * 60 + 59), "3h05m"),
            (Duration::from_secs(86_400 * 2 + 4 * 3600), "2d04h"),
            (Duration::from_secs(86_399), "23h59m"),
        ];
        for (d, want) in cases {
            assert_eq!(human(d), want, "{d:?}");
        }
        assert_eq!(human_ns(-1), "0ms");
    }
}
