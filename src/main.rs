//! lock-exec: run a command under a DynamoDB lock with a renewing lease, as a PID-1-safe
//! container entrypoint.
//!
//! # Layout
//! - [`cli`]: options, environment variables, defaults and parsing rules.
//! - [`exit`]: the exit-code contract and the one mapping from outcome to code.
//! - [`error`]: what can go wrong, each with what to fix.
//! - [`lock`]: what a lock is, the [`lock::LockStore`] trait, the DynamoDB store (and an
//!   in-memory one for unit tests).
//! - [`held`]: the held lock, owned by one value from acquisition to release.
//! - [`lease`]: lease timing rules and the heartbeat task that reports when to stop.
//! - [`supervisor`]: spawn, signal forwarding, reaping (all `unsafe` lives here).
//! - [`run`]: the run loop tying them together.
//! - [`slot`]: which schedule occurrence a run belongs to.
//! - [`commands`]: one module per subcommand.
//! - [`aws`]: the DynamoDB client with timeouts, retries and fast-failing look-ups.
//! - [`clock`]: wall and monotonic time, and the guard that notices when they part.
//! - [`logging`]: JSON or logfmt records on stderr that can never fail the run.

mod aws;
mod cli;
mod clock;
mod commands;
mod error;
mod exit;
mod held;
mod lease;
mod lock;
mod logging;
mod run;
mod slot;
mod supervisor;

use std::process::ExitCode;

use clap::Parser;

use crate::exit::Outcome;

fn main() -> ExitCode {
    let outcome = match cli::Cli::try_parse() {
        Ok(cli) => {
            logging::init(cli.global.log_format);
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let outcome = runtime.block_on(commands::dispatch(cli));
                    // Do not wait for idle DNS or connection threads on the way out.
                    runtime.shutdown_background();
                    outcome
                }
                Err(e) => Outcome::Failed(error::Error::Runtime(e)),
            }
        }
        Err(e) => match cli::parse_error(e) {
            cli::ParseError::Display(text) => {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(text.as_bytes());
                Outcome::Done
            }
            cli::ParseError::Usage(line) => {
                logging::init(cli::early_log_format());
                tracing::error!(outcome = "error", exit_code = exit::FAILURE, "{line}");
                logging::flush(std::time::Duration::from_secs(1));
                return ExitCode::from(exit::FAILURE);
            }
        },
    };
    let code = exit::code(&outcome);
    commands::finish(&outcome, code);
    logging::flush(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}
