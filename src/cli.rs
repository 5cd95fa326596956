//! Command-line interface: options, environment variables, defaults and parsing rules.
//!
//! Options keep the original Go tool's names (`run <key> '<cmd>'`, `unlock <key>`,
//! `-t/-r/-e`) and are accepted after positional arguments, as its README shows.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run a command under a DynamoDB lock with a renewing lease, at most once at a time
/// across clusters.
#[derive(Debug, Parser)]
#[command(
    name = "lock-exec",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct Global {
    /// DynamoDB table holding the locks (partition key `key`, type S).
    #[arg(
        short = 't',
        long,
        env = "LOCK_EXEC_TABLE",
        default_value = "lock-exec",
        global = true
    )]
    pub table: String,

    /// AWS region [default: AWS_REGION, the profile, then instance metadata].
    #[arg(short = 'r', long, env = "LOCK_EXEC_REGION", global = true)]
    pub region: Option<String>,

    /// DynamoDB endpoint, e.g. http://127.0.0.1:8000 for a local server
    /// (AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_DYNAMODB work too).
    #[arg(
        long,
        env = "LOCK_EXEC_ENDPOINT_URL",
        global = true,
        value_name = "URL"
    )]
    pub endpoint_url: Option<String>,

    /// Hard cap on how long one run may hold the lock; the command is stopped at it
    /// (exit 124) [default: 24h].
    #[arg(short = 'e', long, env = "LOCK_EXEC_EXPIRE", global = true, value_parser = duration, value_name = "DURATION")]
    pub expire: Option<Duration>,

    /// Log format on stderr; the level comes from LOCK_EXEC_LOG or RUST_LOG (default info).
    #[arg(long, env = "LOCK_EXEC_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lock KEY, run the command while renewing the lease, release KEY when it ends.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Release KEY if it is free or its lease lapsed; a live lease needs --force.
    Unlock(UnlockArgs),
    /// Show who holds KEY.
    Status(StatusArgs),
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

Exit codes: the command's own; 128+N if it died of signal N; --locked-exit-code (default 0) if
KEY was held; 124 hard cap reached; 125 lock-exec failed (settings, DynamoDB, lost lease);
126 not executable; 127 not found.";

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The key to lock (1 to 2048 bytes of UTF-8).
    pub key: String,

    /// The command as one string (the original tool's form).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,

    /// The command as exact arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    pub argv: Vec<OsString>,

    /// Run COMMAND with /bin/sh -c instead of splitting it.
    #[arg(long)]
    pub shell: bool,

    /// How long one renewal keeps the key; a crashed holder frees it after at most this.
    #[arg(long, env = "LOCK_EXEC_LEASE", value_parser = duration, value_name = "DURATION", default_value = "30s")]
    pub lease: Duration,

    /// Time between renewals [default: lease/3].
    #[arg(long, env = "LOCK_EXEC_HEARTBEAT", value_parser = duration, value_name = "DURATION")]
    pub heartbeat: Option<Duration>,

    /// Time between SIGTERM and SIGKILL: after a forwarded shutdown signal, a lost lease
    /// or the hard cap [default: the smaller of 10s and lease/3].
    #[arg(long, env = "LOCK_EXEC_GRACE", value_parser = duration, value_name = "DURATION")]
    pub grace: Option<Duration>,

    /// How far another host's clock may run ahead of this one's; the command is stopped
    /// this much before the lease end it wrote [default: the smaller of 1s and lease/10].
    #[arg(long, env = "LOCK_EXEC_MAX_CLOCK_SKEW", value_parser = duration, value_name = "DURATION")]
    pub max_clock_skew: Option<Duration>,

    /// Owner name stored in the lock [default: the host name, i.e. the pod name].
    #[arg(long, env = "LOCK_EXEC_OWNER")]
    pub owner: Option<String>,

    /// Cluster name stored in the lock, for operators.
    #[arg(long, env = "LOCK_EXEC_CLUSTER")]
    pub cluster: Option<String>,

    /// Wait up to this long for a held key (polling with jitter); 0 skips at once.
    #[arg(long, env = "LOCK_EXEC_WAIT", value_parser = duration, value_name = "DURATION", default_value = "0s")]
    pub wait: Duration,

    /// Keep the key locked until this long after acquisition, even if the command ends
    /// sooner (stops a late cron in another cluster from running the job again).
    #[arg(long, env = "LOCK_EXEC_MIN_HOLD", value_parser = duration, value_name = "DURATION", default_value = "0s")]
    pub min_hold: Duration,

    /// Exit code when the key is held and the command is skipped (0-255).
    #[arg(
        long,
        env = "LOCK_EXEC_LOCKED_EXIT_CODE",
        default_value_t = 0,
        value_name = "CODE"
    )]
    pub locked_exit_code: u8,
}

/// `unlock` options.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The key to release.
    pub key: String,
    /// Release a live lease too; its holder notices at its next heartbeat and stops its
    /// command (exit 125).
    #[arg(long)]
    pub force: bool,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The key to show.
    pub key: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `status` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One human-readable line.
    Text,
    /// One JSON object.
    Json,
}

/// `install` options.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Directory to copy the binary into, as DIR/lock-exec.
    pub dir: PathBuf,
}

/// Parses a duration such as `30s`, `5m`, `1h30m` or `250ms`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("'{s}' is not a duration: use a number and a unit, e.g. 30s, 5m, 24h"))
}

/// Longest key DynamoDB accepts for a partition key.
pub const MAX_KEY_BYTES: usize = 2048;

/// Checks a lock key.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty: give a non-empty KEY".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key is {} bytes; DynamoDB allows at most {MAX_KEY_BYTES} for a partition key",
            key.len()
        ));
    }
    Ok(())
}

impl RunArgs {
    /// The argv to execute, from either form.
    pub fn argv(&self) -> Result<Vec<OsString>, String> {
        match (&self.command, self.argv.is_empty()) {
            (Some(_), false) => {
                Err("give the command either as one string or after --, not both".into())
            }
            (None, true) => Err(
                "no command: add it as one string or after --, e.g. lock-exec run KEY -- echo hi"
                    .into(),
            ),
            (None, false) if self.shell => {
                Err("--shell takes the command as one string, not after --".into())
            }
            (None, false) => Ok(self.argv.clone()),
            (Some(s), true) if s.trim().is_empty() => Err("the command string is empty".into()),
            (Some(s), true) if self.shell => Ok(vec!["/bin/sh".into(), "-c".into(), s.into()]),
            (Some(s), true) => {
                let words = shell_words::split(s)
                    .map_err(|_| format!("the command string has an unterminated quote: {s}"))?;
                if words.first().is_none_or(|w| w.is_empty()) {
                    return Err("the command string has no program".into());
                }
                Ok(words.into_iter().map(OsString::from).collect())
            }
        }
    }
}

/// Turns a clap error into one line for stderr.
pub fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first_paragraph = text.split("\n\n").next().unwrap_or_default();
    let line = first_paragraph
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!("{line} (see lock-exec --help)")
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
    fn keys_are_checked() {
        assert!(validate_key("").is_err());
        assert!(validate_key(&"x".repeat(2049)).is_err());
        assert!(validate_key(&"é".repeat(1024)).is_ok());
        assert!(validate_key("jobs/nightly report").is_ok());
    }

    #[test]
    fn clap_errors_fit_on_one_line() {
        let err = parse(&["run"]).unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'));
        assert!(line.contains("<KEY>"), "{line}");
    }
}
