//! The content store: info, reader, writer → commit, walk, delete, fsck.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{Descriptor, Digest, DigestAlgorithm};

use crate::error::{Error, Result};
use crate::layout;
use crate::lock::{FileLock, LockMode};
use berth_core::digest::{check_supported, Hasher};
use berth_core::fs::fsync_dir;

/// What the store knows about a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// What a [`Writer`] must receive. Without a digest the writer computes
/// one (sha256) and [`Writer::commit`] reports it.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The digest the content must hash to.
    pub digest: Option<Digest>,
    /// The exact size the content must have.
    pub size: Option<u64>,
    /// A human description for errors, e.g. "layer 2 of busybox.tar".
    pub what: String,
}

impl Expected {
    /// Expect exactly what `desc` promises.
    pub fn from_descriptor(desc: &Descriptor, what: impl Into<String>) -> Expected {
        Expected {
            digest: Some(desc.digest().clone()),
            size: Some(desc.size()),
            what: what.into(),
        }
    }

    /// Content whose digest is computed while writing.
    pub fn unknown(what: impl Into<String>) -> Expected {
        Expected {
            digest: None,
            size: None,
            what: what.into(),
        }
    }
}

/// The result of [`Store::fsck`].
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Blobs checked.
    pub checked: usize,
    /// Blobs whose content does not match their name: (name, path, actual).
    pub corrupt: Vec<(Digest, PathBuf, Digest)>,
    /// Files under blobs/ that are not named like a digest.
    pub stray: Vec<PathBuf>,
    /// Ingests nobody is writing (left by a killed process); invisible as
    /// blobs, removed by [`Store::clean_ingests`].
    pub abandoned_ingests: Vec<PathBuf>,
}

impl FsckReport {
    /// True when no blob is corrupt and no stray file was found.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.stray.is_empty()
    }
}

/// A content-addressed blob store in a directory that is also an OCI image
/// layout.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

