//! Errors a registry request can end in, with the distribution-spec codes
//! and HTTP statuses clients act on.

use axum::http::StatusCode;

/// An error code from the distribution spec (plus `UNSUPPORTED` and
/// `TOOMANYREQUESTS`), sent in the JSON error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The blob is not known to the repository.
    BlobUnknown,
    /// The upload is malformed or was given bad data.
    BlobUploadInvalid,
    /// The upload session does not exist (finished, cancelled or never made).
    BlobUploadUnknown,
    /// The given digest does not match the content or is malformed.
    DigestInvalid,
    /// A manifest references a blob the repository does not have.
    ManifestBlobUnknown,
    /// The manifest is malformed.
    ManifestInvalid,
    /// The manifest is not known to the repository.
    ManifestUnknown,
    /// The repository name is malformed.
    NameInvalid,
    /// The repository is not known.
    NameUnknown,
    /// Content length does not match, or the content is too large.
    SizeInvalid,
    /// Authentication is required.
    Unauthorized,
    /// The credentials do not allow this.
    Denied,
    /// The operation is not supported (for example writes in read-only mode).
    Unsupported,
    /// The client sent too many requests.
    TooManyRequests,
}

impl Code {
    /// The code as written in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
        }
    }

    /// The HTTP status that usually goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A failed request: what to send back and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec error with a message for the client.
    #[error("{}: {message}", code.as_str())]
    Spec {
        /// The spec code.
        code: Code,
        /// The HTTP status (usually `code.status()`).
        status: StatusCode,
        /// What went wrong and what to do, naming the input.
        message: String,
    },
    /// A requested byte range cannot be satisfied (416).
    #[error("range not satisfiable: {0}")]
    Range(String),
    /// Storage failed.
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A spec error with the code's usual status.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error::Spec {
            code,
            status: code.status(),
            message: message.into(),
        }
    }

    /// A spec error with an explicit status.
    pub fn with_status(code: Code, status: StatusCode, message: impl Into<String>) -> Error {
        Error::Spec {
            code,
            status,
            message: message.into(),
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Spec { status, .. } => *status,
            Error::Range(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::Io(e) if unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON error body (`{"errors":[{"code","message","detail"}]}`).
    pub fn body(&self) -> serde_json::Value {
        let (code, message) = match self {
            Error::Spec { code, message, .. } => (code.as_str(), message.clone()),
            Error::Range(m) => (
                Code::BlobUploadInvalid.as_str(),
                format!("range not satisfiable: {m}"),
            ),
            Error::Io(e) if unavailable(e) => (
                "UNAVAILABLE",
                format!(
                    "storage unavailable: {e}; this replica cannot reach its storage, retry \
                     (a load balancer should use another replica, see /readyz)"
                ),
            ),
            Error::Io(e) => ("UNKNOWN", format!("storage error: {e}")),
        };
        serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]})
    }
}

/// True for an I/O error that says the storage cannot be used at all.
fn unavailable(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<crate::storage::Unavailable>())
}

/// Result of a registry operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
