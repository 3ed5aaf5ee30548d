//! runc-compatible logging for `berth-runtime`: `--log FILE`,
//! `--log-format text|json`, `--debug`.
//!
//! Lines look exactly like runc's (logrus) so that callers which parse them
//! keep working:
//! - json: `{"level":"error","msg":"container does not exist","time":"2026-11-27T21:20:14Z"}`
//!   — keys sorted, one object per line, RFC 3339 time. containerd's runc
//!   shim reads the `--log` file after a failed command and reports the `msg`
//!   of the last line whose `level` is `error`;
//! - text: `time="2026-11-27T21:20:14Z" level=error msg="container does not exist"`
//!   — logrus' text formatter: values quoted Go-style when they contain
//!   anything but letters, digits and `-._/@^+`.
//!
//! Levels are logrus' names: `trace`, `debug`, `info`, `warning`, `error`.
//! Without `--debug` only info and above are written. Extra tracing fields
//! become extra keys (after `msg` in text, sorted in json).
//!
//! How the binary uses it (runc's `fatal`):
//! ```ignore
//! let cli = Cli::parse();
//! if let Err(e) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
//!     logging::fatal(&e);
//! }
//! if let Err(e) = run(cli) {
//!     logging::fatal(&e); // logs at level error, prints to stderr, exits 1
//! }
//! ```
//! Without `--log` the lines go to stderr (and `fatal` does not print the
//! error a second time), as runc does.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::Context as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// The `--log-format` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// logrus text: `time="..." level=error msg="..."`.
    #[default]
    Text,
    /// logrus JSON: `{"level":"error","msg":"...","time":"..."}`.
    Json,
}

/// True once [`init`] installed a logger that writes to stderr.
static LOGS_TO_STDERR: AtomicBool = AtomicBool::new(false);
/// True once [`init`] installed a logger at all.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Installs the global logger: appends to `log` (created 0644 if missing),
/// or writes to stderr when `log` is `None`; `debug` enables debug lines.
pub fn init(log: Option<&Path>, format: LogFormat, debug: bool) -> anyhow::Result<()> {
    let sink = match log {
        Some(path) => Sink::File(Mutex::new(open_log(path)?)),
        None => Sink::Stderr,
    };
    let to_stderr = matches!(sink, Sink::Stderr);
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let subscriber = tracing_subscriber::registry()
        .with(LogrusLayer { format, sink })
        .with(level);
    tracing::subscriber::set_global_default(subscriber)
        .context("installing the logger: a logger is already installed")?;
    LOGS_TO_STDERR.store(to_stderr, Ordering::Relaxed);
    INITIALIZED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Opens `path` for appending (close-on-exec, as std always opens), creating
/// it with mode 0644.
fn open_log(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .with_context(|| {
            format!(
                "opening log file {}: pass --log a writable file path",
                path.display()
            )
        })
}

/// Logs `err` (with its causes, `outer: inner`, each once) at level error, prints it
/// to stderr unless the log already goes there, and exits with status 1.
/// This is what every `berth-runtime` failure must end in.
pub fn fatal(err: &anyhow::Error) -> ! {
    fatal_with_code(err, 1)
}

/// [`fatal`] with a chosen exit status.
pub fn fatal_with_code(err: &anyhow::Error, code: i32) -> ! {
    let msg = berth_core::error_chain(err.as_ref());
    if INITIALIZED.load(Ordering::Relaxed) {
        tracing::error!("{msg}");
    }
    if !INITIALIZED.load(Ordering::Relaxed) || !LOGS_TO_STDERR.load(Ordering::Relaxed) {
        eprintln!("{msg}");
    }
    std::process::exit(code)
}

enum Sink {
    Stderr,
    File(Mutex<File>),
}

impl Sink {
    /// Writes one whole line with a single write(2), so concurrent writers
    /// (the runtime and its children appending to the same file) never
    /// interleave within a line.
    fn write_line(&self, line: &str) {
        let _ = match self {
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::File(f) => match f.lock() {
                Ok(mut f) => f.write_all(line.as_bytes()),
                Err(poisoned) => poisoned.into_inner().write_all(line.as_bytes()),
            },
        };
    }
}

struct LogrusLayer {
    format: LogFormat,
    sink: Sink,
}

impl<S: Subscriber> Layer<S> for LogrusLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let line = format_line(
            self.format,
            &time,
            *event.metadata().level(),
            &fields.msg,
            &fields.extra,
        );
        self.sink.write_line(&line);
    }
}

#[derive(Default)]
struct Fields {
    msg: String,
    extra: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.extra
                .insert(field.name().to_string(), value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.extra
                .insert(field.name().to_string(), format!("{value:?}"));
        }
    }
}

