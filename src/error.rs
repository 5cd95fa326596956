//! The crate's error type. Every variant means "lock-exec itself failed" (exit 125);
//! outcomes of the command (its exit code, a held key, the hard cap) are not errors.

use crate::aws::AwsError;
use crate::lock::StoreError;

/// A failure of lock-exec itself, with a message that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or settings.
    #[error("{0}")]
    Usage(String),
    /// The lock table refused or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The AWS configuration is incomplete.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The command could not be started at all (fork failed, NUL byte in an argument).
    #[error("cannot start the command: {0}")]
    Spawn(std::io::Error),
    /// A file operation of a maintenance command failed.
    #[error("{0}")]
    Io(String),
}
