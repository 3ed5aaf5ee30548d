//! The layer applier: one thread inflates, hashes and parses; a small pool
//! creates regular files. Ordering rules: directories, links, devices and
//! whiteouts are done by the parsing thread; an operation on a path (or below
//! a path, or a hardlink to a path) still being written by the pool waits for
//! it; removals of whole trees wait for the pool to drain; directory times are
//! set last.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, Gid, Uid};
use sha2::{Digest, Sha256};

use crate::fsops::{self, is_dir, lstat_at, open_dir_in, remove_all_at};
use crate::tarstream::{Entry, Kind, TarStream};
use crate::{Applied, ApplyError, ApplyOptions, BombError, Compression, WhiteoutMode};

/// Files up to this size are handed to the writer pool; larger ones are
/// streamed by the parsing thread.
const POOL_FILE_MAX: u64 = 1 << 20;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Counts compressed bytes read.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Counts the uncompressed stream and enforces the bomb limits.
struct Limited<R> {
    inner: R,
    total: u64,
    compressed: Option<Arc<AtomicU64>>,
    max_size: u64,
    max_ratio: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.max_size {
            return Err(io::Error::other(BombError(format!(
                "uncompressed stream exceeds the {}-byte size limit",
                self.max_size
            ))));
        }
        if let Some(c) = &self.compressed {
            let c = c.load(Ordering::Relaxed).max(1);
            if self.max_ratio > 0 && self.total > 16 << 20 && self.total / c > self.max_ratio {
                return Err(io::Error::other(BombError(format!(
                    "{} compressed bytes inflated to {} (ratio above {})",
                    c, self.total, self.max_ratio
                ))));
            }
        }
        Ok(n)
    }
}

/// Metadata applied to every created entry.
#[derive(Clone)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn from_entry(e: &Entry) -> Meta {
        Meta {
            uid: e.uid,
            gid: e.gid,
            mode: e.mode,
            atime: e.atime.unwrap_or(e.mtime),
            mtime: e.mtime,
            // overlayfs private xattrs from an archive could forge whiteouts,
            // opaque dirs or redirects: never take them from a layer.
            xattrs: e
                .xattrs
                .iter()
                .filter(|(k, _)| !k.starts_with(b"trusted.overlay."))
                .cloned()
                .collect(),
        }
    }

    /// Metadata as found on an existing file.
    fn from_stat(st: &libc::stat, xattrs: fsops::Xattrs) -> Meta {
        Meta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            atime: (st.st_atime, st.st_atime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            xattrs,
        }
    }

    fn times(&self) -> (TimeSpec, TimeSpec) {
        (
            TimeSpec::new(self.atime.0, self.atime.1),
            TimeSpec::new(self.mtime.0, self.mtime.1),
        )
    }
}

/// A regular file for the writer pool.
struct Job {
    path: Vec<u8>,
    display: String,
    data: Vec<u8>,
    meta: Meta,
}

/// Paths handed to the pool and not yet written, and who waits for them.
#[derive(Default)]
struct Pending {
    paths: HashMap<Vec<u8>, usize>,
    waiters: usize,
}

/// Files handed to a writer at once (fewer wakeups than one by one).
const BATCH_FILES: usize = 32;
const BATCH_BYTES: usize = 1 << 20;

/// State shared between the parsing thread and the writers.
struct Shared {
    root: OwnedFd,
    pending: Mutex<Pending>,
    cv: Condvar,
    error: Mutex<Option<ApplyError>>,
    failed: AtomicBool,
    /// Moving average of how long creating a file takes, in nanoseconds.
    create_ns: AtomicU64,
}

impl Shared {
    /// Creates a file, folding the time it took into the moving average.
    fn timed_create(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        entry: &str,
    ) -> Result<File, ApplyError> {
        let t = std::time::Instant::now();
        let f = create_file(parent, name, entry)?;
        let ns = t.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let avg = self.create_ns.load(Ordering::Relaxed);
        let next = if avg == 0 {
            ns
        } else {
            avg - avg / 16 + ns / 16
        };
        self.create_ns.store(next, Ordering::Relaxed);
        Ok(f)
    }

