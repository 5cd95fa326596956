//! Command-line interface: options, environment variables, defaults and parsing rules.
//!
//! Options keep the original Go tool's names (`run <key> '<cmd>'`, `unlock <key>`,
//! `-t/-r/-e`) and are accepted after positional arguments, as its README shows.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::UsageError;

/// Run a command under a DynamoDB lock with a renewing lease, at most once at a time
/// across clusters.
#[derive(Debug, Parser)]
#[command(
    name = "lock-exec",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub(crate) global: Global,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// DynamoDB table holding the locks (partition key `key`, type S).
    #[arg(
        short = 't',
        long,
        env = "LOCK_EXEC_TABLE",
        default_value = "lock-exec",
        global = true
    )]
    pub(crate) table: String,

    /// AWS region [default: AWS_REGION, the profile, then instance metadata].
    #[arg(short = 'r', long, env = "LOCK_EXEC_REGION", global = true)]
    pub(crate) region: Option<String>,

    /// DynamoDB endpoint, e.g. http://127.0.0.1:8000 for a local server
    /// (AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_DYNAMODB work too).
    #[arg(
        long,
        env = "LOCK_EXEC_ENDPOINT_URL",
        global = true,
        value_name = "URL"
    )]
    pub(crate) endpoint_url: Option<String>,

    /// Hard cap on how long one run may hold the lock; the command is stopped at it
    /// (exit 124) [default: 24h].
    #[arg(short = 'e', long, env = "LOCK_EXEC_EXPIRE", global = true, value_parser = duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) expire: Option<Duration>,

    /// Log format on stderr; the level comes from LOCK_EXEC_LOG or RUST_LOG (default info).
    #[arg(long, env = "LOCK_EXEC_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Json)]
    pub(crate) log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One JSON object per line.
    Json,
    /// logfmt: `key=value` pairs, values with spaces quoted.
    Text,
}

/// The commands.
// One value per process: the size of `run`'s options costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Lock KEY, run the command while renewing the lease, release KEY when it ends.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Free KEY if its lease lapsed; a live lease needs --force.
    Unlock(UnlockArgs),
    /// Show who holds KEY.
    Status(StatusArgs),
    /// List every key in the table with its holder.
    List(ListArgs),
    /// Create the lock table (on-demand, TTL on `ttl`); fine if it already exists.
    CreateTable,
    /// Copy this binary and the CA bundle into DIR (for an init container sharing an emptyDir).
    Install(InstallArgs),
    /// Print the version.
    Version,
}

const RUN_HELP: &str = "\
The command is either ONE string, split with shell-word rules (quotes honoured, no expansion,
no shell), or the exact argv after `--`:
  lock-exec run nightly-report 'report --title \"hello world\"'
  lock-exec run nightly-report -- report --title 'hello world'
  lock-exec run nightly-report --shell 'report | gzip > /tmp/out.gz'

