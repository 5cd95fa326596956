//! Slot numbers: which schedule occurrence a run belongs to.
//!
//! Every source gives the same numbering, the occurrence's scheduled time in minutes since
//! the Unix epoch, so clusters (and a VM's crontab) agree whatever their clocks or
//! controller delays:
//! - the Kubernetes CronJob controller (1.21 and later) names each Job
//!   `<cronjob>-<scheduled time in minutes since the epoch>`, and every pod carries that
//!   name in its `batch.kubernetes.io/job-name` label;
//! - a cron schedule gives the occurrence nearest to now.

use std::str::FromStr;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// How far from now a job name's number may be: the CronJob controller starts a Job at
/// most `startingDeadlineSeconds` (or 100 missed schedules) after its time. A number
/// further off is not a schedule time in minutes (e.g. `date +%s` in a hand-made name),
/// and taking it would mark every real occurrence until then as done.
pub(crate) const JOB_NAME_WINDOW: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Why no slot could be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotError {
    /// The job name is empty: the pod label it comes from is missing.
    #[error("the job name (--slot-from-job-name, LOCK_EXEC_JOB_NAME) is empty: the pod has no such label (Kubernetes before 1.27 has only job-name: set the chart's lock.jobNameLabel to job-name), or set lock.oncePerSchedule to false")]
    EmptyJobName,
    /// The job name does not end in `-<digits>`.
    #[error("job name '{0}' does not end in -<minutes since the epoch> as a CronJob's Jobs do (a Job created by hand?): name it <cronjob>-$(( $(date +%s) / 60 )), or run it without a slot")]
    NoNumber(String),
    /// The number is not a schedule time near now.
    #[error("job name '{name}' ends in {n}, which is not a schedule time in minutes since the epoch within 7 days of now ({now}): name a Job created by hand <cronjob>-$(( $(date +%s) / 60 ))")]
    Implausible {
        /// The name.
        name: String,
        /// Its number.
        n: u64,
        /// Now, in minutes since the epoch.
        now: u64,
    },
    /// The cron expression does not parse.
    #[error("--schedule '{schedule}' is not a cron schedule ({why}): use five fields, e.g. '0 2 * * *', or @hourly/@daily")]
    Schedule {
        /// The expression.
        schedule: String,
        /// The parser's reason.
        why: String,
    },
    /// The time zone is unknown.
    #[error("--time-zone '{0}' is not an IANA time zone name, e.g. UTC or Europe/Berlin")]
    TimeZone(String),
    /// The schedule has no occurrence near now.
    #[error("--schedule '{0}' has no occurrence near now")]
    NoOccurrence(String),
}

/// The slot in a CronJob's Job name: its trailing `-<digits>`, checked to be a time in
/// minutes within [`JOB_NAME_WINDOW`] of `now`.
pub(crate) fn from_job_name(name: &str, now: Timestamp) -> Result<u64, SlotError> {
    if name.is_empty() {
        return Err(SlotError::EmptyJobName);
    }
    let digits = name
        .rsplit_once('-')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| SlotError::NoNumber(name.to_string()))?;
    let n: u64 = digits
        .parse()
        .map_err(|_| SlotError::NoNumber(name.to_string()))?;
    let now_min = (now.as_second().max(0) / 60) as u64;
    let window = JOB_NAME_WINDOW.as_secs() / 60;
    if n.abs_diff(now_min) > window {
        return Err(SlotError::Implausible {
            name: name.to_string(),
            n,
            now: now_min,
        });
    }
    Ok(n)
}

