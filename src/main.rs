//! `lock-exec`: parse, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use lock_exec::cli::{one_line, Cli};
use lock_exec::{aws, commands, exit, logging};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind::{
                DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand, DisplayVersion,
            };
            match e.kind() {
                DisplayHelp | DisplayVersion => {
                    let _ = e.print();
                    return ExitCode::from(exit::SUCCESS);
                }
                DisplayHelpOnMissingArgumentOrSubcommand => eprintln!(
                    "lock-exec: error: missing command: use run, unlock, status, create-table, install or version (see lock-exec --help)"
                ),
                _ => eprintln!("lock-exec: {}", one_line(&e)),
            }
            return ExitCode::from(exit::FAILURE);
        }
    };
    logging::init(cli.global.log_format);
    aws::choose_ca_bundle();
    // One thread is plenty for a lock and a child, and keeps memory low.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(commands::dispatch(cli));
    // Do not wait for idle DNS or connection threads on the way out.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