/// logrus' name for a level.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// One log line, newline included.
fn format_line(
    format: LogFormat,
    time: &str,
    level: Level,
    msg: &str,
    extra: &BTreeMap<String, String>,
) -> String {
    match format {
        LogFormat::Json => {
            // Keys sorted like Go's encoding/json does for logrus' map;
            // reserved keys win over fields of the same name.
            let mut obj: BTreeMap<&str, &str> = extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            obj.insert("level", level_name(level));
            obj.insert("msg", msg);
            obj.insert("time", time);
            let mut line = serde_json::to_string(&obj).unwrap_or_else(|_| {
                // A map of strings always serializes; keep a valid line anyway.
                format!(
                    r#"{{"level":"{}","msg":"","time":"{time}"}}"#,
                    level_name(level)
                )
            });
            line.push('\n');
            line
        }
        LogFormat::Text => {
            let mut line = String::new();
            push_kv(&mut line, "time", time);
            push_kv(&mut line, "level", level_name(level));
            push_kv(&mut line, "msg", msg);
            for (k, v) in extra {
                push_kv(&mut line, k, v);
            }
            line.push('\n');
            line
        }
    }
}

fn push_kv(line: &mut String, key: &str, value: &str) {
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(key);
    line.push('=');
    if needs_quoting(value) {
        go_quote(line, value);
    } else {
        line.push_str(value);
    }
}

/// logrus' TextFormatter rule.
fn needs_quoting(value: &str) -> bool {
    value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c))
}

/// Go's strconv.Quote, for the characters log messages contain.
fn go_quote(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One case: format, level, message, fields, the expected line.
    type Case<'a> = (LogFormat, Level, &'a str, &'a [(&'a str, &'a str)], &'a str);

    /// The exact lines runc 1.1.5 writes for the same events (taken from
    /// `runc --log-format {json,text} state nonexist`), plus fields.
    #[test]
    fn lines_are_logrus() {
        let t = "2026-11-27T21:20:14Z";
        let cases: &[Case<'_>] = &[
            (
                LogFormat::Json,
                Level::ERROR,
                "container does not exist",
                &[],
                r#"{"level":"error","msg":"container does not exist","time":"2026-11-27T21:20:14Z"}"#,
            ),
            (
                LogFormat::Json,
                Level::WARN,
                "say \"hi\"\n",
                &[("hook", "/x"), ("a", "1")],
                r#"{"a":"1","hook":"/x","level":"warning","msg":"say \"hi\"\n","time":"2026-11-27T21:20:14Z"}"#,
            ),
            (
                LogFormat::Text,
                Level::ERROR,
                "container does not exist",
                &[],
                r#"time="2026-11-27T21:20:14Z" level=error msg="container does not exist""#,
            ),
            (
                LogFormat::Text,
                Level::INFO,
                "ok",
                &[("path", "/run/x"), ("q", "a b\t\"c\"")],
                r#"time="2026-11-27T21:20:14Z" level=info msg=ok path=/run/x q="a b\t\"c\"""#,
            ),
        ];
        for (format, level, msg, fields, want) in cases {
            let line = format_line(*format, t, *level, msg, &extra(fields));
            assert_eq!(line, format!("{want}\n"));
        }
    }

    /// Parses a log file the way containerd's runc shim does
    /// (getLastRuntimeError): every line is a JSON object, the last `msg` of
    /// level `error` wins, and `time` must be an RFC 3339 timestamp.
    fn last_runtime_error(log: &str) -> String {
        let mut last = String::new();
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
            chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap())
                .expect("time is RFC 3339");
            if v["level"] == "error" {
                last = v["msg"].as_str().unwrap().trim().to_string();
            }
        }
        last
    }

    #[test]
    fn file_sink_appends_and_shim_finds_the_last_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        std::fs::write(
            &path,
            "{\"level\":\"info\",\"msg\":\"earlier run\",\"time\":\"2026-01-01T00:00:00Z\"}\n",
        )
        .unwrap();
        let layer = LogrusLayer {
            format: LogFormat::Json,
            sink: Sink::File(Mutex::new(open_log(&path).unwrap())),
        };
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(LevelFilter::INFO);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("hidden without --debug");
            tracing::warn!(hook = "/bin/false", "poststop hook failed");
            tracing::error!("first failure");
            tracing::error!("container \"c1\" does not exist");
        });
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(
            log.starts_with("{\"level\":\"info\",\"msg\":\"earlier run\""),
            "{log}"
        );
        assert!(!log.contains("hidden"), "{log}");
        assert!(log.contains("\"level\":\"warning\""), "{log}");
        assert_eq!(log.lines().count(), 4, "{log}");
        assert_eq!(last_runtime_error(&log), "container \"c1\" does not exist");
    }

    #[test]
    fn unwritable_log_names_the_file() {
        let err = open_log(Path::new("/nonexistent-dir/log.json")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir/log.json"));
    }
}