    fn fail(&self, e: ApplyError) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn take_error(&self) -> Option<ApplyError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn add_pending<'a>(&self, paths: impl Iterator<Item = &'a [u8]>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for path in paths {
            *p.paths.entry(path.to_vec()).or_insert(0) += 1;
        }
    }

    fn done_pending<'a>(&self, paths: impl Iterator<Item = &'a [u8]>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for path in paths {
            if let Some(n) = p.paths.get_mut(path) {
                *n -= 1;
                if *n == 0 {
                    p.paths.remove(path);
                }
            }
        }
        if p.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Waits until none of `paths` is being written by the pool.
    fn wait_paths(&self, paths: &[&[u8]]) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while paths.iter().any(|x| p.paths.contains_key(*x)) {
            p.waiters += 1;
            p = self.cv.wait(p).unwrap_or_else(|p| p.into_inner());
            p.waiters -= 1;
        }
    }

    /// Waits until the pool has written everything handed to it.
    fn drain(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while !p.paths.is_empty() {
            p.waiters += 1;
            p = self.cv.wait(p).unwrap_or_else(|p| p.into_inner());
            p.waiters -= 1;
        }
    }
}

/// The error for an entry whose parent directory `rel` could not be
/// opened. When a component of `rel` is a symlink, the usual cause is that
/// its target, resolved inside the layer's root as every path here is,
/// leads nowhere or not to a directory: say so, naming the link.
fn parent_error(root: BorrowedFd<'_>, rel: &[u8], entry: &str, e: Errno) -> ApplyError {
    if matches!(e, Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) {
        let mut prefix: &[u8] = b"";
        for comp in rel.split(|&b| b == b'/') {
            let Ok(dir) = open_dir_in(root, prefix) else {
                break;
            };
            let here = &rel[..prefix.len() + usize::from(!prefix.is_empty()) + comp.len()];
            if let Ok(target) = nix::fcntl::readlinkat(dir.as_fd(), os(comp)) {
                return ApplyError::Refused {
                    entry: entry.to_string(),
                    reason: format!(
                        "its parent {:?} is a symlink to {:?}, which is resolved inside the image's root and leads to no directory there ({e}); the layer expects a directory the lower layers do not have",
                        String::from_utf8_lossy(here),
                        target
                    ),
                };
            }
            prefix = here;
        }
    }
    ApplyError::io(entry, "open parent directory", e)
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// `parent/name`, or `name` at the root.
fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(parent.len() + name.len() + 1);
    full.extend_from_slice(parent);
    if !full.is_empty() {
        full.push(b'/');
    }
    full.extend_from_slice(name);
    full
}

/// Every proper ancestor of `path` plus `path` itself.
fn self_and_ancestors(path: &[u8]) -> Vec<&[u8]> {
    let mut v = vec![path];
    for (i, &b) in path.iter().enumerate() {
        if b == b'/' {
            v.push(&path[..i]);
        }
    }
    v
}

