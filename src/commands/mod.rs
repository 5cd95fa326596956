//! One function per subcommand; each returns the exit code or an [`Error`].

mod create_table;
mod install;
mod status;
mod unlock;

use std::sync::Arc;

use crate::aws::{self, AwsOptions};
use crate::cli::{validate_key, Cli, Command, Global, RunArgs};
use crate::clock::Clock;
use crate::error::Error;
use crate::exit;
use crate::lease::{Timing, TimingInput};
use crate::lock::dynamo::DynamoStore;
use crate::run::{run, RunConfig, RunOutcome};
use crate::supervisor::{ChildCommand, Supervisor};

/// Runs the parsed command line; the result is the process exit code.
pub async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let g = &cli.global;
    match &cli.command {
        Command::Run(args) => run_command(g, args).await,
        Command::Unlock(args) => {
            validate_key(&args.key).map_err(Error::Usage)?;
            unlock::unlock(&store(g).await?, &args.key, args.force).await
        }
        Command::Status(args) => {
            validate_key(&args.key).map_err(Error::Usage)?;
            status::status(&store(g).await?, &args.key, args.output).await
        }
        Command::CreateTable => create_table::create_table(&store(g).await?).await,
        Command::Install(args) => install::install(&args.dir),
        Command::Version => {
            println!("lock-exec {}", env!("CARGO_PKG_VERSION"));
            Ok(exit::SUCCESS)
        }
    }
}

async fn store(g: &Global) -> Result<DynamoStore, Error> {
    let client = aws::client(&AwsOptions {
        region: g.region.clone(),
        endpoint_url: g.endpoint_url.clone(),
    })
    .await?;
    Ok(DynamoStore::new(client, &g.table))
}

async fn run_command(g: &Global, args: &RunArgs) -> Result<u8, Error> {
    // Handlers first: as PID 1 a SIGTERM that arrives before them is lost.
    let mut sup = Supervisor::new().map_err(Error::Signals)?;
    let cfg = run_config(g, args)?;
    let store = Arc::new(store(g).await?);
    let outcome = run(store, cfg, Clock::system(), &mut sup).await?;
    Ok(match outcome {
        RunOutcome::Exited(status) => status.code(),
        RunOutcome::Locked => args.locked_exit_code,
        RunOutcome::HardCap => exit::HARD_CAP,
        RunOutcome::LeaseLost => exit::FAILURE,
        RunOutcome::Interrupted(sig) => exit::SIGNAL_BASE + sig as u8,
    })
}

/// Validates `run`'s arguments into a [`RunConfig`] before anything touches the network.
fn run_config(g: &Global, args: &RunArgs) -> Result<RunConfig, Error> {
    validate_key(&args.key).map_err(Error::Usage)?;
    let argv = args.argv().map_err(Error::Usage)?;
    let timing = Timing::new(TimingInput {
        lease: Some(args.lease),
        heartbeat: args.heartbeat,
        grace: args.grace,
        max_clock_skew: args.max_clock_skew,
        expire: g.expire,
        min_hold: Some(args.min_hold),
    })
    .map_err(Error::Usage)?;
    let owner = match &args.owner {
        Some(o) if o.trim().is_empty() => return Err(Error::Usage("--owner is empty".into())),
        Some(o) => o.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into()),
    };
    Ok(RunConfig {
        key: args.key.clone(),
        owner,
        cluster: args.cluster.clone().filter(|c| !c.is_empty()),
        command: ChildCommand {
            argv,
            env: std::env::vars_os()
                .filter(|(k, _)| !(k == "SSL_CERT_FILE" && aws::ca_bundle_chosen()))
                .collect(),
        },
        timing,
        wait: args.wait,
    })
}
