//! The crate's error type. Every variant means "lock-exec itself failed" (exit 125);
//! outcomes of the command (its exit code, a held key, the hard cap) are not errors.
//! Messages are one lowercase line that says what to fix.

use std::path::PathBuf;

use crate::aws::AwsError;
use crate::lease::TimingError;
use crate::lock::StoreError;
use crate::slot::SlotError;

/// A failure of lock-exec itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Bad arguments or settings.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Lease settings under which the command could outlive its lease.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// No slot could be derived.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The AWS configuration is incomplete.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The lock table refused or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key's item has attributes no run can use.
    #[error("the lock item of '{key}' is malformed ({what}): repair it with `lock-exec unlock --force '{key}'`")]
    Malformed {
        /// The key.
        key: String,
        /// What is wrong.
        what: String,
    },
    /// `create-table` gave up waiting.
    #[error("table '{0}' did not become ACTIVE within 2 minutes: check it in the AWS console")]
    TableNotActive(String),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The command could not be started at all (fork failed, NUL byte in an argument).
    #[error("cannot start the command: {0}")]
    Spawn(#[source] std::io::Error),
    /// `install` failed.
    #[error("install: cannot {what} {}: {source}", path.display())]
    Install {
        /// What it tried.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Arguments and settings that cannot work, each with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UsageError {
    /// An empty key.
    #[error("the key is empty: give a non-empty KEY")]
    EmptyKey,
    /// A key longer than DynamoDB allows.
    #[error("the key is {0} bytes; DynamoDB allows at most 2048 for a partition key")]
    KeyTooLong(usize),
    /// No command at all.
    #[error("no command: add it as one string or after --, e.g. lock-exec run KEY -- echo hi")]
    NoCommand,
    /// Both command forms.
    #[error("give the command either as one string or after --, not both")]
    BothCommandForms,
    /// `--shell` with an argv.
    #[error("--shell takes the command as one string, not after --")]
    ShellWithArgv,
    /// An empty command string.
    #[error("the command string is empty")]
    EmptyCommand,
    /// A quote that is never closed.
    #[error("the command string has an unterminated quote: {0} (quotes follow shell rules; write it's as \"it's\" or use -- and exact arguments)")]
    UnterminatedQuote(String),
    /// A command string without a program.
    #[error("the command string has no program")]
    NoProgram,
    /// A setting that must not be empty.
    #[error("{0} is empty: give a value or leave it unset")]
    Empty(&'static str),
    /// A table name DynamoDB does not accept.
    #[error(
        "--table '{0}' is not a DynamoDB table name: use 3 to 255 letters, digits, '_', '-' or '.'"
    )]
    TableName(String),
    /// An endpoint that is not a URL.
    #[error("--endpoint-url '{0}' is not a URL: write it with its scheme, e.g. http://127.0.0.1:8000 or https://dynamodb.eu-west-1.amazonaws.com")]
    Endpoint(String),
    /// A region that is not a region name.
    #[error("--region '{0}' is not an AWS region name: use lowercase letters, digits and dashes, e.g. eu-west-1")]
    Region(String),
    /// More than one way to name the slot.
    #[error("{0} and {1} both give the slot: use one of them")]
    TwoSlotSources(&'static str, &'static str),
    /// A time zone without a schedule.
    #[error("--time-zone needs --schedule")]
    ZoneWithoutSchedule,
    /// `--retry-failed-slot` without a slot.
    #[error("--retry-failed-slot needs a slot (--slot, --slot-from-job-name or --schedule)")]
    RetryWithoutSlot,
    /// `install` into something that is not a directory.
    #[error(
        "install: {0} is not a directory: create it or mount a volume (e.g. an emptyDir) there"
    )]
    NotADirectory(PathBuf),
}