Once per schedule occurrence: give the occurrence with --slot, --slot-from-job-name (a
CronJob's Job name) or --schedule; a run whose slot is already done skips.

Exit codes: the command's own; 128+N if it died of signal N; --locked-exit-code (default 0) if
KEY was held or the slot done; --wait-exit-code (default 75) if --wait ran out; 124 hard cap
reached; 125 lock-exec failed (settings, DynamoDB, lost lease); 126 not executable; 127 not
found.";

/// `run` options.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The key to lock (1 to 2048 bytes of UTF-8).
    pub(crate) key: String,

    /// The command as one string (the original tool's form).
    #[arg(value_name = "COMMAND")]
    pub(crate) command: Option<String>,

    /// The command as exact arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    pub(crate) argv: Vec<OsString>,

    /// Run COMMAND with /bin/sh -c instead of splitting it.
    #[arg(long)]
    pub(crate) shell: bool,

    /// How long one renewal keeps the key; a crashed holder frees it after at most this
    /// (at least 1s).
    #[arg(long, env = "LOCK_EXEC_LEASE", value_parser = duration, value_name = "DURATION", default_value = "30s", allow_hyphen_values = true)]
    pub(crate) lease: Duration,

    /// Time between renewals [default: lease/3].
    #[arg(long, env = "LOCK_EXEC_HEARTBEAT", value_parser = duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) heartbeat: Option<Duration>,

    /// Time between SIGTERM and SIGKILL: after a forwarded shutdown signal, a lost lease
    /// or the hard cap [default: the smaller of 10s and lease/3].
    #[arg(long, env = "LOCK_EXEC_GRACE", value_parser = duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) grace: Option<Duration>,

    /// How far another host's clock may run ahead of this one's; the command is stopped
    /// this much before the lease end it wrote [default: the smaller of 1s and lease/10].
    #[arg(long, env = "LOCK_EXEC_MAX_CLOCK_SKEW", value_parser = duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) max_clock_skew: Option<Duration>,

    /// Owner name stored in the lock [default: the host name, i.e. the pod name].
    #[arg(long, env = "LOCK_EXEC_OWNER")]
    pub(crate) owner: Option<String>,

    /// Cluster name stored in the lock, for operators.
    #[arg(long, env = "LOCK_EXEC_CLUSTER")]
    pub(crate) cluster: Option<String>,

    /// Wait up to this long for a held key; 0 skips at once.
    #[arg(long, env = "LOCK_EXEC_WAIT", value_parser = duration, value_name = "DURATION", default_value = "0s", allow_hyphen_values = true)]
    pub(crate) wait: Duration,

    /// Keep the key locked until this long after acquisition, even if the command ends
    /// sooner (a late cron in another cluster then skips).
    #[arg(long, env = "LOCK_EXEC_MIN_HOLD", value_parser = duration, value_name = "DURATION", default_value = "0s", allow_hyphen_values = true)]
    pub(crate) min_hold: Duration,

    /// Exit code when the key is held or the slot done and the command is skipped (0-255).
    #[arg(
        long,
        env = "LOCK_EXEC_LOCKED_EXIT_CODE",
        default_value_t = 0,
        value_name = "CODE",
        allow_hyphen_values = true
    )]
    pub(crate) locked_exit_code: u8,

    /// Exit code when --wait runs out while the key is held (0-255).
    #[arg(
        long,
        env = "LOCK_EXEC_WAIT_EXIT_CODE",
        default_value_t = crate::exit::WAIT_TIMED_OUT,
        value_name = "CODE",
        allow_hyphen_values = true
    )]
    pub(crate) wait_exit_code: u8,

    /// The schedule occurrence this run is for (by convention its scheduled time in
    /// minutes since the Unix epoch); a run for a slot already done skips.
    #[arg(long, env = "LOCK_EXEC_SLOT", value_parser = crate::slot::parse_slot, value_name = "N", allow_hyphen_values = true)]
    pub(crate) slot: Option<u64>,

    /// Take the slot from a CronJob's Job name, `<cronjob>-<minutes since the epoch>`
    /// (the pod label batch.kubernetes.io/job-name).
    #[arg(long, env = "LOCK_EXEC_JOB_NAME", value_name = "NAME")]
    pub(crate) slot_from_job_name: Option<String>,

    /// Take the slot from a cron schedule: its occurrence nearest to now.
    #[arg(long, env = "LOCK_EXEC_SCHEDULE", value_name = "CRON")]
    pub(crate) schedule: Option<String>,

    /// IANA time zone of --schedule [default: UTC].
    #[arg(long, env = "LOCK_EXEC_TIME_ZONE", value_name = "TZ")]
    pub(crate) time_zone: Option<String>,

    /// Complete the slot only when the command exits 0, so another cluster retries a
    /// failed occurrence (by default any exit completes it).
    #[arg(long, env = "LOCK_EXEC_RETRY_FAILED_SLOT")]
    pub(crate) retry_failed_slot: bool,
}

