//! Errors of the content store.

use std::path::PathBuf;

use oci_spec::image::Digest;

/// Result with the content store's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the content store. Each variant names the
/// blob, file or field involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named path.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error (shown, so not also chained as a source).
        cause: std::io::Error,
    },
    /// A digest string that is not `sha256:<64 hex>` or `sha512:<128 hex>`.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The text that was given.
        digest: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    /// The blob is already in the store (a writer is not needed).
    #[error("blob {0} already exists in the content store")]
    AlreadyExists(Digest),
    /// The content written does not hash to the expected digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the data is corrupt or the descriptor is wrong")]
    DigestMismatch {
        /// What was being written (blob digest and its source).
        what: String,
        /// The digest the descriptor promised.
        expected: Digest,
        /// The digest of the bytes actually written.
        actual: Digest,
    },
    /// The content written is not the expected size.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}{}", if actual < expected { " (truncated)" } else { "" })]
    SizeMismatch {
        /// What was being written.
        what: String,
        /// The size the descriptor promised.
        expected: u64,
        /// The bytes actually written.
        actual: u64,
    },
    /// A malformed JSON document (index.json, oci-layout, ...).
    #[error("{path}: invalid JSON: {cause}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The parser's complaint (shown, so not also chained as a source).
        cause: serde_json::Error,
    },
    /// A directory that is not a valid OCI image layout.
    #[error("{path}: not an OCI image layout: {reason}")]
    Layout {
        /// The file or directory involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<berth_core::digest::DigestError> for Error {
    fn from(e: berth_core::digest::DigestError) -> Error {
        Error::InvalidDigest {
            digest: e.digest,
            reason: e.reason,
        }
    }
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}
