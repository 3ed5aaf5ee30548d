//! Errors of the registry client. Each names the registry, repository, blob
//! or file involved and, where the user can act, what to do.

use std::path::PathBuf;

/// Result with the client's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be sent or its answer not read (DNS, TCP,
    /// TLS, a connection dropped too often).
    #[error("{url}: {cause}")]
    Network {
        /// The URL requested.
        url: String,
        /// What failed, with its causes.
        cause: String,
    },
    /// The registry refused the credentials, or asked for some and none
    /// were given.
    #[error("{registry}: 401 unauthorized ({scope}): {detail}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What was asked for (e.g. `repository:library/busybox:pull`).
        scope: String,
        /// Why, and what to do.
        detail: String,
    },
    /// The registry answered with a status the protocol does not expect.
    #[error("{what}: the registry answered {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// The request (method, URL).
        what: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error message, if it sent one.
        message: String,
    },
    /// Something the registry sent or the user gave is not valid.
    #[error("{what}: {reason}")]
    Invalid {
        /// The document, header or input.
        what: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An I/O error on a named file.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// From the image store.
    #[error(transparent)]
    Image(Box<berth_image::Error>),
    /// From the content store.
    #[error(transparent)]
    Content(Box<berth_content::Error>),
    /// From unpacking (engine, snapshotter).
    #[error(transparent)]
    Engine(Box<berth_engine::Error>),
}

impl From<berth_image::Error> for Error {
    fn from(e: berth_image::Error) -> Error {
        Error::Image(Box::new(e))
    }
}

impl From<berth_content::Error> for Error {
    fn from(e: berth_content::Error) -> Error {
        Error::Content(Box::new(e))
    }
}

impl From<berth_engine::Error> for Error {
    fn from(e: berth_engine::Error) -> Error {
        Error::Engine(Box::new(e))
    }
}

impl From<berth_snapshot::SnapshotError> for Error {
    fn from(e: berth_snapshot::SnapshotError) -> Error {
        Error::Engine(Box::new(e.into()))
    }
}

impl Error {
    /// An invalid input or document.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A network error on `url`, with every cause of `err` on one line.
    pub(crate) fn network(url: &str, err: &reqwest::Error) -> Error {
        Error::Network {
            url: url.to_string(),
            cause: berth_core::error_chain(err),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}
