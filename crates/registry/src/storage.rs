//! The storage driver interface every handler goes through, and its
//! backends: the filesystem ([`fs`], with its upload appender in
//! [`fs_append`]) and S3-compatible object storage ([`s3`]).
//!
//! Paths are `/`-separated keys relative to the driver's root (for example
//! `blobs/sha256/ab…`). A driver never interprets them; the layout lives in
//! [`crate::store`].

mod fs;
mod fs_append;
mod s3;

pub(crate) use fs::FsDriver;
pub use s3::S3Config;
pub(crate) use s3::S3Driver;

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A stream of byte chunks read from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What [`Driver::stat`] reports about a stored object.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Size in bytes.
    pub size: u64,
    /// Last modification (or last [`Driver::touch`]).
    pub modified: SystemTime,
}

/// The version of a stored object, for conditional writes: the S3 ETag, on
/// the filesystem a hash of the content (callers that need to tell equal
/// contents apart put a generation counter in them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// What [`Driver::put_if`] requires of the stored object before it
/// replaces it.
#[derive(Debug, Clone)]
pub enum Precondition {
    /// The object does not exist (S3 `If-None-Match: *`).
    Absent,
    /// The object exists at this version (S3 `If-Match`).
    Matches(Version),
}

/// Why a storage request failed when the backend cannot be reached or
/// refuses service (an S3 server down, timing out, or refusing the
/// credentials): requests answer `503` with it, so a load balancer moves
/// on to another replica.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// An open writer that appends to an object (an upload in progress).
#[async_trait]
pub trait Appender: Send {
    /// Appends the concatenation of `parts` at the end of the object (parts
    /// are passed as received, so nothing is copied to join them). The write
    /// may still be in progress when this returns; its error then surfaces
    /// on the next call.
    async fn write(&mut self, parts: Vec<Bytes>) -> io::Result<()>;
    /// Waits until every write so far has reached storage (not necessarily
    /// durably), reporting a failed one.
    async fn settle(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Makes everything written so far durable.
    async fn sync(&mut self) -> io::Result<()>;
}

/// The operations the registry needs from a storage backend.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Size and modification time of `path`, or `None` if it does not exist.
    async fn stat(&self, path: &str) -> io::Result<Option<Meta>>;
    /// The whole content of `path`, or `None` if it does not exist.
    async fn get(&self, path: &str) -> io::Result<Option<Bytes>>;
    /// Atomically stores `data` under `path`: readers see the old content or
    /// the new one, never a part. Durable once it returns.
    async fn put(&self, path: &str, data: Bytes) -> io::Result<()>;
    /// Like [`Driver::put`] but need not be durable across a machine crash
    /// (scratch state such as upload session descriptions).
    async fn put_scratch(&self, path: &str, data: Bytes) -> io::Result<()> {
        self.put(path, data).await
    }
    /// The whole content of `path` with its version, or `None`.
    async fn get_versioned(&self, path: &str) -> io::Result<Option<(Bytes, Version)>>;
    /// Stores `data` under `path` (atomically and durably, like
    /// [`Driver::put`]) only if `cond` holds, as one atomic step also
    /// between processes and machines sharing the storage. Returns the new
    /// version, or `None`, storing nothing, when `cond` does not hold.
    /// Like [`Driver::put_scratch`], need not be durable across a machine
    /// crash.
    async fn put_if(
        &self,
        path: &str,
        data: Bytes,
        cond: &Precondition,
    ) -> io::Result<Option<Version>>;
    /// A stream of `len` bytes of `path` starting at `offset`.
    async fn reader(&self, path: &str, offset: u64, len: u64) -> io::Result<ByteStream>;
    /// Opens `path` for appending, creating it if needed.
    async fn appender(&self, path: &str) -> io::Result<Box<dyn Appender>>;
    /// Stores the concatenation of the (appended) objects `from`, in order,
    /// as `to` and removes them. `from` must not be empty.
    async fn concat(&self, from: &[String], to: &str) -> io::Result<()>;
    /// Names of the direct children of the directory `path` (empty if absent).
    async fn list(&self, path: &str) -> io::Result<Vec<String>>;
    /// Removes `path` and, for a directory, everything under it. Absent is fine.
    async fn delete(&self, path: &str) -> io::Result<()>;
    /// Sets the modification time of `path` to now (used by GC's grace period).
    async fn touch(&self, path: &str) -> io::Result<()>;
}

/// A random hex string of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom only fails when the OS has no entropy source at all.
    if getrandom::getrandom(&mut buf).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (nanos >> (i % 16 * 8)) as u8 ^ i as u8);
    }
    hex::encode(buf)
}