/// `unlock` options.
#[derive(Debug, Args)]
pub(crate) struct UnlockArgs {
    /// The key to free.
    pub(crate) key: String,
    /// Also a live lease: a running holder is revoked (it stops its command at its next
    /// renewal, exit 125) and the key is free when its lease ends.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `status` options.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The key to show.
    pub(crate) key: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `list` options.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub(crate) prefix: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `status` and `list` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// For people.
    Text,
    /// JSON.
    Json,
}

/// `install` options.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// Directory to copy the binary into, as DIR/lock-exec.
    pub(crate) dir: PathBuf,
}

/// The longest duration any option takes: far beyond any job, and far from the year 2262
/// where Unix nanoseconds end.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

/// Parses a duration such as `30s`, `5m`, `1h30m` or `250ms`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("'{s}': durations cannot be negative"));
    }
    // A bare 0 means zero, whatever the unit.
    if t.chars().all(|c| c == '0') && !t.is_empty() {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => {
            format!("'{s}' is too long: at most 3650d (10 years)")
        }
        _ => format!("'{s}' is not a duration: use a number and a unit, e.g. 30s, 5m, 24h"),
    })?;
    if d > MAX_DURATION {
        return Err(format!("'{s}' is too long: at most 3650d (10 years)"));
    }
    Ok(d)
}

/// Longest key DynamoDB accepts for a partition key.
pub(crate) const MAX_KEY_BYTES: usize = 2048;

/// Checks a lock key.
pub(crate) fn validate_key(key: &str) -> Result<(), UsageError> {
    if key.is_empty() {
        return Err(UsageError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(UsageError::KeyTooLong(key.len()));
    }
    Ok(())
}

impl RunArgs {
    /// The argv to execute, from either form.
    pub(crate) fn argv(&self) -> Result<Vec<OsString>, UsageError> {
        match (&self.command, self.argv.is_empty()) {
            (Some(_), false) => Err(UsageError::BothCommandForms),
            (None, true) => Err(UsageError::NoCommand),
            (None, false) if self.shell => Err(UsageError::ShellWithArgv),
            (None, false) if self.argv[0].is_empty() => Err(UsageError::NoProgram),
            (None, false) => Ok(self.argv.clone()),
            (Some(s), true) if s.trim().is_empty() => Err(UsageError::EmptyCommand),
            (Some(s), true) if self.shell => Ok(vec!["/bin/sh".into(), "-c".into(), s.into()]),
            (Some(s), true) => {
                let words =
                    shell_words::split(s).map_err(|_| UsageError::UnterminatedQuote(s.clone()))?;
                if words.first().is_none_or(|w| w.is_empty()) {
                    return Err(UsageError::NoProgram);
                }
                Ok(words.into_iter().map(OsString::from).collect())
            }
        }
    }
}

/// What to do with a command line clap did not accept.
pub(crate) enum ParseError {
    /// Help or version text for stdout (exit 0).
    Display(String),
    /// One line saying what is wrong and how to fix it (exit 125).
    Usage(String),
}

/// Turns a clap error into help text or one line, with a hint where clap has one: a
/// similar option, or the `--` a command with options needs.
pub(crate) fn parse_error(err: clap::Error) -> ParseError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            return ParseError::Display(err.render().to_string())
        }
        // `lock-exec help --help`: clap's own help subcommand takes no options.
        ErrorKind::InvalidSubcommand if std::env::args_os().nth(1).is_some_and(|a| a == "help") => {
            use clap::CommandFactory;
            return ParseError::Display(Cli::command().render_long_help().to_string());
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            return ParseError::Usage(
                "missing command: use run, unlock, status, list, create-table, install or version (see lock-exec --help)".into(),
            )
        }
        _ => {}
    }
    let text = err.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let mut line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(stripped) = line.strip_prefix("error: ") {
        line = stripped.to_string();
    }
    let suggested = err.get(ContextKind::SuggestedArg).and_then(|v| match v {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        _ => None,
    });
    let invalid = err.get(ContextKind::InvalidArg).map(|v| v.to_string());
    let in_run =
        std::env::args().nth(1).as_deref() == Some("run") || std::env::args().any(|a| a == "run");
    if let Some(s) = suggested.filter(|s| s.starts_with("--") && s.len() > 2 && !s.contains(' ')) {
        line.push_str(&format!(" (did you mean {s}?)"));
    } else if in_run
        && matches!(
            err.kind(),
            ErrorKind::UnknownArgument | ErrorKind::TooManyValues
        )
        && invalid.is_some()
    {
        line.push_str(
            " (give a command with its own options after --: lock-exec run KEY -- ls -la)",
        );
    } else if matches!(err.kind(), ErrorKind::UnknownArgument) {
        line.push_str(" (to pass it as a value, put it after --)");
    }
    ParseError::Usage(format!("{line} (see lock-exec --help)"))
}

