//! Errors of the image crate.

use std::path::PathBuf;

/// Result with the image crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong with images. Each variant names the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the content store.
    #[error(transparent)]
    Content(#[from] berth_content::Error),
    /// A reference that does not parse.
    #[error("invalid image reference {input:?}: {reason}")]
    Reference {
        /// What was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// No image record under this name.
    #[error("image {0:?} not found (see `berth images`)")]
    NotFound(String),
    /// A document (manifest, index, config, manifest.json) that is not valid.
    #[error("{what}: {reason}")]
    Invalid {
        /// The document: blob digest and where it came from.
        what: String,
        /// What is wrong and, where possible, how to fix it.
        reason: String,
    },
    /// An I/O error on a named path.
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error (shown, so not also chained as a source).
        cause: std::io::Error,
    },
}

impl From<berth_core::digest::DigestError> for Error {
    fn from(e: berth_core::digest::DigestError) -> Error {
        Error::Content(e.into())
    }
}

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// An invalid-document error.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
