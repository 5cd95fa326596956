//! One clock for the whole run: wall-clock nanoseconds derived from the monotonic clock.
//!
//! DynamoDB items carry wall-clock times (`expire` is Unix nanoseconds, as in the original
//! tool), while the holder's safety deadlines must not move if NTP steps the wall clock in
//! the middle of a run. Reading the wall clock once and advancing it with the monotonic
//! clock gives both at once, and makes every conversion between them exact. Because it
//! uses tokio's `Instant`, tests with paused time drive it deterministically.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Maps between monotonic instants and Unix nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix nanoseconds at `base`.
    base_ns: i64,
    /// The monotonic instant at which `base_ns` was read.
    base: Instant,
}

impl Clock {
    /// A clock anchored at the system's wall-clock time now.
    pub fn system() -> Self {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Self::anchored(ns)
    }

    /// A clock that reads `unix_ns` now; tests use it to start at a known time.
    pub fn anchored(unix_ns: i64) -> Self {
        Clock {
            base_ns: unix_ns,
            base: Instant::now(),
        }
    }

    /// Unix nanoseconds now.
    pub fn now_ns(&self) -> i64 {
        self.wall_at(Instant::now())
    }

    /// Unix nanoseconds at a monotonic instant.
    pub fn wall_at(&self, at: Instant) -> i64 {
        if at >= self.base {
            self.base_ns + nanos(at - self.base)
        } else {
            self.base_ns - nanos(self.base - at)
        }
    }

    /// The monotonic instant at which the clock reads `unix_ns`.
    pub fn instant_at(&self, unix_ns: i64) -> Instant {
        if unix_ns >= self.base_ns {
            self.base + Duration::from_nanos((unix_ns - self.base_ns) as u64)
        } else {
            self.base
                .checked_sub(Duration::from_nanos((self.base_ns - unix_ns) as u64))
                .unwrap_or(self.base)
        }
    }
}

/// A duration in nanoseconds, saturating at `i64::MAX` (292 years).
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Formats Unix nanoseconds as RFC 3339 with millisecond precision, in UTC.
pub fn rfc3339(unix_ns: i64) -> String {
    let t = if unix_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(unix_ns as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_and_monotonic_convert_both_ways() {
        let clock = Clock::anchored(1_000_000_000_000);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.now_ns(), 1_000_000_000_000 + 1_500_000_000);
        assert_eq!(clock.instant_at(clock.wall_at(start)), start);
        assert_eq!(
            clock.instant_at(1_000_000_000_000 + 250_000_000),
            start + Duration::from_millis(250)
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(
            rfc3339(1_651_558_192_655_782_000),
            "2022-05-03T06:09:52.655Z"
        );
    }
}
