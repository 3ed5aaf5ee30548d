//! Content-addressable blob store and OCI image-layout reading and writing.
//!
//! A [`Store`] keeps blobs under `<dir>/blobs/<alg>/<hex>` (sha256 and
//! sha512) and is itself a valid OCI image layout (`oci-layout`,
//! `index.json`, `blobs/`). Blobs enter only through a [`Writer`], which
//! hashes while it writes into `<dir>/ingest/<ref>/data` and on
//! [`Writer::commit`] checks size and digest, fsyncs and renames the file
//! into place: a blob is visible under its digest only when it is complete
//! and verified.

mod error;
pub mod layout;
mod lock;
mod store;

pub use error::{Error, Result};
pub use lock::{FileLock, LockMode};
pub use store::{Expected, FsckReport, Info, Store, Writer};

pub use oci_spec::image::{Descriptor, Digest, DigestAlgorithm, MediaType};
