//! One module per subcommand; each returns an [`Outcome`], which `main` turns into the exit
//! code, and [`finish`] reports as the last record.

mod create_table;
mod install;
mod list;
mod run;
mod status;
mod unlock;

use std::io::Write as _;

use crate::aws::{self, AwsOptions};
use crate::cli::{validate_key, Cli, Command, Global};
use crate::error::{Error, UsageError};
use crate::exit::Outcome;
use crate::lock::dynamo::DynamoStore;

/// Runs the parsed command line.
pub(crate) async fn dispatch(cli: Cli) -> Outcome {
    let g = &cli.global;
    let result = match &cli.command {
        Command::Run(args) => return run::run(g, args).await,
        Command::Unlock(args) => match keyed_store(g, &args.key).await {
            Ok(store) => unlock::unlock(&store, &args.key, args.force).await,
            Err(e) => Err(e),
        },
        Command::Status(args) => match keyed_store(g, &args.key).await {
            Ok(store) => status::status(&store, &args.key, args.output).await,
            Err(e) => Err(e),
        },
        Command::List(args) => match store(g).await {
            Ok(store) => list::list(&store, &args.prefix, args.output).await,
            Err(e) => Err(e),
        },
        Command::CreateTable => match store(g).await {
            Ok(store) => create_table::create_table(&store).await,
            Err(e) => Err(e),
        },
        Command::Install(args) => install::install(&args.dir),
        Command::Version => {
            print(&format!("lock-exec {}", env!("CARGO_PKG_VERSION")));
            Ok(Outcome::Done)
        }
    };
    result.unwrap_or_else(Outcome::Failed)
}

/// The last record of a command: a run's summary, or the error that ended it.
pub(crate) fn finish(outcome: &Outcome, code: u8) {
    match outcome {
        Outcome::Run { report, .. } => run::summarize(report, code),
        Outcome::Failed(e) => run::log_error(e, code),
        Outcome::Done | Outcome::Refused => {}
    }
}

/// The store for a command on one key, checking the key first.
async fn keyed_store(g: &Global, key: &str) -> Result<DynamoStore, Error> {
    validate_key(key)?;
    store(g).await
}

/// The DynamoDB store the global options describe.
pub(crate) async fn store(g: &Global) -> Result<DynamoStore, Error> {
    if g.table.is_empty() {
        return Err(UsageError::Empty("--table (LOCK_EXEC_TABLE)").into());
    }
    let name_ok = (3..=255).contains(&g.table.len())
        && g.table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !name_ok {
        return Err(UsageError::TableName(g.table.clone()).into());
    }
    let opts = AwsOptions {
        region: g.region.clone(),
        endpoint_url: g.endpoint_url.clone(),
    };
    opts.validate()?;
    let client = aws::client(&opts).await?;
    Ok(DynamoStore::new(client, &g.table))
}

/// Prints a line on stdout; a closed stdout (`| head -0`) is not lock-exec's failure.
fn print(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
