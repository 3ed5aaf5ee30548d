//! Advisory file locks (flock) between berth processes sharing a data root.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Shared (many holders) or exclusive (one holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once (e.g. ingests while no GC runs).
    Shared,
    /// One holder (e.g. GC, or an image-record update).
    Exclusive,
}

/// A held flock on a file; released when dropped (or when the process dies).
pub struct FileLock {
    _lock: Flock<File>,
}

impl std::fmt::Debug for FileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileLock")
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

impl FileLock {
    /// Takes the lock on `path` (created if missing), waiting for it.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<FileLock> {
        let file = open_lock_file(path)?;
        let arg = match mode {
            LockMode::Shared => FlockArg::LockShared,
            LockMode::Exclusive => FlockArg::LockExclusive,
        };
        let lock = Flock::lock(file, arg)
            .map_err(|(_, errno)| Error::io(path, std::io::Error::from(errno)))?;
        Ok(FileLock { _lock: lock })
    }

    /// Takes the lock on `path` only if nobody holds a conflicting one.
    pub fn try_acquire(path: &Path, mode: LockMode) -> Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        let arg = match mode {
            LockMode::Shared => FlockArg::LockSharedNonblock,
            LockMode::Exclusive => FlockArg::LockExclusiveNonblock,
        };
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(Some(FileLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(Error::io(path, std::io::Error::from(errno))),
        }
    }
}
