//! A container's output log: one JSON object per line, docker's
//! `json-file` shape (`{"log":"text\n","stream":"stdout","time":"…"}`),
//! written by the container's monitor and read by `berth logs`. When the
//! file passes its size limit it is renamed to `ctr.log.1` (replacing the
//! previous one) and a new file begins.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The size at which a log file is rotated, by default.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;

/// The longest line kept whole; longer output is split into entries of
/// this size (the container can write without newlines forever).
const MAX_LINE: usize = 16 << 10;

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The text, with its newline when it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the monitor read it (RFC 3339, nanoseconds).
    pub time: String,
}

/// Appends a container's output to its log file, line by line.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    /// Unfinished lines of stdout and stderr.
    partial: [Vec<u8>; 2],
}

/// Which stream output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// fd 1 (and a terminal's output).
    Stdout,
    /// fd 2.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl LogWriter {
    /// Opens (appending) the log at `path`, rotated past `max_size` bytes.
    pub fn open(path: &Path, max_size: u64) -> Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Logs `data` read from `stream`: each finished line is an entry; an
    /// unfinished one waits for its end (or [`LogWriter::flush_partial`]).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<()> {
        let idx = stream as usize;
        let mut rest = data;
        while !rest.is_empty() {
            let take = match rest.iter().position(|&b| b == b'\n') {
                Some(n) => n + 1,
                None => rest.len(),
            };
            self.partial[idx].extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let done = self.partial[idx].ends_with(b"\n") || self.partial[idx].len() >= MAX_LINE;
            if done {
                let line = std::mem::take(&mut self.partial[idx]);
                self.entry(stream, &line)?;
            }
        }
        Ok(())
    }

    /// Logs what is left of unfinished lines (when the container exited).
    pub fn flush_partial(&mut self) -> Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.entry(stream, &line)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, stream: Stream, line: &[u8]) -> Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: stream.name().to_string(),
            time: berth_runtime::state::rfc3339_nano(&chrono::Utc::now()),
        };
        let mut data =
            serde_json::to_vec(&entry).map_err(|e| Error::invalid("log entry", e.to_string()))?;
        data.push(b'\n');
        if self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file
            .write_all(&data)
            .map_err(|e| Error::io(&self.path, e))?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let old = rotated(&self.path);
        std::fs::rename(&self.path, &old).map_err(|e| Error::io(&old, e))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// The rotated file of the log at `path`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Reads the log at `path`, the rotated file first: every entry, and
/// where the current file ends (to follow it from there).
pub fn read_log(path: &Path) -> Result<(Vec<LogEntry>, u64)> {
    let mut entries = Vec::new();
    read_from(&rotated(path), 0, &mut entries)?;
    let end = read_from(path, 0, &mut entries)?;
    Ok((entries, end))
}

/// Appends the entries of the log at `path` from byte `offset` on to
/// `out`; returns the offset after the last whole line read. A file that
/// does not exist has no entries; a file shorter than `offset` was rotated
/// and is read from its start.
pub fn read_from(path: &Path, offset: u64, out: &mut Vec<LogEntry>) -> Result<u64> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(path, e)),
    };
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut pos = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(pos))
        .map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos += n as u64;
        if let Ok(entry) = serde_json::from_str(&line) {
            out.push(entry);
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_joined_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        let mut w = LogWriter::open(&path, 300).unwrap();
        w.write(Stream::Stdout, b"one\ntw").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        w.write(Stream::Stdout, b"o\n").unwrap();
        let (entries, _) = read_log(&path).unwrap();
        let text: Vec<_> = entries
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            text,
            [
                ("stdout", "one\n"),
                ("stderr", "err\n"),
                ("stdout", "two\n")
            ]
        );
        for i in 0..10 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        w.write(Stream::Stdout, b"tail").unwrap();
        w.flush_partial().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 300);
        assert!(rotated(&path).exists(), "rotated past 300 bytes");
        let (entries, _) = read_log(&path).unwrap();
        assert_eq!(entries.last().unwrap().log, "tail");
        assert!(
            entries.len() < 14,
            "the oldest entries went with the rotation"
        );
        assert!(entries.windows(2).all(|w| w[0].time <= w[1].time));
    }
}