/// The occurrence of `schedule` (five-field cron, or a nickname such as `@hourly`) in time
/// zone `zone` (default UTC) nearest to `now`, in minutes since the epoch.
pub(crate) fn from_schedule(
    schedule: &str,
    zone: Option<&str>,
    now: Timestamp,
) -> Result<u64, SlotError> {
    let tz = match zone {
        None => TimeZone::UTC,
        Some(name) => TimeZone::get(name).map_err(|_| SlotError::TimeZone(name.to_string()))?,
    };
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| SlotError::Schedule {
            schedule: schedule.to_string(),
            why: e.to_string(),
        })?;
    let now = Zoned::new(now, tz);
    let none = || SlotError::NoOccurrence(schedule.to_string());
    let before = cron.find_previous_occurrence(&now, true).ok();
    let after = cron.find_next_occurrence(&now, false).ok();
    let nearest = match (before, after) {
        (Some(b), Some(a)) => {
            let to_b = now.timestamp().as_second() - b.timestamp().as_second();
            let to_a = a.timestamp().as_second() - now.timestamp().as_second();
            if to_a < to_b {
                a
            } else {
                b
            }
        }
        (Some(b), None) => b,
        (None, Some(a)) => a,
        (None, None) => return Err(none()),
    };
    u64::try_from(nearest.timestamp().as_second() / 60).map_err(|_| none())
}

/// Parses a slot given as a number (`--slot`).
pub(crate) fn parse_slot(s: &str) -> Result<u64, String> {
    u64::from_str(s.trim())
        .ok()
        .filter(|n| *n <= crate::lock::MAX_WHOLE)
        .ok_or_else(|| format!("'{s}' is not a slot: use a whole number from 0 to 2^53-1, e.g. the scheduled time in minutes since the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn job_names_carry_the_scheduled_minute() {
        // 2026-11-30T02:00:00Z is 29 933 400 minutes after the epoch.
        let now = at("2026-11-30T02:00:41Z");
        assert_eq!(from_job_name("nightly-29933400", now), Ok(29_933_400));
        assert_eq!(
            from_job_name("my-report-lock-exec-29933400", now),
            Ok(29_933_400)
        );
        for bad in [
            "nightly",
            "nightly-",
            "nightly-12a",
            "29933400",
            "x-9999999999999999999999",
        ] {
            assert!(
                matches!(from_job_name(bad, now), Err(SlotError::NoNumber(_))),
                "{bad}"
            );
        }
        // `date +%s` (seconds) in a hand-made name is far in the future as minutes.
        let e = from_job_name("nightly-manual-1796000441", now).unwrap_err();
        assert!(matches!(e, SlotError::Implausible { .. }), "{e}");
        assert!(e.to_string().contains("60"), "says how to name it: {e}");
    }

    #[test]
    fn schedules_give_the_nearest_occurrence_in_the_same_numbering() {
        let now = at("2026-11-30T02:00:41Z");
        assert_eq!(from_schedule("0 2 * * *", None, now), Ok(29_933_400));
        // 20 s before the occurrence, it is the nearest too (a cron that fired early).
        assert_eq!(
            from_schedule("0 2 * * *", None, at("2026-11-30T01:59:40Z")),
            Ok(29_933_400)
        );
        assert_eq!(
            from_schedule("*/15 * * * *", None, at("2026-11-30T02:10:00Z")),
            Ok(29_933_400 + 15)
        );
        assert_eq!(from_schedule("@hourly", None, now), Ok(29_933_400));
        // 03:00 in Berlin (UTC+1 in November) is 02:00 UTC: the same occurrence.
        assert_eq!(
            from_schedule("0 3 * * *", Some("Europe/Berlin"), now),
            Ok(29_933_400)
        );
    }

    #[test]
    fn bad_schedules_and_zones_say_what_to_fix() {
        let now = at("2026-11-30T02:00:41Z");
        assert!(matches!(
            from_schedule("0 2 * *", None, now),
            Err(SlotError::Schedule { .. })
        ));
        assert!(matches!(
            from_schedule("0 0 2 * * *", None, now),
            Err(SlotError::Schedule { .. })
        ));
        assert!(matches!(
            from_schedule("61 * * * *", None, now),
            Err(SlotError::Schedule { .. })
        ));
        assert_eq!(
            from_schedule("0 2 * * *", Some("Mars/Olympus"), now),
            Err(SlotError::TimeZone("Mars/Olympus".into()))
        );
        assert!(parse_slot("-1").is_err() && parse_slot("x").is_err());
        assert!(parse_slot("9223372036854775808").is_err(), "beyond 2^53");
        assert_eq!(parse_slot("29933400"), Ok(29_933_400));
    }
}