/// Turns an archive name into a clean relative path, refusing escapes.
fn normalize(raw: &[u8], entry: &str, what: &str) -> Result<Vec<u8>, ApplyError> {
    if raw.starts_with(b"/") {
        return Err(ApplyError::Refused {
            entry: entry.to_string(),
            reason: format!(
                "{what} {:?} is absolute; layer entries must be relative to the layer root",
                String::from_utf8_lossy(raw)
            ),
        });
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            return Err(ApplyError::Refused {
                entry: entry.to_string(),
                reason: format!(
                    "{what} {:?} contains '..', which could climb out of the layer root",
                    String::from_utf8_lossy(raw)
                ),
            });
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    Ok(out)
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Opens the directory `rel` inside the root for reading, not following a
/// final symlink.
fn open_dir_rw(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let p = if rel.is_empty() { os(b".") } else { os(rel) };
    openat2(root, p, how)
}

/// Sets owner, then mode (so setuid bits survive), xattrs and times on an open fd.
fn set_meta_fd(fd: BorrowedFd<'_>, m: &Meta, entry: &str, times: bool) -> Result<(), ApplyError> {
    fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
        .map_err(|e| ApplyError::io(entry, "chown", e))?;
    fchmod(fd, Mode::from_bits_truncate(m.mode)).map_err(|e| ApplyError::io(entry, "chmod", e))?;
    for (k, v) in &m.xattrs {
        fsops::fset_xattr(fd, k, v).map_err(|e| ApplyError::io(entry, "setxattr", e))?;
    }
    if times {
        let (a, mt) = m.times();
        nix::sys::stat::futimens(fd, &a, &mt).map_err(|e| ApplyError::io(entry, "set times", e))?;
    }
    Ok(())
}

/// Same for a symlink, device or FIFO, addressed by name in its parent.
fn set_meta_at(
    parent: BorrowedFd<'_>,
    name: &[u8],
    m: &Meta,
    symlink: bool,
    entry: &str,
) -> Result<(), ApplyError> {
    fchownat(
        parent,
        os(name),
        Some(Uid::from_raw(m.uid)),
        Some(Gid::from_raw(m.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| ApplyError::io(entry, "chown", e))?;
    if !symlink {
        // The entry was just created by mknod here, so it is not a symlink.
        fchmodat(
            parent,
            os(name),
            Mode::from_bits_truncate(m.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| ApplyError::io(entry, "chmod", e))?;
    }
    for (k, v) in &m.xattrs {
        fsops::lset_xattr_at(parent, name, k, v)
            .map_err(|e| ApplyError::io(entry, "setxattr", e))?;
    }
    let (a, mt) = m.times();
    utimensat(parent, os(name), &a, &mt, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| ApplyError::io(entry, "set times", e))?;
    Ok(())
}

/// Removes whatever is at `name` so a new entry can take its place.
fn clear_slot(parent: BorrowedFd<'_>, name: &[u8], entry: &str) -> Result<(), ApplyError> {
    remove_all_at(parent, name).map_err(|e| ApplyError::io(entry, "replace existing entry", e))
}

/// Creates a regular file (replacing what is there) and returns it open for writing.
fn create_file(parent: BorrowedFd<'_>, name: &[u8], entry: &str) -> Result<File, ApplyError> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    let fd = match openat(parent, os(name), flags, mode) {
        Ok(fd) => fd,
        Err(Errno::EEXIST) => {
            clear_slot(parent, name, entry)?;
            openat(parent, os(name), flags, mode).map_err(|e| ApplyError::io(entry, "create", e))?
        }
        Err(e) => return Err(ApplyError::io(entry, "create", e)),
    };
    Ok(File::from(fd))
}

fn write_job(shared: &Shared, job: &Job) -> Result<(), ApplyError> {
    let (parent_rel, name) = split_parent(&job.path);
    let parent = open_dir_in(shared.root.as_fd(), parent_rel)
        .map_err(|e| parent_error(shared.root.as_fd(), parent_rel, &job.display, e))?;
    let mut f = shared.timed_create(parent.as_fd(), name, &job.display)?;
    f.write_all(&job.data)
        .map_err(|e| ApplyError::io(&job.display, "write", e))?;
    set_meta_fd(f.as_fd(), &job.meta, &job.display, true)
}

/// The applier state on the parsing thread.
struct Applier<'a> {
    shared: &'a Shared,
    opts: &'a ApplyOptions,
    tx: Option<mpsc::SyncSender<Vec<Job>>>,
    /// Files for the pool not handed over yet.
    batch: Vec<Job>,
    batch_bytes: usize,
    /// Paths created by this layer (whiteouts and opaque markers only hide lower layers).
    written: HashSet<Vec<u8>>,
    /// Ancestors of written paths.
    touched_dirs: HashSet<Vec<u8>>,
    /// Directories whose times are set at the end.
    dir_times: Vec<(Vec<u8>, String, Meta)>,
    /// Opaque directories (remove mode: cleaned at the end).
    opaque: Vec<(Vec<u8>, String)>,
    lowers: Vec<OwnedFd>,
}

impl Applier<'_> {
    fn root(&self) -> BorrowedFd<'_> {
        self.shared.root.as_fd()
    }

    fn record(&mut self, path: &[u8]) {
        for a in self_and_ancestors(path).into_iter().skip(1) {
            if !self.touched_dirs.insert(a.to_vec()) {
                break;
            }
        }
        self.written.insert(path.to_vec());
    }

    /// Opens directory `rel`, creating missing components (owner and mode
    /// copied from the lower layers in overlay mode, else root 0755).
    fn ensure_dir(&self, rel: &[u8], entry: &str) -> Result<OwnedFd, ApplyError> {
        match open_dir_in(self.root(), rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(parent_error(self.root(), rel, entry, e)),
        }
        let mut fd = open_dir_in(self.root(), b"")
            .map_err(|e| ApplyError::io(entry, "open layer root", e))?;
        let mut cur: Vec<u8> = Vec::new();
        for comp in rel.split(|&b| b == b'/') {
            if !cur.is_empty() {
                cur.push(b'/');
            }
            cur.extend_from_slice(comp);
            match open_dir_in(self.root(), &cur) {
                Ok(next) => fd = next,
                Err(Errno::ENOENT) => {
                    match fsops::mkdir_at(fd.as_fd(), comp, 0o755) {
                        Ok(()) => self.copy_lower_meta(fd.as_fd(), comp, &cur, entry)?,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(ApplyError::io(entry, "create parent directory", e)),
                    }
                    fd = open_dir_in(self.root(), &cur)
                        .map_err(|e| parent_error(self.root(), &cur, entry, e))?;
                }
                Err(e) => return Err(parent_error(self.root(), &cur, entry, e)),
            }
        }
        Ok(fd)
    }

    fn copy_lower_meta(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        entry: &str,
    ) -> Result<(), ApplyError> {
        for lower in &self.lowers {
            if let Ok(dfd) = open_dir_in(lower.as_fd(), rel) {
                let st = fstat(dfd.as_fd()).map_err(|e| ApplyError::io(entry, "stat lower", e))?;
                let m = Meta::from_stat(&st, Vec::new());
                let d = fsops::open_subdir(parent, name)
                    .map_err(|e| ApplyError::io(entry, "open created directory", e))?;
                set_meta_fd(d.as_fd(), &m, entry, false)?;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Hands the batch to the pool.
    fn flush_batch(&mut self) -> Result<(), ApplyError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.shared
            .add_pending(batch.iter().map(|j| j.path.as_slice()));
        if let Some(tx) = &self.tx {
            if let Err(mpsc::SendError(batch)) = tx.send(batch) {
                self.shared
                    .done_pending(batch.iter().map(|j| j.path.as_slice()));
                return Err(ApplyError::io(
                    "",
                    "hand files to the writer pool",
                    io::Error::other("writer pool stopped"),
                ));
            }
        }
        Ok(())
    }

    /// Waits until the pool is done with `paths` (handing over the batch first
    /// if it holds one of them).
    fn wait_paths(&mut self, paths: &[&[u8]]) -> Result<(), ApplyError> {
        if self
            .batch
            .iter()
            .any(|j| paths.contains(&j.path.as_slice()))
        {
            self.flush_batch()?;
        }
        self.shared.wait_paths(paths);
        Ok(())
    }

    /// Waits until the pool has written everything.
    fn drain(&mut self) -> Result<(), ApplyError> {
        self.flush_batch()?;
        self.shared.drain();
        Ok(())
    }

    fn check_pool(&mut self) -> Result<(), ApplyError> {
        if self.shared.failed.load(Ordering::SeqCst) {
            self.batch.clear();
            self.shared.drain();
            if let Some(e) = self.shared.take_error() {
                return Err(e);
            }
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        e: &Entry,
        stream: &mut TarStream<R>,
    ) -> Result<(), ApplyError> {
        let entry = e.display();
        let path = normalize(&e.path, &entry, "name")?;
        if path.is_empty() {
            if e.kind != Kind::Dir {
                return Err(ApplyError::Refused {
                    entry,
                    reason: format!("a {:?} entry would replace the layer root itself", e.kind),
                });
            }
            let fd = open_dir_rw(self.root(), b"")
                .map_err(|x| ApplyError::io(&entry, "open root", x))?;
            let m = Meta::from_entry(e);
            set_meta_fd(fd.as_fd(), &m, &entry, false)?;
            self.dir_times.push((path, entry, m));
            return Ok(());
        }
        let (parent_rel, name) = split_parent(&path);
        let (parent_rel, name) = (parent_rel.to_vec(), name.to_vec());

        // Whiteouts (and aufs bookkeeping): markers whose content, if any, is ignored.
        if name.starts_with(WHITEOUT_PREFIX) && e.size > 0 {
            stream.read_data(e.size, &entry, &mut |_| Ok(()))?;
        }
        if name == OPAQUE {
            return self.opaque_dir(&parent_rel, &entry);
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            if target.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.` names are aufs bookkeeping (plnk, aufs): not content.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(ApplyError::Refused {
                    entry,
                    reason: "whiteout names no file".to_string(),
                });
            }
            let full = join_rel(&parent_rel, target);
            return self.whiteout(&parent_rel, target, &full, &entry);
        }

        // Never race the pool on this path or a parent of it.
        self.wait_paths(&self_and_ancestors(&path))?;

        let meta = Meta::from_entry(e);
        match e.kind {
            Kind::File => {
                if self.touched_dirs.contains(&path) {
                    // Replacing a directory this layer filled: let the pool finish in it first.
                    self.drain()?;
                }
                self.record(&path);
                // The pool pays off only when creating a file blocks (a busy
                // disk or journal); when creates are quick, one thread is faster.
                let slow =
                    self.shared.create_ns.load(Ordering::Relaxed) >= self.opts.pool_above_create_ns;
                if e.size <= POOL_FILE_MAX && self.tx.is_some() && slow {
                    let mut data = Vec::with_capacity(e.size as usize);
                    stream.read_data(e.size, &entry, &mut |b| {
                        data.extend_from_slice(b);
                        Ok(())
                    })?;
                    // Make sure the parent exists before a writer needs it.
                    self.ensure_dir(&parent_rel, &entry)?;
                    self.batch_bytes += data.len();
                    self.batch.push(Job {
                        path,
                        display: entry,
                        data,
                        meta,
                    });
                    if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
                        self.flush_batch()?;
                    }
                    return Ok(());
                }
                let parent = self.ensure_dir(&parent_rel, &entry)?;
                let mut f = self.shared.timed_create(parent.as_fd(), &name, &entry)?;
                let mut buf = std::io::BufWriter::with_capacity(256 << 10, &mut f);
                stream.read_data(e.size, &entry, &mut |b| {
                    buf.write_all(b)
                        .map_err(|x| ApplyError::io(&entry, "write", x))
                })?;
                buf.flush()
                    .map_err(|x| ApplyError::io(&entry, "write", x))?;
                drop(buf);
                set_meta_fd(f.as_fd(), &meta, &entry, true)
            }
            Kind::Dir => {
                self.record(&path);
                let parent = self.ensure_dir(&parent_rel, &entry)?;
                match lstat_at(parent.as_fd(), &name) {
                    Ok(st) if is_dir(&st) => {}
                    Ok(_) => {
                        clear_slot(parent.as_fd(), &name, &entry)?;
                        fsops::mkdir_at(parent.as_fd(), &name, 0o700)
                            .map_err(|x| ApplyError::io(&entry, "mkdir", x))?;
                    }
                    Err(Errno::ENOENT) => fsops::mkdir_at(parent.as_fd(), &name, 0o700)
                        .map_err(|x| ApplyError::io(&entry, "mkdir", x))?,
                    Err(x) => return Err(ApplyError::io(&entry, "stat", x)),
                }
                let d = fsops::open_subdir(parent.as_fd(), &name)
                    .map_err(|x| ApplyError::io(&entry, "open directory", x))?;
                set_meta_fd(d.as_fd(), &meta, &entry, false)?;
                self.dir_times.push((path, entry, meta));
                Ok(())
            }
            Kind::Symlink => {
                self.record(&path);
                let parent = self.ensure_dir(&parent_rel, &entry)?;
                let target = os(&e.link);
                match symlinkat(target, parent.as_fd(), os(&name)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        self.drain_if_dir(parent.as_fd(), &name)?;
                        clear_slot(parent.as_fd(), &name, &entry)?;
                        symlinkat(target, parent.as_fd(), os(&name))
                            .map_err(|x| ApplyError::io(&entry, "symlink", x))?;
                    }
                    Err(x) => return Err(ApplyError::io(&entry, "symlink", x)),
                }
                set_meta_at(parent.as_fd(), &name, &meta, true, &entry)
            }
            Kind::Hardlink => {
                let target = normalize(&e.link, &entry, "hardlink target")?;
                if target.is_empty() {
                    return Err(ApplyError::Refused {
                        entry,
                        reason: "hardlink to the layer root".to_string(),
                    });
                }
                if target == path {
                    return Ok(());
                }
                self.wait_paths(&[&target])?;
                let (tp, tn) = split_parent(&target);
                if self.opts.whiteouts == WhiteoutMode::Overlay && !self.in_root(tp, tn) {
                    // A link to a lower layer's file: copy it up first, as overlayfs would.
                    self.copy_up(tp, tn, &entry)?;
                }
                let tparent = open_dir_in(self.root(), tp).map_err(|x| ApplyError::Refused {
                    entry: entry.clone(),
                    reason: format!(
                        "hardlink target {:?} cannot be resolved inside the layer root: {x}",
                        String::from_utf8_lossy(&e.link)
                    ),
                })?;
                match lstat_at(tparent.as_fd(), tn) {
                    Ok(st) if is_dir(&st) => {
                        return Err(ApplyError::Refused {
                            entry,
                            reason: "hardlink to a directory".to_string(),
                        })
                    }
                    Ok(_) => {}
                    Err(x) => {
                        return Err(ApplyError::Refused {
                            entry,
                            reason: format!(
                                "hardlink target {:?} does not exist in the layer root ({x}); \
                                 hardlinks must point to an earlier entry",
                                String::from_utf8_lossy(&e.link)
                            ),
                        })
                    }
                }
                self.record(&path);
                let parent = self.ensure_dir(&parent_rel, &entry)?;
                let link = |p: BorrowedFd<'_>| {
                    linkat(tparent.as_fd(), os(tn), p, os(&name), AtFlags::empty())
                };
                match link(parent.as_fd()) {
                    Ok(()) => Ok(()),
                    Err(Errno::EEXIST) => {
                        self.drain_if_dir(parent.as_fd(), &name)?;
                        clear_slot(parent.as_fd(), &name, &entry)?;
                        link(parent.as_fd()).map_err(|x| ApplyError::io(&entry, "link", x))
                    }
                    Err(x) => Err(ApplyError::io(&entry, "link", x)),
                }
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                if self.opts.skip_devices {
                    return Ok(());
                }
                self.record(&path);
                let parent = self.ensure_dir(&parent_rel, &entry)?;
                let kind = match e.kind {
                    Kind::Char => SFlag::S_IFCHR,
                    Kind::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = nix::sys::stat::makedev(e.major as u64, e.minor as u64);
                let perm = Mode::from_bits_truncate(0o600);
                match mknodat(parent.as_fd(), os(&name), kind, perm, dev) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        self.drain_if_dir(parent.as_fd(), &name)?;
                        clear_slot(parent.as_fd(), &name, &entry)?;
                        mknodat(parent.as_fd(), os(&name), kind, perm, dev)
                            .map_err(|x| ApplyError::io(&entry, "mknod", x))?;
                    }
                    Err(x) => return Err(ApplyError::io(&entry, "mknod", x)),
                }
                set_meta_at(parent.as_fd(), &name, &meta, false, &entry)
            }
        }
    }

    fn in_root(&self, parent: &[u8], name: &[u8]) -> bool {
        open_dir_in(self.root(), parent)
            .ok()
            .is_some_and(|d| lstat_at(d.as_fd(), name).is_ok())
    }

    /// Copies regular file `parent/name` from the topmost lower layer holding
    /// it into the target (content, owner, mode, xattrs, times). Does nothing
    /// if no lower has it or a higher lower whites it out.
    fn copy_up(&mut self, parent: &[u8], name: &[u8], entry: &str) -> Result<(), ApplyError> {
        let mut found = None;
        for lower in &self.lowers {
            let Ok(ld) = open_dir_in(lower.as_fd(), parent) else {
                continue;
            };
            let Ok(st) = lstat_at(ld.as_fd(), name) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                found = Some((ld, st));
            }
            // A whiteout, or something that cannot be hardlinked into the upper.
            break;
        }
        let Some((ld, st)) = found else {
            return Ok(());
        };
        let src = openat(
            ld.as_fd(),
            os(name),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|x| ApplyError::io(entry, "open hardlink target in lower layer", x))?;
        let lower_path = Path::new(&format!("/proc/self/fd/{}", ld.as_raw_fd())).join(os(name));
        let mut xattrs = fsops::read_xattrs(&lower_path)
            .map_err(|x| ApplyError::io(entry, "read xattrs in lower layer", x))?;
        xattrs.retain(|(k, _)| !k.starts_with(b"trusted.overlay."));
        let dir = self.ensure_dir(parent, entry)?;
        let mut f = create_file(dir.as_fd(), name, entry)?;
        io::copy(&mut File::from(src), &mut f).map_err(|x| ApplyError::io(entry, "copy up", x))?;
        let meta = Meta::from_stat(&st, xattrs);
        set_meta_fd(f.as_fd(), &meta, entry, true)?;
        self.record(&join_rel(parent, name));
        Ok(())
    }

    /// Before replacing a directory, let the pool finish writing into it.
    fn drain_if_dir(&mut self, parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), ApplyError> {
        if matches!(lstat_at(parent, name), Ok(st) if is_dir(&st)) {
            self.drain()?;
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent_rel: &[u8],
        target: &[u8],
        full: &[u8],
        entry: &str,
    ) -> Result<(), ApplyError> {
        if self.written.contains(full) {
            // Whiteouts only hide lower layers, never this layer's own files.
            return Ok(());
        }
        match self.opts.whiteouts {
            WhiteoutMode::Remove => {
                let parent = match open_dir_in(self.root(), parent_rel) {
                    Ok(p) => p,
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(()),
                    Err(x) => return Err(ApplyError::io(entry, "open parent directory", x)),
                };
                self.drain()?;
                remove_all_at(parent.as_fd(), target)
                    .map_err(|x| ApplyError::io(entry, "remove whited-out file", x))
            }
            WhiteoutMode::Overlay => {
                let parent = self.ensure_dir(parent_rel, entry)?;
                let dev = nix::sys::stat::makedev(0, 0);
                match mknodat(
                    parent.as_fd(),
                    os(target),
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    dev,
                ) {
                    Ok(()) | Err(Errno::EEXIST) => Ok(()),
                    Err(x) => Err(ApplyError::io(entry, "create overlay whiteout", x)),
                }
            }
        }
    }

    fn opaque_dir(&mut self, dir: &[u8], entry: &str) -> Result<(), ApplyError> {
        match self.opts.whiteouts {
            WhiteoutMode::Remove => {
                self.opaque.push((dir.to_vec(), entry.to_string()));
                Ok(())
            }
            WhiteoutMode::Overlay => {
                self.ensure_dir(dir, entry)?;
                let d = open_dir_rw(self.root(), dir)
                    .map_err(|x| ApplyError::io(entry, "open opaque directory", x))?;
                fsops::fset_xattr(d.as_fd(), b"trusted.overlay.opaque", b"y")
                    .map_err(|x| ApplyError::io(entry, "set trusted.overlay.opaque", x))
            }
        }
    }

    /// After all entries: empty opaque directories of lower content, then set
    /// directory times (children no longer change them).
    fn finish(&mut self) -> Result<(), ApplyError> {
        self.drain()?;
        if let Some(e) = self.shared.take_error() {
            return Err(e);
        }
        for (dir, entry) in std::mem::take(&mut self.opaque) {
            let d = match open_dir_rw(self.root(), &dir) {
                Ok(d) => d,
                Err(Errno::ENOENT) => continue,
                Err(x) => return Err(ApplyError::io(&entry, "open opaque directory", x)),
            };
            let children =
                fsops::list_dir(d.as_fd()).map_err(|x| ApplyError::io(&entry, "list", x))?;
            for c in children {
                let full = join_rel(&dir, &c);
                if !self.written.contains(&full) && !self.touched_dirs.contains(&full) {
                    remove_all_at(d.as_fd(), &c)
                        .map_err(|x| ApplyError::io(&entry, "clear opaque directory", x))?;
                }
            }
        }
        for (path, entry, meta) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            match open_dir_rw(self.root(), &path) {
                Ok(d) => {
                    let (a, m) = meta.times();
                    nix::sys::stat::futimens(d.as_fd(), &a, &m)
                        .map_err(|x| ApplyError::io(&entry, "set directory times", x))?;
                }
                // Replaced or removed by a later entry.
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {}
                Err(x) => return Err(ApplyError::io(&entry, "open directory", x)),
            }
        }
        Ok(())
    }
}

/// Applies one layer blob to `target` in a single streaming pass and returns
/// its diff_id (the sha256 of the uncompressed tar stream) and size.
///
/// `target` must exist. In [`WhiteoutMode::Overlay`] it should be an empty
/// overlay upper directory; in [`WhiteoutMode::Remove`] it holds the parent
/// layers already. If `options.expected_diff_id` is set and differs, the call
/// fails with [`ApplyError::DiffIdMismatch`] after applying: the caller must
/// then discard `target`, as after any other error.
pub fn apply_layer<R: Read + Send>(
    reader: R,
    compression: Compression,
    target: &Path,
    options: &ApplyOptions,
) -> Result<Applied, ApplyError> {
    let open_dir = |p: &Path| {
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ApplyError::Target {
            path: p.to_path_buf(),
            source: e.into(),
        })
    };
    let root = open_dir(target)?;
    let mut lowers = Vec::new();
    if options.whiteouts == WhiteoutMode::Overlay {
        for l in &options.lowers {
            lowers.push(open_dir(l)?);
        }
    }

    let count = Arc::new(AtomicU64::new(0));
    let counting = BufReader::with_capacity(
        256 << 10,
        Counting {
            inner: reader,
            count: count.clone(),
        },
    );
    let (decoded, compressed): (Box<dyn Read + Send>, _) = match compression {
        Compression::None => (Box::new(counting), None),
        Compression::Gzip => (
            Box::new(flate2::bufread::MultiGzDecoder::new(counting)),
            Some(count),
        ),
        Compression::Zstd => (
            Box::new(
                zstd::stream::read::Decoder::with_buffer(counting).map_err(|e| {
                    ApplyError::Stream {
                        entry: "zstd header".to_string(),
                        source: e,
                    }
                })?,
            ),
            Some(count),
        ),
    };
    let limited = Limited {
        inner: decoded,
        total: 0,
        compressed,
        max_size: options.max_size,
        max_ratio: options.max_ratio,
    };

    let shared = Shared {
        root,
        pending: Mutex::new(Pending::default()),
        cv: Condvar::new(),
        error: Mutex::new(None),
        failed: AtomicBool::new(false),
        create_ns: AtomicU64::new(0),
    };

    std::thread::scope(|scope| -> Result<Applied, ApplyError> {
        // One thread inflates while this one hashes, parses and applies
        // (inflating is the larger half of the CPU work).
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
        let inflater = scope.spawn(move || inflate(limited, chunk_tx, spare_rx));
        let mut stream = TarStream::new(Chunks {
            rx: chunk_rx,
            spare: spare_tx,
            hasher: Sha256::new(),
            cur: Vec::new(),
            pos: 0,
        });
        let tx = if options.threads > 0 {
            let (tx, rx) = mpsc::sync_channel::<Vec<Job>>(4);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..options.threads {
                let rx = rx.clone();
                let shared = &shared;
                scope.spawn(move || loop {
                    let job = {
                        let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                        guard.recv()
                    };
                    let Ok(batch) = job else { break };
                    for job in &batch {
                        if shared.failed.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Err(e) = write_job(shared, job) {
                            shared.fail(e);
                        }
                    }
                    shared.done_pending(batch.iter().map(|j| j.path.as_slice()));
                });
            }
            Some(tx)
        } else {
            None
        };
        let mut applier = Applier {
            shared: &shared,
            opts: options,
            tx,
            batch: Vec::new(),
            batch_bytes: 0,
            written: HashSet::new(),
            touched_dirs: HashSet::new(),
            dir_times: Vec::new(),
            opaque: Vec::new(),
            lowers,
        };
        let run = (|| {
            while let Some(entry) = stream.next_entry()? {
                applier.check_pool()?;
                applier.apply_entry(&entry, &mut stream)?;
            }
            applier.finish()
        })();
        applier.tx = None;
        shared.drain();
        // Hash whatever follows the end-of-archive marker too: the diff_id covers the whole stream.
        let mut chunks = stream.into_inner();
        let run = run.and_then(|()| {
            io::copy(&mut chunks, &mut io::sink())
                .map(|_| ())
                .map_err(|e| ApplyError::from_stream(e, "end of archive"))
        });
        let hasher = chunks.hasher;
        // On error the receiver is gone, so the inflater stops at its next send.
        drop(chunks.rx);
        let limited = inflater.join().map_err(|_| {
            ApplyError::io("", "inflate", io::Error::other("inflate thread panicked"))
        })?;
        run?;
        let diff_id = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(expected) = &options.expected_diff_id {
            if !expected.eq_ignore_ascii_case(&diff_id) {
                return Err(ApplyError::DiffIdMismatch {
                    expected: expected.clone(),
                    actual: diff_id,
                });
            }
        }
        Ok(Applied {
            diff_id,
            size: limited.total,
        })
    })
}

/// Decompressed bytes handed from the inflater to the parser at once.
const CHUNK_SIZE: usize = 256 << 10;
/// Chunks queued between the two threads.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Reads the decompressed stream in large chunks and sends them on, reusing
/// the buffers the parser hands back (no allocation or zeroing per chunk).
fn inflate<R: Read>(
    mut r: Limited<R>,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    spare: mpsc::Receiver<Vec<u8>>,
) -> Limited<R> {
    loop {
        let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK_SIZE]);
        buf.resize(CHUNK_SIZE, 0);
        let mut got = 0;
        // Fill the chunk (decoders return small reads) to keep channel traffic low.
        while got < buf.len() {
            match r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return r;
                }
            }
        }
        if got == 0 {
            return r;
        }
        buf.truncate(got);
        if tx.send(Ok(buf)).is_err() {
            return r;
        }
    }
}

/// `Read` over the inflater's chunks; hashes each chunk as it arrives (the
/// diff_id covers the whole stream) and returns its buffer for reuse.
struct Chunks {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: mpsc::Sender<Vec<u8>>,
    hasher: Sha256,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    let used = std::mem::replace(&mut self.cur, chunk);
                    if used.capacity() == CHUNK_SIZE {
                        // The inflater may be gone already: nothing to reuse then.
                        let _ = self.spare.send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_escapes_and_cleans_dots() {
        assert_eq!(normalize(b"./a//b/./c", "e", "name").unwrap(), b"a/b/c");
        assert!(normalize(b"a/../../etc", "e", "name").is_err());
        assert!(normalize(b"/etc/passwd", "e", "name").is_err());
        assert_eq!(normalize(b"./", "e", "name").unwrap(), b"");
    }
}