/// The log format asked for, read without clap (for errors clap reports).
pub(crate) fn early_log_format() -> LogFormat {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let from_args = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--log-format=")
            .map(str::to_string)
            .or_else(|| {
                (a == "--log-format")
                    .then(|| args.get(i + 1).cloned())
                    .flatten()
            })
    });
    match from_args
        .or_else(|| std::env::var("LOCK_EXEC_LOG_FORMAT").ok())
        .as_deref()
    {
        Some("text") => LogFormat::Text,
        _ => LogFormat::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lock-exec").chain(args.iter().copied()))
    }

    fn run_argv(args: &[&str]) -> Result<Vec<String>, String> {
        let Command::Run(run) = parse(args).map_err(|e| e.to_string())?.command else {
            panic!("not run")
        };
        run.argv()
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn seed_form_splits_with_quotes_and_accepts_options_after() {
        let cli = parse(&[
            "run",
            "testkey",
            r#"echo "hello world""#,
            "-t",
            "loomctl-locks",
        ])
        .unwrap();
        assert_eq!(cli.global.table, "loomctl-locks");
        assert_eq!(
            run_argv(&["run", "k", r#"echo "hello world""#]).unwrap(),
            ["echo", "hello world"]
        );
    }

    #[test]
    fn argv_after_double_dash_is_exact() {
        assert_eq!(
            run_argv(&["run", "k", "--", "printf", "%s", "-t", "a b"]).unwrap(),
            ["printf", "%s", "-t", "a b"]
        );
        assert_eq!(
            run_argv(&["run", "k", "--shell", "echo $HOME"]).unwrap(),
            ["/bin/sh", "-c", "echo $HOME"]
        );
    }

    #[test]
    fn bad_commands_are_rejected_with_a_reason() {
        assert!(run_argv(&["run", "k"]).unwrap_err().contains("no command"));
        assert!(run_argv(&["run", "k", "  "]).unwrap_err().contains("empty"));
        assert!(run_argv(&["run", "k", "echo 'oops"])
            .unwrap_err()
            .contains("unterminated"));
        assert!(run_argv(&["run", "k", "a", "--", "b"])
            .unwrap_err()
            .contains("not both"));
        assert!(parse(&["run", "k", "a", "b"]).is_err());
        assert!(parse(&["run", "k", "--locked-exit-code", "256", "x"]).is_err());
        assert!(parse(&["run", "k", "--lease", "soon", "x"]).is_err());
    }

    #[test]
    fn durations_are_bounded_and_never_negative() {
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert!(duration("-5s").unwrap_err().contains("cannot be negative"));
        for long in ["300y", "18000000000000000000s", "3651d"] {
            assert!(
                duration(long).unwrap_err().contains("at most 3650d"),
                "{long}: {:?}",
                duration(long)
            );
        }
        assert_eq!(duration("3650d"), Ok(MAX_DURATION));
        assert!(duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(validate_key(""), Err(UsageError::EmptyKey));
        assert_eq!(
            validate_key(&"x".repeat(2049)),
            Err(UsageError::KeyTooLong(2049))
        );
        assert!(validate_key(&"é".repeat(1024)).is_ok());
        assert!(validate_key("jobs/nightly report").is_ok());
    }
}
