//! Log records on stderr: JSON lines (default) or logfmt, level from LOCK_EXEC_LOG or
//! RUST_LOG.
//!
//! A log write must never change what lock-exec does: stderr may be a closed pipe
//! (`lock-exec run … 2>&1 | head -1`), a full disk, or a pipe nobody reads (a stalled log
//! shipper), and a panic or a blocked write there would leave the command unsupervised.
//! So records are formatted here, by hand, and handed to one writer thread through a
//! bounded queue: the runtime never waits for stderr. When the queue is full a record is
//! dropped (and the drops counted in the next record that gets through); write errors are
//! ignored.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::LogFormat;

/// Our own info records; only errors from the AWS SDK and HTTP stack (their warnings
/// repeat, at length, what lock-exec reports in one line).
const DEFAULT_FILTER: &str = "error,lock_exec=info";

/// Fields added to every record from now on (the run's key, owner, cluster).
static CONTEXT: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

/// Records waiting for the writer thread (at most [`QUEUE`] of them).
static WRITER: OnceLock<SyncSender<Message>> = OnceLock::new();

/// Records dropped because the queue was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many records may wait for a slow stderr.
const QUEUE: usize = 256;

/// What the writer thread is sent.
enum Message {
    /// A whole record, newline included.
    Line(String),
    /// Answer on this channel once everything before has been written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The writer thread: one write per record, errors ignored.
fn write_lines(queue: Receiver<Message>) {
    for message in queue {
        match message {
            Message::Line(line) => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Hands a record to the writer thread without waiting (or, before `init`, writes it).
fn emit(line: String) {
    let Some(writer) = WRITER.get() else {
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        return;
    };
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        writer.try_send(Message::Line(line))
    {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits up to `limit` for the records so far to be written: before exiting, so the
/// last record (the run's summary) is not lost, but never for long on a stalled stderr.
pub(crate) fn flush(limit: Duration) {
    let Some(writer) = WRITER.get() else { return };
    let (done, written) = std::sync::mpsc::channel();
    if writer.try_send(Message::Flush(done)).is_ok() {
        let _ = written.recv_timeout(limit);
    }
}

/// Installs the global subscriber.
pub(crate) fn init(format: LogFormat) {
    let directive = std::env::var("LOCK_EXEC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    // A bare level such as "debug" applies to lock-exec only; the SDK stays at error.
    let directive = if directive.contains('=') || directive.contains(',') {
        directive
    } else {
        format!("error,lock_exec={directive}")
    };
    let filter: Targets = directive
        .parse()
        .unwrap_or_else(|_| DEFAULT_FILTER.parse().expect("the default filter parses"));
    let (tx, rx) = sync_channel(QUEUE);
    if std::thread::Builder::new()
        .name("log".into())
        .spawn(move || write_lines(rx))
        .is_ok()
    {
        let _ = WRITER.set(tx);
    }
    let _ = tracing_subscriber::registry()
        .with(Lines { format }.with_filter(filter))
        .try_init();
}

/// Adds `fields` to every later record (replacing earlier values of the same names).
pub(crate) fn set_context(fields: &[(&'static str, Option<&str>)]) {
    let mut ctx = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    for (name, value) in fields {
        ctx.retain(|(n, _)| n != name);
        if let Some(v) = value {
            ctx.push((name, v.to_string()));
        }
    }
}

/// The layer that formats and writes records.
struct Lines {
    /// JSON or logfmt.
    format: LogFormat,
}

/// A field value, typed as far as JSON cares.
enum Value {
    Str(String),
    Num(String),
    Bool(bool),
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Num(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Num(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Num(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            if let Value::Str(s) = value {
                self.message = s;
            }
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        // A clock before 1970 reads as 1970, not a panic.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let time =
            humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + since_epoch).to_string();
        let context: Vec<(&'static str, Value)> = CONTEXT
            .lock()
            .map(|c| c.iter().map(|(n, v)| (*n, Value::Str(v.clone()))).collect())
            .unwrap_or_default();
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            f.fields
                .push(("log_records_dropped", Value::Num(dropped.to_string())));
        }
        // The record's own fields win over the context's.
        let all = f.fields.iter().chain(
            context
                .iter()
                .filter(|(n, _)| !f.fields.iter().any(|(m, _)| m == n)),
        );
        let mut line = String::with_capacity(256);
        match self.format {
            LogFormat::Json => {
                line.push_str("{\"timestamp\":");
                json_str(&mut line, &time);
                line.push_str(",\"level\":");
                json_str(&mut line, level);
                line.push_str(",\"message\":");
                json_str(&mut line, &f.message);
                for (name, value) in all {
                    line.push(',');
                    json_str(&mut line, name);
                    line.push(':');
                    match value {
                        Value::Str(s) => json_str(&mut line, s),
                        Value::Num(n) => line.push_str(n),
                        Value::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
                    }
                }
                line.push('}');
            }
            LogFormat::Text => {
                let _ = write!(line, "time={time} level={level} msg=");
                logfmt_value(&mut line, &f.message);
                for (name, value) in all {
                    let _ = write!(line, " {name}=");
                    match value {
                        Value::Str(s) => logfmt_value(&mut line, s),
                        Value::Num(n) => line.push_str(n),
                        Value::Bool(b) => line.push_str(if *b { "true" } else { "false" }),
                    }
                }
            }
        }
        line.push('\n');
        emit(line);
    }
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `s` as a logfmt value: bare when it can be, else quoted with escapes.
fn logfmt_value(out: &mut String, s: &str) {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c > ' ' && c != '"' && c != '=' && c != '\\' && !c.is_control());
    if bare {
        out.push_str(s);
    } else {
        json_str(out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_logfmt_values_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a \"b\"\n\u{1}");
        assert_eq!(s, r#""a \"b\"\n\u0001""#);
        let mut s = String::new();
        logfmt_value(&mut s, "plain");
        s.push(' ');
        logfmt_value(&mut s, "two words");
        s.push(' ');
        logfmt_value(&mut s, "");
        s.push(' ');
        logfmt_value(&mut s, "a=b");
        assert_eq!(s, r#"plain "two words" "" "a=b""#);
    }
}
