//! The exit-code contract of `lock-exec`, as named constants, and the one mapping from an
//! outcome to a code (which only `main` calls).
//!
//! `run` follows the conventions of coreutils `timeout` and `env`: the command's own status
//! passes through untouched, and lock-exec's own outcomes use the codes those tools use,
//! so scripts and Kubernetes can tell "the job failed" from "the wrapper failed".

use std::fmt;

use crate::error::Error;
use crate::run::{Report, RunOutcome};

/// The command ran and exited 0, or a maintenance command succeeded.
pub(crate) const SUCCESS: u8 = 0;
/// `unlock` refused to touch a live lease (use `--force`), or the key changed under it.
pub(crate) const REFUSED: u8 = 1;
/// Default code of a `--wait` that ran out while the key was held (EX_TEMPFAIL).
pub(crate) const WAIT_TIMED_OUT: u8 = 75;
/// The hard cap (`--expire`) was reached and lock-exec stopped the command (as `timeout`).
pub(crate) const HARD_CAP: u8 = 124;
/// lock-exec itself failed: bad usage or settings, DynamoDB errors, or a lost lease.
pub(crate) const FAILURE: u8 = 125;
/// The command was found but could not be executed (as `env`).
pub(crate) const NOT_EXECUTABLE: u8 = 126;
/// The command was not found (as `env`).
pub(crate) const NOT_FOUND: u8 = 127;
/// Added to a signal number when the command was killed by that signal (as a shell does).
pub(crate) const SIGNAL_BASE: u8 = 128;

/// How a child process ended, as the reaper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildStatus {
    /// It called `exit` with this code.
    Exited(u8),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl ChildStatus {
    /// The exit code a shell would report for this status: the code, or 128 + signal.
    pub(crate) fn code(self) -> u8 {
        match self {
            ChildStatus::Exited(code) => code,
            // Signal numbers on Linux are 1..=64, so this never wraps.
            ChildStatus::Signaled(sig) => SIGNAL_BASE.saturating_add(sig.clamp(0, 127) as u8),
        }
    }
}

impl fmt::Display for ChildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildStatus::Exited(code) => write!(f, "exited {code}"),
            ChildStatus::Signaled(sig) => match nix::sys::signal::Signal::try_from(*sig) {
                Ok(s) => write!(f, "killed by {s}"),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
        }
    }
}

/// What a command came to, before it becomes a number.
// One value per process: the size of a run's report costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A maintenance command did its job.
    Done,
    /// `unlock` left the key alone.
    Refused,
    /// A `run` ended; the codes are the run's `--locked-exit-code` and `--wait-exit-code`.
    Run {
        /// How it ended.
        report: Report,
        /// Code for a skipped run.
        locked: u8,
        /// Code for a wait that ran out.
        wait_timed_out: u8,
    },
    /// lock-exec failed.
    Failed(Error),
}

/// The exit code of an outcome: the whole contract in one place.
pub(crate) fn code(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Done => SUCCESS,
        Outcome::Refused => REFUSED,
        Outcome::Failed(_) => FAILURE,
        Outcome::Run {
            report,
            locked,
            wait_timed_out,
        } => match &report.outcome {
            RunOutcome::Ran(status) => status.code(),
            RunOutcome::Skipped(_) => *locked,
            RunOutcome::WaitTimedOut(_) => *wait_timed_out,
            RunOutcome::HardCap(_) => HARD_CAP,
            RunOutcome::LeaseLost(_) => FAILURE,
            RunOutcome::Interrupted(sig) => SIGNAL_BASE + *sig as u8,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_statuses_map_to_128_plus_signal() {
        assert_eq!(ChildStatus::Signaled(9).code(), 137);
        assert_eq!(ChildStatus::Signaled(15).code(), 143);
        assert_eq!(ChildStatus::Exited(3).code(), 3);
        assert_eq!(ChildStatus::Exited(255).code(), 255);
        assert_eq!(ChildStatus::Signaled(9).to_string(), "killed by SIGKILL");
        assert_eq!(ChildStatus::Exited(3).to_string(), "exited 3");
    }

    #[test]
    fn run_outcomes_map_to_the_documented_codes() {
        let run = |outcome| {
            code(&Outcome::Run {
                report: Report {
                    outcome,
                    fence: None,
                    held: None,
                    ran: None,
                },
                locked: 9,
                wait_timed_out: 75,
            })
        };
        use crate::run::Refusal::Held;
        assert_eq!(run(RunOutcome::Ran(ChildStatus::Exited(42))), 42);
        assert_eq!(run(RunOutcome::Skipped(Held(None))), 9);
        assert_eq!(run(RunOutcome::WaitTimedOut(Held(None))), 75);
        assert_eq!(run(RunOutcome::HardCap(ChildStatus::Signaled(15))), 124);
        assert_eq!(run(RunOutcome::LeaseLost(ChildStatus::Exited(0))), 125);
        assert_eq!(
            run(RunOutcome::Interrupted(nix::sys::signal::Signal::SIGTERM)),
            143
        );
        assert_eq!(code(&Outcome::Refused), 1);
    }
}
