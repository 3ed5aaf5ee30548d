//! The error type of every runtime operation.

use std::path::PathBuf;

/// What went wrong, naming the container, file, field or value involved and,
/// where there is one, the fix. Messages that callers (containerd, podman)
/// match on use runc's wording: "container does not exist",
/// "container not running".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with this id exists under the state root.
    #[error("container does not exist")]
    NotExist {
        /// The id asked for.
        id: String,
    },
    /// A container with this id already exists.
    #[error("container with given ID already exists: {id}")]
    Exists {
        /// The duplicate id.
        id: String,
    },
    /// The id contains characters runc refuses.
    #[error("invalid container ID format: {id:?} (use letters, digits, '_', '+', '-' and '.')")]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// The operation needs a live container.
    #[error("container not running")]
    NotRunning {
        /// The container.
        id: String,
    },
    /// The container is in the wrong state for the operation.
    #[error("{0}")]
    BadState(String),
    /// config.json (or a --process file) is missing, malformed or invalid.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field and the problem.
        msg: String,
    },
    /// A signal name or number is not known.
    #[error("invalid signal {0:?}: use a name like TERM, SIGKILL or a number 1-64")]
    BadSignal(String),
    /// A file system or I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The errno.
        source: nix::Error,
    },
    /// The container's init (or an exec'd process) failed while being set up.
    #[error("{0}")]
    Init(String),
    /// A cgroup operation failed. The cgroups error is shown once, in this
    /// message, and deliberately not also exposed as the `source()`: an
    /// error chain printed with `{:#}` would repeat it.
    #[error("cgroups: {0}")]
    Cgroup(berth_cgroups::Error),
    /// A hook failed.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// A console operation failed.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// A rootless container's user namespace could not be set up.
    #[error(transparent)]
    Rootless(#[from] berth_rootless::Error),
}

impl From<berth_cgroups::Error> for Error {
    fn from(e: berth_cgroups::Error) -> Error {
        Error::Cgroup(e)
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an io::Error with context.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Wraps a nix error with context.
pub(crate) fn sys_err(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let context = context.into();
    move |source| Error::Sys { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroups_error_appears_once_in_the_error_chain() {
        let e = Error::from(berth_cgroups::Error::NoCgroupFs);
        let text = e.to_string();
        assert!(text.starts_with("cgroups: no cgroup filesystem"), "{text}");
        assert!(std::error::Error::source(&e).is_none());
    }
}
