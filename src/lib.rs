//! lock-exec: run a command under a DynamoDB lock with a renewing lease, as a
//! PID-1-safe container entrypoint.
//!
//! # Layout
//! - [`cli`]: options, environment variables, defaults and parsing rules.
//! - [`exit`]: the exit-code contract.
//! - [`lock`]: what a lock is, the [`lock::LockStore`] trait, DynamoDB and in-memory stores.
//! - [`lease`]: lease timing rules and the heartbeat task that reports lost leases.
//! - [`supervisor`]: spawn, signal forwarding, reaping (all `unsafe` lives here).
//! - [`run`]: the run loop tying them together.
//! - [`commands`]: one function per subcommand.
//! - [`aws`]: the DynamoDB client with timeouts, retries and fast-failing look-ups.
//! - [`clock`]: wall-clock time derived from the monotonic clock.

pub mod aws;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod error;
pub mod exit;
pub mod lease;
pub mod lock;
pub mod logging;
pub mod run;
pub mod supervisor;
