//! Reading, writing and parsing cgroup files: the one place that turns
//! file I/O into [`Error`]s naming the file (and, for writes, the value and
//! a hint), and the parsers of the kernel's generic formats (a single
//! value, flat "key value" lines). Every other module reads and writes
//! cgroup files through these.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// Reads a whole cgroup or proc file.
pub(crate) fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|err| Error::Read {
        path: path.to_path_buf(),
        err,
    })
}

/// Writes `value` to an existing cgroup file in one write(2).
pub(crate) fn write(path: &Path, value: &str) -> Result<(), Error> {
    CgroupFile::open(path)?.write(value)
}

/// A cgroup file kept open for several writes (each write(2) is one
/// request to the kernel, e.g. one device rule).
pub(crate) struct CgroupFile {
    path: PathBuf,
    file: fs::File,
}

impl CgroupFile {
    /// Opens an existing cgroup file for writing.
    pub(crate) fn open(path: &Path) -> Result<CgroupFile, Error> {
        match fs::OpenOptions::new().write(true).open(path) {
            Ok(file) => Ok(CgroupFile {
                path: path.to_path_buf(),
                file,
            }),
            Err(source) => Err(write_error(path, "", source)),
        }
    }

    /// Writes `value` in one write(2).
    pub(crate) fn write(&mut self, value: &str) -> Result<(), Error> {
        self.file
            .write_all(value.as_bytes())
            .map_err(|source| write_error(&self.path, value, source))
    }
}

fn write_error(path: &Path, value: &str, source: std::io::Error) -> Error {
    let hint = match source.kind() {
        ErrorKind::NotFound => {
            "; this kernel or hierarchy does not provide that file (controller not mounted or not enabled)".to_string()
        }
        _ if source.raw_os_error() == Some(libc::EINVAL)
            || source.raw_os_error() == Some(libc::EBUSY) =>
        {
            "; the kernel refused the value: check the limit is valid and not below current usage".to_string()
        }
        _ => String::new(),
    };
    Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        err: source,
        hint,
    }
}

/// Reads a number; "max" (v2's unlimited) reads as `u64::MAX`, as runc
/// reports it.
pub(crate) fn num(path: &Path) -> Result<u64, Error> {
    let text = read(path)?;
    let t = text.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        content: t.to_string(),
    })
}

/// Like [`num`] but 0 when the file does not exist (optional counters).
pub(crate) fn opt_num(path: &Path) -> Result<u64, Error> {
    if path.exists() {
        num(path)
    } else {
        Ok(0)
    }
}

/// Parses "key value" lines (memory.stat, cpu.stat, ...).
pub(crate) fn keyed(path: &Path) -> Result<HashMap<String, u64>, Error> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for line in read(path)?.lines() {
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Ok(v) = v.parse() {
                out.insert(k.to_string(), v);
            }
        }
    }
    Ok(out)
}
