//! The exit-code contract of `lock-exec`, as named constants.
//!
//! `run` follows the conventions of coreutils `timeout` and `env`: the child's own status
//! passes through untouched, and lock-exec's own outcomes use the codes those tools use,
//! so scripts and Kubernetes can tell "the job failed" from "the wrapper failed".

/// The command ran and exited 0, or a maintenance command succeeded.
pub const SUCCESS: u8 = 0;
/// `unlock` refused to release a key whose lease is still live (use `--force`).
pub const HELD: u8 = 1;
/// The hard cap (`--expire`) was reached and lock-exec stopped the child (as `timeout`).
pub const HARD_CAP: u8 = 124;
/// lock-exec itself failed: bad usage or settings, DynamoDB errors, or a lost lease.
pub const FAILURE: u8 = 125;
/// The command was found but could not be executed (as `env`).
pub const NOT_EXECUTABLE: u8 = 126;
/// The command was not found (as `env`).
pub const NOT_FOUND: u8 = 127;
/// Added to a signal number when the child was killed by that signal (as a shell does).
pub const SIGNAL_BASE: u8 = 128;

/// How a child process ended, as the reaper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    /// It called `exit` with this code.
    Exited(u8),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl ChildStatus {
    /// The exit code a shell would report for this status: the code, or 128 + signal.
    pub fn code(self) -> u8 {
        match self {
            ChildStatus::Exited(code) => code,
            // Signal numbers on Linux are 1..=64, so this never wraps.
            ChildStatus::Signaled(sig) => SIGNAL_BASE.saturating_add(sig.clamp(0, 127) as u8),
        }
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
    }
}
