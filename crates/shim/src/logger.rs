//! The shim's log: logrus-style lines (`time=... level=... msg=...`) written
//! to the `log` FIFO containerd opens in the bundle directory (it copies
//! them into its own log). Writes never block: when containerd is not
//! reading (it restarts, or the bundle is that of the group's first
//! container, deleted since), lines are dropped: the write fails with
//! EPIPE, and the SIGPIPE it raises is caught and ignored (see `reaper`).
//! No lock either: the runtime forks from this multithreaded process, and
//! a child that logged while another thread held a lock at the fork would
//! wait forever. Each line is one write(2), whole on a FIFO up to PIPE_BUF
//! bytes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

struct FifoLogger {
    out: Option<File>,
    level: log::LevelFilter,
}

impl log::Log for FifoLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let msg = format!("{}", record.args()).replace('"', "\\\"");
        let line = format!(
            "time=\"{time}\" level={level} msg=\"{msg}\" runtime={}\n",
            crate::RUNTIME_NAME
        );
        if let Some(mut f) = self.out.as_ref() {
            let _ = f.write(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (debug level with `-debug`), writing to `./log`.
pub fn init(debug: bool) {
    let out = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
        .ok();
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger = Box::leak(Box::new(FifoLogger { out, level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
