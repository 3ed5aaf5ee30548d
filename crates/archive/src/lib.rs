//! Confined OCI layer application (whiteouts, hardlinks, xattrs, devices).
//!
//! [`apply_layer`] streams a layer blob once: decompress (gzip, zstd or none)
//! → hash the tar stream (the diff_id) → parse tar headers → create the
//! entries under a target directory. Every parent directory is resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` against the target and
//! final components are never followed, so no entry can write outside it.
//! One thread inflates, a second hashes, the calling thread parses and
//! creates files; while creating files is what holds the pipeline up, a
//! pool that grows as it falls behind ([`ApplyOptions::threads`]) writes
//! small regular files in parallel.
//!
//! On any error (including [`ApplyError::DiffIdMismatch`]) the target holds a
//! partially applied layer: the caller must discard it (the snapshot crate
//! does so by removing the active snapshot).

mod apply;
mod create;
pub mod fsops;
#[doc(hidden)]
pub mod fuzzing;
mod tarstream;

use std::io;
use std::path::PathBuf;

pub use apply::apply_layer;
pub use create::{create_layer, CreateError, Created, LayerSource};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (possibly multi-member), inflated with flate2's zlib-rs backend.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Picks the compression from an OCI or Docker layer media type.
    pub fn from_media_type(media_type: &str) -> Result<Compression, ApplyError> {
        let mt = media_type.trim();
        let c = match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            other => {
                return Err(ApplyError::UnsupportedMediaType {
                    media_type: other.to_string(),
                })
            }
        };
        Ok(c)
    }

    /// Guesses the compression from the first bytes of a blob (magic numbers).
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// What whiteout entries turn into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target already holds the parent layers (plain copy): `.wh.name`
    /// deletes `name`, an opaque marker deletes the directory's lower content.
    Remove,
    /// The target is an empty overlay upper directory: `.wh.name` becomes a
    /// 0/0 character device and an opaque marker the `trusted.overlay.opaque=y`
    /// xattr, as overlayfs expects.
    Overlay,
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are applied.
    pub whiteouts: WhiteoutMode,
    /// Skip device nodes and FIFOs (default: only inside a user namespace).
    pub skip_devices: bool,
    /// If set (`sha256:<hex>`), the tar stream's digest must equal it.
    pub expected_diff_id: Option<String>,
    /// Refuse layers whose uncompressed stream exceeds this many bytes.
    pub max_size: u64,
    /// Refuse compressed layers that inflate more than this many times
    /// (checked once 16 MiB have been inflated; 0 disables).
    pub max_ratio: u64,
    /// At most this many threads write small regular files while the
    /// parsing thread goes on (0: the parsing thread writes everything).
    /// Files go to them only while creates are slow (see
    /// `pool_above_create_ns`) or inflated data queues up before the
    /// parsing thread; the first starts then, one more each time those
    /// running fall behind. Default 4.
    pub threads: usize,
    /// Hand files to those threads while creating a file takes at least this
    /// long on average (nanoseconds; 0: always), whether or not the parsing
    /// thread is behind. On a quiet, warm disk creates take microseconds;
    /// when inode creation blocks (a cold or busy disk) they take hundreds
    /// and parallel writers overlap the waits. Default 50 µs.
    pub pool_above_create_ns: u64,
    /// Overlay mode only: the parent layers' directories, topmost first. A
    /// directory the layer implies but does not list is created in the upper
    /// directory with the owner and mode it has in these lowers.
    pub lowers: Vec<PathBuf>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Remove,
            skip_devices: fsops::in_user_namespace(),
            expected_diff_id: None,
            max_size: 64 << 30,
            max_ratio: 1000,
            threads: 4,
            pool_above_create_ns: 50_000,
            lowers: Vec::new(),
        }
    }
}

/// The result of applying a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// Length of the uncompressed tar stream in bytes.
    pub size: u64,
    /// Writer threads the pool started (0: creates were quick enough for
    /// the parsing thread to write every file itself).
    pub writers: usize,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The archive tries something unsafe or ambiguous; nothing was written for it.
    #[error("layer entry {entry:?} refused: {reason}")]
    Refused {
        /// The entry name as found in the archive.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A filesystem operation failed for an entry.
    #[error("layer entry {entry:?}: {op} failed: {source}")]
    Io {
        /// The entry name.
        entry: String,
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The compressed or tar stream could not be read.
    #[error("reading the layer failed at entry {entry:?}: {source} (truncated or corrupt blob? re-fetch it)")]
    Stream {
        /// The entry being read (or "tar header").
        entry: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The stream ended in the middle of an entry.
    #[error("layer is truncated: the stream ended inside {entry:?} at tar offset {offset}; re-fetch the blob")]
    Truncated {
        /// The entry being read.
        entry: String,
        /// Uncompressed bytes read so far.
        offset: u64,
    },
    /// The tar stream is not well formed.
    #[error("layer tar stream is malformed at offset {offset}: {reason}; the blob is corrupt or not an OCI layer (re-fetch it or rebuild the image)")]
    Malformed {
        /// Uncompressed offset of the bad header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stream inflates beyond the configured limits.
    #[error("layer refused as a decompression bomb at entry {entry:?}: {detail}; raise ApplyOptions::max_size/max_ratio if the layer is legitimate")]
    Bomb {
        /// The entry being read.
        entry: String,
        /// Which limit was hit.
        detail: String,
    },
    /// The tar stream's digest is not the expected diff_id.
    #[error("layer diff_id mismatch: the image config expects {expected} but the layer's tar stream hashes to {actual}; the blob does not belong to this image (discard the applied directory)")]
    DiffIdMismatch {
        /// From the image config's rootfs.diff_ids.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The media type names no compression we know.
    #[error("unsupported layer media type {media_type:?}: expected an OCI/Docker layer tar (plain, +gzip or +zstd)")]
    UnsupportedMediaType {
        /// The media type given.
        media_type: String,
    },
    /// The target directory cannot be used.
    #[error("layer target directory {path}: {source}")]
    Target {
        /// The target directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Marker error carried inside `io::Error` when a size/ratio limit is hit.
#[derive(Debug)]
pub(crate) struct BombError(pub String);

impl std::fmt::Display for BombError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BombError {}

impl ApplyError {
    pub(crate) fn from_stream(e: io::Error, entry: &str) -> ApplyError {
        if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BombError>()) {
            return ApplyError::Bomb {
                entry: entry.to_string(),
                detail: b.0.clone(),
            };
        }
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return ApplyError::Truncated {
                entry: entry.to_string(),
                offset: 0,
            };
        }
        ApplyError::Stream {
            entry: entry.to_string(),
            source: e,
        }
    }

    pub(crate) fn io(entry: &str, op: &'static str, e: impl Into<io::Error>) -> ApplyError {
        ApplyError::Io {
            entry: entry.to_string(),
            op,
            source: e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_compression() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
                .unwrap(),
            Compression::Gzip
        );
        let e = Compression::from_media_type("text/plain").unwrap_err();
        assert!(e.to_string().contains("text/plain"), "{e}");
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
    }
}