static INGEST_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store> {
        let dir = dir.into();
        layout::init(&dir)?;
        for sub in ["blobs/sha512", "ingest"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::io(dir.join(sub), e))?;
        }
        Ok(Store { dir })
    }

    /// The store's directory (an OCI image layout).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        layout::blob_path(&self.dir, digest)
    }

    /// Size of a committed blob, or [`Error::NotFound`].
    pub fn info(&self, digest: &Digest) -> Result<Info> {
        let path = self.blob_path(digest)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Info {
                digest: digest.clone(),
                size: m.len(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(digest.clone()))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// True if the blob is committed.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.info(digest).is_ok()
    }

    /// Opens a committed blob for reading.
    pub fn reader(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(digest.clone())
            } else {
                Error::io(path, e)
            }
        })
    }

    /// Reads a small blob (a manifest, index or config) into memory,
    /// refusing blobs larger than `limit` bytes.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let info = self.info(digest)?;
        if info.size > limit {
            return Err(Error::Layout {
                path,
                reason: format!(
                    "blob {digest} is {} bytes, more than the {limit} allowed for a JSON document",
                    info.size
                ),
            });
        }
        let mut data = Vec::with_capacity(info.size as usize);
        self.reader(digest)?
            .read_to_end(&mut data)
            .map_err(|e| Error::io(&path, e))?;
        Ok(data)
    }

    /// Takes a shared lease on the store: while any lease is held, garbage
    /// collection (which takes [`Store::gc_lock`]) waits, so blobs written
    /// but not yet referenced by an image record survive.
    pub fn lease(&self) -> Result<FileLock> {
        FileLock::acquire(&self.dir.join("gc.lock"), LockMode::Shared)
    }

    /// The exclusive lock garbage collection holds while it deletes.
    pub fn gc_lock(&self) -> Result<FileLock> {
        FileLock::acquire(&self.dir.join("gc.lock"), LockMode::Exclusive)
    }

    /// Opens a writer for content described by `expected`. Content for a
    /// known digest goes to `ingest/<alg>-<hex>`; if an earlier writer for
    /// the same digest was interrupted, its bytes are kept and the writer
    /// resumes at [`Writer::offset`] (call [`Writer::restart`] if the
    /// source cannot skip). Another writer for the same digest makes this
    /// call wait. Returns [`Error::AlreadyExists`] if the blob is already
    /// committed.
    pub fn writer(&self, expected: Expected) -> Result<Writer> {
        let lease = self.lease()?;
        let (name, algorithm) = match &expected.digest {
            Some(d) => {
                check_supported(d)?;
                if self.exists(d) {
                    return Err(Error::AlreadyExists(d.clone()));
                }
                (
                    format!("{}-{}", d.algorithm(), d.digest()),
                    d.algorithm().clone(),
                )
            }
            None => (
                format!(
                    "tmp-{}-{}",
                    std::process::id(),
                    INGEST_COUNTER.fetch_add(1, Ordering::Relaxed)
                ),
                DigestAlgorithm::Sha256,
            ),
        };
        let dir = self.dir.join("ingest").join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = FileLock::acquire(&dir.join("lock"), LockMode::Exclusive)?;
        if let Some(d) = &expected.digest {
            // Someone else may have committed it while we waited.
            if self.exists(d) {
                return Err(Error::AlreadyExists(d.clone()));
            }
        }
        let data_path = dir.join("data");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(|e| Error::io(&data_path, e))?;
        let mut hasher = Hasher::new(&algorithm)?;
        // Resume: hash the bytes an interrupted writer left.
        let mut written = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(|e| Error::io(&data_path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            written += n as u64;
        }
        let mut w = Writer {
            store_dir: self.dir.clone(),
            ingest_dir: dir,
            data_path,
            file,
            hasher,
            written,
            expected,
            _lock: lock,
            _lease: lease,
        };
        if w.expected.size.is_some_and(|s| w.written > s) {
            w.restart()?;
        }
        Ok(w)
    }

    /// Copies `reader` into the store as the blob `expected` describes,
    /// verifying size and digest. Succeeds without reading if the blob is
    /// already present. Returns the blob's digest and size.
    pub fn ingest(&self, expected: Expected, mut reader: impl Read) -> Result<Info> {
        if let (Some(d), Some(size)) = (&expected.digest, expected.size) {
            if let Ok(info) = self.info(d) {
                if info.size == size {
                    return Ok(info);
                }
            }
        }
        let what = expected.what.clone();
        let mut w = match self.writer(expected.clone()) {
            Ok(w) => w,
            Err(Error::AlreadyExists(d)) => return self.info(&d),
            Err(e) => return Err(e),
        };
        if w.offset() > 0 {
            w.restart()?;
        }
        if let Err(e) = std::io::copy(&mut reader, &mut w) {
            // Keep the writer's own error (size overflow) if it has one.
            let err = w.overflow_error().unwrap_or_else(|| Error::io(what, e));
            w.abort();
            return Err(err);
        }
        w.commit()
    }

    /// Stores an in-memory blob (a manifest or config berth made) under its
    /// sha256 digest.
    pub fn put_bytes(&self, data: &[u8], what: &str) -> Result<Info> {
        let expected = Expected {
            digest: Some(berth_core::digest::sha256_of(data)),
            size: Some(data.len() as u64),
            what: what.to_string(),
        };
        self.ingest(expected, data)
    }

    /// Every committed blob, in no particular order. Files under blobs/
    /// not named like a digest are skipped (see [`Store::fsck`]).
    pub fn walk(&self) -> Result<Vec<Info>> {
        let mut out = Vec::new();
        self.scan(|entry| {
            if let Ok(info) = entry {
                out.push(info);
            }
        })?;
        Ok(out)
    }

    fn scan(&self, mut f: impl FnMut(std::result::Result<Info, PathBuf>)) -> Result<()> {
        for alg in ["sha256", "sha512"] {
            let dir = self.dir.join("blobs").join(alg);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = entry.metadata().map_err(|e| Error::io(&path, e))?;
                match berth_core::digest::parse(&format!("{alg}:{name}")) {
                    Ok(digest) if meta.is_file() => f(Ok(Info {
                        digest,
                        size: meta.len(),
                    })),
                    _ => f(Err(path)),
                }
            }
        }
        Ok(())
    }

    /// Removes a committed blob. Callers make sure nothing references it
    /// (see garbage collection in berth-image).
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(digest.clone()))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Re-hashes one committed blob and fails with
    /// [`Error::DigestMismatch`] if its content changed.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest)?;
        let mut file = self.reader(digest)?;
        let mut hasher = Hasher::new(digest.algorithm())?;
        std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(&path, e))?;
        let actual = hasher.digest();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Verifies every blob and lists abandoned ingests.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut infos = Vec::new();
        self.scan(|entry| match entry {
            Ok(info) => infos.push(info),
            Err(path) => report.stray.push(path),
        })?;
        for info in infos {
            report.checked += 1;
            match self.verify(&info.digest) {
                Ok(()) => {}
                Err(Error::DigestMismatch { actual, .. }) => {
                    let path = self.blob_path(&info.digest)?;
                    report.corrupt.push((info.digest, path, actual));
                }
                // Deleted by a concurrent GC between scan and verify.
                Err(Error::NotFound(_)) => report.checked -= 1,
                Err(e) => return Err(e),
            }
        }
        report.abandoned_ingests = self.abandoned_ingests()?;
        Ok(report)
    }

    /// Ingest directories whose writer is gone (killed or dropped).
    pub fn abandoned_ingests(&self) -> Result<Vec<PathBuf>> {
        let dir = self.dir.join("ingest");
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if FileLock::try_acquire(&path.join("lock"), LockMode::Exclusive)?.is_some() {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// Removes abandoned ingests. Call it with [`Store::gc_lock`] held so no
    /// writer can be opening one of them at the same time. Returns how many
    /// were removed.
    pub fn clean_ingests(&self) -> Result<usize> {
        let mut removed = 0;
        for path in self.abandoned_ingests()? {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Writes one blob into the store's ingest area, hashing as it goes.
/// [`Writer::commit`] makes it visible; dropping the writer leaves the
/// partial data for a later writer to resume (or for GC to clean).
pub struct Writer {
    store_dir: PathBuf,
    ingest_dir: PathBuf,
    data_path: PathBuf,
    file: File,
    hasher: Hasher,
    written: u64,
    expected: Expected,
    _lock: FileLock,
    _lease: FileLock,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("ingest", &self.ingest_dir)
            .field("written", &self.written)
            .finish()
    }
}

impl Writer {
    /// Bytes already written (non-zero when resuming an interrupted ingest).
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Opens the data written so far for reading, as it grows: a reader
    /// may follow the download (what [`Writer::offset`] says is there is
    /// there). The data is unverified until [`Writer::commit`], and a
    /// [`Writer::restart`] truncates it.
    pub fn data_reader(&self) -> Result<File> {
        File::open(&self.data_path).map_err(|e| Error::io(&self.data_path, e))
    }

    /// Discards what was written and starts from byte 0.
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| Error::io(&self.data_path, e))?;
        self.hasher = match self.hasher {
            Hasher::Sha256(_) => Hasher::sha256(),
            Hasher::Sha512(_) => Hasher::new(&DigestAlgorithm::Sha512)?,
        };
        self.written = 0;
        Ok(())
    }

    /// The error that made a write fail when it was the writer's own size
    /// check (more data than the descriptor declares), naming the blob.
    pub fn overflow_error(&self) -> Option<Error> {
        let size = self.expected.size?;
        (self.written > size).then(|| Error::SizeMismatch {
            what: self.expected.what.clone(),
            expected: size,
            actual: self.written,
        })
    }

    /// Removes the partial data.
    pub fn abort(self) {
        let _ = std::fs::remove_dir_all(&self.ingest_dir);
    }

    /// Verifies size and digest, fsyncs and renames the blob into place.
    /// On a mismatch the partial data is removed and nothing is visible.
    pub fn commit(mut self) -> Result<Info> {
        let actual = self.hasher.digest();
        if let Some(size) = self.expected.size {
            if self.written != size {
                let err = Error::SizeMismatch {
                    what: self.expected.what.clone(),
                    expected: size,
                    actual: self.written,
                };
                self.abort();
                return Err(err);
            }
        }
        if let Some(expected) = &self.expected.digest {
            if &actual != expected {
                let err = Error::DigestMismatch {
                    what: self.expected.what.clone(),
                    expected: expected.clone(),
                    actual,
                };
                self.abort();
                return Err(err);
            }
        }
        self.file
            .flush()
            .and_then(|_| self.file.sync_all())
            .map_err(|e| Error::io(&self.data_path, e))?;
        let target = layout::blob_path(&self.store_dir, &actual)?;
        let parent = target
            .parent()
            .expect("a blob path always has a parent")
            .to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        std::fs::rename(&self.data_path, &target).map_err(|e| Error::io(&target, e))?;
        fsync_dir(&parent).map_err(|e| Error::io(&parent, e))?;
        let info = Info {
            digest: actual,
            size: self.written,
        };
        self.abort();
        Ok(info)
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(size) = self.expected.size {
            if self.written + buf.len() as u64 > size {
                self.written += buf.len() as u64;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("more data than the {size} bytes its descriptor declares"),
                ));
            }
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::digest::sha256_of as digest_of;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("content")).unwrap();
        (dir, store)
    }

    fn expected(data: &[u8]) -> Expected {
        Expected {
            digest: Some(digest_of(data)),
            size: Some(data.len() as u64),
            what: "test blob".into(),
        }
    }

    #[test]
    fn ingest_then_read_back() {
        let (_d, s) = store();
        let info = s.ingest(expected(b"hello"), &b"hello"[..]).unwrap();
        assert_eq!(info.size, 5);
        let mut out = String::new();
        s.reader(&info.digest)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello");
        assert_eq!(s.walk().unwrap(), vec![info.clone()]);
        // Ingesting again is a no-op.
        s.ingest(expected(b"hello"), &b"hello"[..]).unwrap();
        s.delete(&info.digest).unwrap();
        assert!(matches!(s.info(&info.digest), Err(Error::NotFound(_))));
    }

    #[test]
    fn wrong_digest_is_refused_and_leaves_nothing() {
        let (_d, s) = store();
        let mut exp = expected(b"hello");
        exp.size = Some(5);
        let err = s.ingest(exp.clone(), &b"hellO"[..]).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("test blob"));
        assert!(s.walk().unwrap().is_empty());
        assert!(std::fs::read_dir(s.dir().join("ingest"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn truncated_and_oversized_content_is_refused() {
        let (_d, s) = store();
        let err = s.ingest(expected(b"hello"), &b"hel"[..]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = s
            .ingest(expected(b"hello"), &b"hello world"[..])
            .unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        assert!(s.walk().unwrap().is_empty());
    }

    #[test]
    fn unknown_digest_is_computed() {
        let (_d, s) = store();
        let mut w = s.writer(Expected::unknown("import")).unwrap();
        w.write_all(b"abc").unwrap();
        let info = w.commit().unwrap();
        assert_eq!(info.digest, digest_of(b"abc"));
        assert!(s.exists(&info.digest));
    }

    #[test]
    fn sha512_blobs_are_supported() {
        let (_d, s) = store();
        let mut h = Hasher::new(&DigestAlgorithm::Sha512).unwrap();
        h.update(b"data");
        let exp = Expected {
            digest: Some(h.digest()),
            size: Some(4),
            what: "sha512 blob".into(),
        };
        let info = s.ingest(exp, &b"data"[..]).unwrap();
        assert!(s
            .blob_path(&info.digest)
            .unwrap()
            .starts_with(s.dir().join("blobs/sha512")));
        assert_eq!(s.fsck().unwrap().checked, 1);
    }

    #[test]
    fn dropped_writer_resumes_and_is_cleanable() {
        let (_d, s) = store();
        let data = b"0123456789";
        let mut w = s.writer(expected(data)).unwrap();
        w.write_all(&data[..4]).unwrap();
        drop(w);
        assert!(
            !s.exists(&digest_of(data)),
            "partial content must not be visible"
        );
        assert_eq!(s.fsck().unwrap().abandoned_ingests.len(), 1);
        let mut w = s.writer(expected(data)).unwrap();
        assert_eq!(w.offset(), 4);
        w.write_all(&data[4..]).unwrap();
        w.commit().unwrap();
        assert!(s.exists(&digest_of(data)));
        // A second abandoned ingest is removed by clean_ingests.
        let mut w = s.writer(expected(b"other")).unwrap();
        w.write_all(b"ot").unwrap();
        drop(w);
        let _gc = s.gc_lock().unwrap();
        assert_eq!(s.clean_ingests().unwrap(), 1);
        assert!(s.abandoned_ingests().unwrap().is_empty());
    }

    #[test]
    fn fsck_finds_a_flipped_byte() {
        let (_d, s) = store();
        let info = s.put_bytes(b"some content", "blob").unwrap();
        assert!(s.fsck().unwrap().is_clean());
        let path = s.blob_path(&info.digest).unwrap();
        std::fs::write(&path, b"some c0ntent").unwrap();
        let report = s.fsck().unwrap();
        assert_eq!(report.corrupt.len(), 1);
        assert_eq!(report.corrupt[0].0, info.digest);
        std::fs::write(s.dir().join("blobs/sha256/junk"), b"x").unwrap();
        assert_eq!(s.fsck().unwrap().stray.len(), 1);
    }

    #[test]
    fn concurrent_writers_of_one_blob_both_succeed() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let data = data.clone();
                std::thread::spawn(move || s.ingest(expected(&data), &data[..]))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap().size, data.len() as u64);
        }
        assert_eq!(s.walk().unwrap().len(), 1);
        assert!(s.fsck().unwrap().is_clean());
        assert!(s.abandoned_ingests().unwrap().is_empty());
    }
}
