//! `lock-exec run`: settings → [`RunConfig`], the run loop, and the run's summary record.

use std::sync::Arc;

use crate::cli::{validate_key, Global, RunArgs};
use crate::clock::{human, Clock};
use crate::error::{Error, UsageError};
use crate::exit::Outcome;
use crate::held::{Request, Slot};
use crate::lease::{Timing, TimingInput};
use crate::logging;
use crate::run::{run as run_loop, Report, RunConfig, RunOutcome};
use crate::slot;
use crate::supervisor::{ChildCommand, Supervisor};

/// Runs the command under the lock.
pub(super) async fn run(g: &Global, args: &RunArgs) -> Outcome {
    logging::set_context(&[
        ("key", Some(&args.key)),
        ("cluster", args.cluster.as_deref().filter(|c| !c.is_empty())),
    ]);
    // Handlers first: as PID 1 a SIGTERM that arrives before them is lost.
    let mut sup = match Supervisor::new() {
        Ok(sup) => sup,
        Err(e) => return Outcome::Failed(Error::Signals(e)),
    };
    let result = async {
        let cfg = config(g, args)?;
        let store = Arc::new(super::store(g).await?);
        run_loop(store, cfg, Clock::system(), &mut sup).await
    }
    .await;
    match result {
        Ok(report) => Outcome::Run {
            report,
            locked: args.locked_exit_code,
            wait_timed_out: args.wait_exit_code,
        },
        Err(e) => Outcome::Failed(e),
    }
}

/// Validates `run`'s arguments into a [`RunConfig`] before anything touches the network.
fn config(g: &Global, args: &RunArgs) -> Result<RunConfig, Error> {
    validate_key(&args.key)?;
    let argv = args.argv()?;
    let timing = Timing::new(TimingInput {
        lease: Some(args.lease),
        heartbeat: args.heartbeat,
        grace: args.grace,
        max_clock_skew: args.max_clock_skew,
        expire: g.expire,
        min_hold: Some(args.min_hold),
    })?;
    let owner = match &args.owner {
        Some(o) if o.trim().is_empty() => return Err(UsageError::Empty("--owner").into()),
        Some(o) => o.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into()),
    };
    let slot = slot(args)?;
    let slot_text = slot.map(|s| s.n.to_string());
    go_tool_hints(g, args);
    logging::set_context(&[("owner", Some(&owner)), ("slot", slot_text.as_deref())]);
    Ok(RunConfig {
        request: Request {
            key: args.key.clone(),
            owner,
            cluster: args.cluster.clone().filter(|c| !c.is_empty()),
            slot,
            timing,
        },
        command: ChildCommand {
            argv,
            env: std::env::vars_os().collect(),
        },
        wait: args.wait,
    })
}

/// One line for each setting the original Go tool read differently, where a script moved
/// over from it would otherwise get a different result without a word.
fn go_tool_hints(g: &Global, args: &RunArgs) {
    // Only `-e` on the command line, as a Go tool script has it: a chart or an
    // environment variable setting LOCK_EXEC_EXPIRE means the new meaning already.
    let expire_flag = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| {
            let a = a.to_string_lossy();
            a == "--expire" || a.starts_with("--expire=") || a.starts_with("-e")
        });
    if g.expire.is_some() && expire_flag {
        tracing::info!(
            "note: --expire is a hard cap: the command is stopped when it is reached (exit 124); the Go tool's -e only let the lock lapse"
        );
    }
    if let Some(command) = &args.command {
        if !args.shell && command.contains(['"', '\'']) {
            tracing::info!(
                "note: the command string is split with shell-word rules: quotes group words and are removed (the Go tool split on spaces and passed quotes on)"
            );
        }
    }
}

/// The run's slot from at most one source.
fn slot(args: &RunArgs) -> Result<Option<Slot>, Error> {
    let sources: Vec<&'static str> = [
        (args.slot.is_some(), "--slot"),
        (args.slot_from_job_name.is_some(), "--slot-from-job-name"),
        (args.schedule.is_some(), "--schedule"),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .collect();
    if let [a, b, ..] = sources[..] {
        return Err(UsageError::TwoSlotSources(a, b).into());
    }
    if args.time_zone.is_some() && args.schedule.is_none() {
        return Err(UsageError::ZoneWithoutSchedule.into());
    }
    let now = jiff::Timestamp::now();
    let n = match (&args.slot, &args.slot_from_job_name, &args.schedule) {
        (Some(n), _, _) => Some(*n),
        (_, Some(name), _) => Some(slot::from_job_name(name, now)?),
        (_, _, Some(cron)) => Some(slot::from_schedule(cron, args.time_zone.as_deref(), now)?),
        _ => None,
    };
    if n.is_none() && args.retry_failed_slot {
        return Err(UsageError::RetryWithoutSlot.into());
    }
    Ok(n.map(|n| Slot {
        n,
        retry_failed: args.retry_failed_slot,
    }))
}

/// The last record of a run: what happened, in one line.
pub(super) fn summarize(report: &Report, code: u8) {
    let (outcome, status) = match &report.outcome {
        RunOutcome::Ran(s) => ("ran", Some(*s)),
        RunOutcome::Skipped(_) => ("skipped", None),
        RunOutcome::WaitTimedOut(_) => ("wait-timeout", None),
        RunOutcome::HardCap(s) => ("hard-cap", Some(*s)),
        RunOutcome::LeaseLost(s) => ("lease-lost", Some(*s)),
        RunOutcome::Interrupted(_) => ("interrupted", None),
    };
    let status = status.map(|s| s.to_string());
    let held = report.held.map(human);
    let ran = report.ran.map(human);
    tracing::info!(
        outcome,
        exit_code = code,
        fence = report.fence,
        status = status.as_deref(),
        held = held.as_deref(),
        ran = ran.as_deref(),
        "run finished"
    );
}

/// The last record of a command that failed: the error, in one line.
pub(super) fn log_error(e: &Error, code: u8) {
    tracing::error!(outcome = "error", exit_code = code, "{e}");
}
