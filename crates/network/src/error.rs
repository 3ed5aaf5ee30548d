//! Errors of the network crate: each names the network, plugin, file or
//! flag involved and says what to do.

use std::path::PathBuf;

/// Result with the network crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while managing networks and attachments.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input that is not valid: a name, subnet, port, address, flag.
    #[error("{what}: {reason}")]
    Invalid {
        /// The input, named as the user gave it.
        what: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// No network of this name.
    #[error("network {0:?} not found (see `berth network ls`, or create it with `berth network create {0}`)")]
    NotFound(String),
    /// A network of this name exists already.
    #[error("network {0:?} already exists (choose another name, or remove it first)")]
    Exists(String),
    /// Containers are attached to the network.
    #[error("network {name:?} is in use by container(s) {ids} (remove them first)")]
    InUse {
        /// The network.
        name: String,
        /// The attached containers' ids, comma-separated.
        ids: String,
    },
    /// A CNI plugin failed or answered something that is not CNI.
    #[error("network {network:?}: CNI plugin {plugin} {command}: {message}")]
    Plugin {
        /// The network whose conflist was run.
        network: String,
        /// The plugin's type.
        plugin: String,
        /// ADD, DEL or CHECK.
        command: String,
        /// The plugin's error message (or why its answer was refused).
        message: String,
    },
    /// A file system operation on a named path failed.
    #[error("{path}: {cause}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {cause}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        cause: nix::errno::Errno,
    },
    /// A lock could not be taken.
    #[error(transparent)]
    Lock(Box<berth_content::Error>),
}

impl From<berth_content::Error> for Error {
    fn from(e: berth_content::Error) -> Error {
        Error::Lock(Box::new(e))
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// An invalid input.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A failed system call.
    pub fn sys(what: impl Into<String>, cause: nix::errno::Errno) -> Error {
        Error::Sys {
            what: what.into(),
            cause,
        }
    }
}
