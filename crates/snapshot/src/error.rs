//! The snapshotter's error type: every failure names the snapshot, file or
//! layer involved.

use std::path::{Path, PathBuf};

use crate::Driver;

/// Errors from the snapshotter.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No snapshot has this key or name.
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    /// The key or name is taken.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// The store was created with another driver.
    #[error("snapshot store {root} uses the {stored:?} driver, not {asked:?}: open it without a driver or use another root")]
    DriverMismatch {
        /// The store.
        root: PathBuf,
        /// Driver recorded in its metadata.
        stored: Driver,
        /// Driver asked for.
        asked: Driver,
    },
    /// The operation needs a different kind of snapshot.
    #[error("snapshot {key:?} is {actual}, but this needs {expected}")]
    WrongKind {
        /// Key or name.
        key: String,
        /// What it is.
        actual: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// Other snapshots are built on this one.
    #[error("snapshot {key:?} is the parent of {children:?}: remove those first")]
    HasChildren {
        /// Key or name.
        key: String,
        /// Dependent snapshots.
        children: Vec<String>,
    },
    /// Filesystem error under the snapshotter root.
    #[error("snapshotter {path}: {op}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata file is unreadable.
    #[error("snapshot metadata {path} is corrupt: {detail}; move it away to start an empty store")]
    Corrupt {
        /// metadata.json.
        path: PathBuf,
        /// Parser message.
        detail: String,
    },
    /// Mounting failed.
    #[error("mount on {target}: {detail}")]
    Mount {
        /// Mount point.
        target: PathBuf,
        /// What failed.
        detail: String,
    },
}

pub(crate) fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}
