//! The storage driver interface every handler goes through, and its
//! filesystem implementation.
//!
//! Paths are `/`-separated keys relative to the driver's root (for example
//! `blobs/sha256/ab…`). A driver never interprets them; the layout lives in
//! [`crate::store`].

use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncReadExt;

use crate::fsappend::FsAppender;

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
    /// A stream of `len` bytes of `path` starting at `offset`.
    async fn reader(&self, path: &str, offset: u64, len: u64) -> io::Result<ByteStream>;
    /// Opens `path` for appending, creating it if needed.
    async fn appender(&self, path: &str) -> io::Result<Box<dyn Appender>>;
    /// Atomically moves `from` to `to`, replacing `to`.
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Names of the direct children of the directory `path` (empty if absent).
    async fn list(&self, path: &str) -> io::Result<Vec<String>>;
    /// Removes `path` and, for a directory, everything under it. Absent is fine.
    async fn delete(&self, path: &str) -> io::Result<()>;
    /// Sets the modification time of `path` to now (used by GC's grace period).
    async fn touch(&self, path: &str) -> io::Result<()>;
}

/// Stores objects as files under a root directory.
///
/// Every driver call is one trip to tokio's blocking pool doing all of its
/// file system work with plain `std::fs` calls: on a 2-core machine each
/// trip costs two thread wake-ups, so a manifest PUT made of six
/// `tokio::fs` calls per file waited on a dozen of them.
#[derive(Debug, Clone)]
pub struct FsDriver {
    root: PathBuf,
}

impl FsDriver {
    /// A driver rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<FsDriver> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FsDriver { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

/// Runs `f` on the blocking pool and waits for it.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Writes `data` to a temporary file beside `full` and renames it into
/// place; with `durable`, syncs the file before and the directory after.
fn write_atomic(full: &Path, key: &str, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = parent_dir(full, key)?;
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".tmp-{}", random_hex(8)));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_data()?;
        }
        drop(f);
        std::fs::rename(&tmp, full)?;
        if durable {
            fsync_dir(&dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn parent_dir(full: &Path, key: &str) -> io::Result<PathBuf> {
    full.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| io::Error::other(format!("storage path {key:?} has no parent")))
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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

fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl Driver for FsDriver {
    async fn stat(&self, path: &str) -> io::Result<Option<Meta>> {
        let full = self.full(path);
        let meta = blocking(move || not_found_is_none(std::fs::metadata(full))).await?;
        Ok(meta.map(|m| Meta {
            size: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }))
    }

    async fn get(&self, path: &str) -> io::Result<Option<Bytes>> {
        let full = self.full(path);
        let data = blocking(move || not_found_is_none(std::fs::read(full))).await?;
        Ok(data.map(Bytes::from))
    }

    async fn put(&self, path: &str, data: Bytes) -> io::Result<()> {
        let (full, key) = (self.full(path), path.to_string());
        blocking(move || write_atomic(&full, &key, &data, true)).await
    }

    async fn put_scratch(&self, path: &str, data: Bytes) -> io::Result<()> {
        let (full, key) = (self.full(path), path.to_string());
        blocking(move || write_atomic(&full, &key, &data, false)).await
    }

    async fn reader(&self, path: &str, offset: u64, len: u64) -> io::Result<ByteStream> {
        let full = self.full(path);
        let file = blocking(move || {
            let mut file = std::fs::File::open(full)?;
            if offset > 0 {
                file.seek(io::SeekFrom::Start(offset))?;
            }
            Ok(file)
        })
        .await?;
        let limited = tokio::fs::File::from_std(file).take(len);
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            limited,
            256 * 1024,
        )))
    }

    async fn appender(&self, path: &str) -> io::Result<Box<dyn Appender>> {
        let full = self.full(path);
        let appender = blocking(move || {
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir)?;
            }
            FsAppender::open(&full)
        })
        .await?;
        Ok(Box::new(appender))
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, dest) = (self.full(from), self.full(to));
        let dir = parent_dir(&dest, to)?;
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(from, &dest)?;
            fsync_dir(&dir)
        })
        .await
    }

    async fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let full = self.full(path);
        blocking(move || {
            let Some(entries) = not_found_is_none(std::fs::read_dir(full))? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for entry in entries {
                if let Some(name) = entry?.file_name().to_str() {
                    if !name.starts_with(".tmp-") {
                        out.push(name.to_string());
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete(&self, path: &str) -> io::Result<()> {
        let full = self.full(path);
        blocking(move || {
            let removed = match std::fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&full),
                Ok(_) => std::fs::remove_file(&full),
                Err(e) => Err(e),
            };
            not_found_is_none(removed).map(|_| ())
        })
        .await
    }

    async fn touch(&self, path: &str) -> io::Result<()> {
        let full = self.full(path);
        blocking(move || {
            let f = std::fs::File::options().append(true).open(full)?;
            f.set_modified(SystemTime::now())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn fs_driver_put_get_list_delete_and_ranged_reader() {
        let dir = tempfile::tempdir().unwrap();
        let d = FsDriver::new(dir.path()).unwrap();
        d.put("a/b/c", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        assert_eq!(d.get("a/b/c").await.unwrap().unwrap(), "hello world");
        assert_eq!(d.stat("a/b/c").await.unwrap().unwrap().size, 11);
        assert!(d.stat("a/b/x").await.unwrap().is_none());
        assert_eq!(d.list("a/b").await.unwrap(), vec!["c".to_string()]);
        let part: Vec<Bytes> = d
            .reader("a/b/c", 6, 3)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(part.concat(), b"wor");
        let mut w = d.appender("u/data").await.unwrap();
        w.write(vec![Bytes::from_static(b"ab")]).await.unwrap();
        w.write(vec![
            Bytes::from_static(b"c"),
            Bytes::new(),
            Bytes::from_static(b"d"),
        ])
        .await
        .unwrap();
        w.sync().await.unwrap();
        d.rename("u/data", "z/data").await.unwrap();
        assert_eq!(d.get("z/data").await.unwrap().unwrap(), "abcd");
        d.delete("a").await.unwrap();
        assert!(d.get("a/b/c").await.unwrap().is_none());
        d.delete("a").await.unwrap();
    }
}
