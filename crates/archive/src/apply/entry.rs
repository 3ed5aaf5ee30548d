//! The parsing thread's applier: each tar entry in order, with its parent
//! directories, hardlinks, devices and copy-ups; files go to the pool.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, mknodat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat};

use super::files::{clear_slot, create_file, set_meta_at, set_meta_fd, Meta};
use super::paths::{
    join_rel, normalize, open_dir_rw, os, parent_error, self_and_ancestors, split_parent,
};
use super::pool::{Job, Shared, BATCH_BYTES, BATCH_FILES};
use super::{OPAQUE, POOL_FILE_MAX, WHITEOUT_PREFIX};
use crate::fsops::{self, is_dir, lstat_at, open_dir_in, remove_all_at};
use crate::tarstream::{Entry, Kind, TarStream};
use crate::{ApplyError, ApplyOptions, WhiteoutMode};

/// The applier state on the parsing thread.
pub(super) struct Applier<'a> {
    pub(super) shared: &'a Shared,
    pub(super) opts: &'a ApplyOptions,
    pub(super) tx: Option<mpsc::SyncSender<Vec<Job>>>,
    /// Files for the pool not handed over yet.
    pub(super) batch: Vec<Job>,
    pub(super) batch_bytes: usize,
    /// Paths created by this layer (whiteouts and opaque markers only hide lower layers).
    pub(super) written: HashSet<Vec<u8>>,
    /// Ancestors of written paths.
    pub(super) touched_dirs: HashSet<Vec<u8>>,
    /// Directories whose times are set at the end.
    pub(super) dir_times: Vec<(Vec<u8>, String, Meta)>,
    /// Opaque directories (remove mode: cleaned at the end).
    pub(super) opaque: Vec<(Vec<u8>, String)>,
    pub(super) lowers: Vec<OwnedFd>,
    /// Starts one more writer thread (the pool grows while creates are slow).
    pub(super) spawn_writer: &'a dyn Fn(),
    /// Data buffers the writers are done with, for the next files.
    pub(super) spare_data: mpsc::Receiver<Vec<u8>>,
    /// Writer threads started so far (at most `opts.threads`).
    pub(super) writers: usize,
    /// The last parent directory opened for an entry: entries come grouped
    /// by directory, so most reuse it instead of resolving it again.
    pub(super) parent_cache: Option<(Vec<u8>, Arc<OwnedFd>)>,
}

impl Applier<'_> {
    pub(super) fn root(&self) -> BorrowedFd<'_> {
        self.shared.root.as_fd()
    }

    pub(super) fn record(&mut self, path: &[u8]) {
        for a in self_and_ancestors(path).into_iter().skip(1) {
            if !self.touched_dirs.insert(a.to_vec()) {
                break;
            }
        }
        self.written.insert(path.to_vec());
    }

    /// Opens directory `rel`, creating missing components (owner and mode
    /// copied from the lower layers in overlay mode, else root 0755).
    pub(super) fn ensure_dir(&self, rel: &[u8], entry: &str) -> Result<OwnedFd, ApplyError> {
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

    pub(super) fn copy_lower_meta(
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

    /// The parent directory `rel` of an entry at `path`, from the cache
    /// when the previous entry had the same parent.
    pub(super) fn parent_dir(
        &mut self,
        rel: &[u8],
        entry: &str,
    ) -> Result<Arc<OwnedFd>, ApplyError> {
        if let Some((p, fd)) = &self.parent_cache {
            if p == rel {
                return Ok(fd.clone());
            }
        }
        let fd = Arc::new(self.ensure_dir(rel, entry)?);
        self.parent_cache = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }

    /// Forgets the cached parent directory if an entry at `path` could
    /// replace it or one of its ancestors (or removes other paths).
    pub(super) fn invalidate_parent(&mut self, path: &[u8], name: &[u8]) {
        let stale = self.parent_cache.as_ref().is_some_and(|(p, _)| {
            name.starts_with(WHITEOUT_PREFIX)
                || p.strip_prefix(path)
                    .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
        });
        if stale {
            self.parent_cache = None;
        }
    }

    /// Hands the batch to the pool, starting a writer if none runs yet or
    /// if those running are all busy and the queue is full.
    pub(super) fn flush_batch(&mut self) -> Result<(), ApplyError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.shared
            .add_pending(batch.iter().map(|j| j.path.as_slice()));
        if let Some(tx) = &self.tx {
            if self.writers == 0 {
                (self.spawn_writer)();
                self.writers = 1;
            }
            let batch = match tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(mpsc::TrySendError::Full(batch)) => {
                    if self.writers < self.opts.threads {
                        (self.spawn_writer)();
                        self.writers += 1;
                    }
                    batch
                }
                Err(mpsc::TrySendError::Disconnected(batch)) => batch,
            };
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
    pub(super) fn wait_paths(&mut self, paths: &[&[u8]]) -> Result<(), ApplyError> {
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
    pub(super) fn drain(&mut self) -> Result<(), ApplyError> {
        self.flush_batch()?;
        self.shared.drain();
        Ok(())
    }

    pub(super) fn check_pool(&mut self) -> Result<(), ApplyError> {
        if self.shared.failed.load(Ordering::SeqCst) {
            self.batch.clear();
            self.shared.drain();
            if let Some(e) = self.shared.take_error() {
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) fn apply_entry<R: BufRead>(
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
        self.invalidate_parent(&path, &name);

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
                let parent = self.parent_dir(&parent_rel, &entry)?;
                // The pool pays off when creating files is what holds the
                // pipeline up: creates block (a busy or cold disk), or the
                // inflated chunks queue up before this thread. Otherwise one
                // thread writing is cheaper.
                let slow = self.shared.create_ns.load(Ordering::Relaxed)
                    >= self.opts.pool_above_create_ns
                    || self.shared.parser_behind.load(Ordering::Relaxed);
                if e.size <= POOL_FILE_MAX && self.tx.is_some() && slow {
                    let mut data = self.spare_data.try_recv().unwrap_or_default();
                    data.clear();
                    data.reserve(e.size as usize);
                    stream.read_data(e.size, &entry, &mut |b| {
                        data.extend_from_slice(b);
                        Ok(())
                    })?;
                    self.batch_bytes += data.len();
                    self.batch.push(Job {
                        parent,
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
                let mut f = self
                    .shared
                    .timed_create(parent.as_fd(), &name, meta.mode, &entry)?;
                // Straight from the inflated chunks to the file, no buffer between.
                stream.read_data(e.size, &entry, &mut |b| {
                    f.write_all(b)
                        .map_err(|x| ApplyError::io(&entry, "write", x))
                })?;
                set_meta_fd(f.as_fd(), &meta, &entry, true)
            }
            Kind::Dir => {
                self.record(&path);
                let parent = self.parent_dir(&parent_rel, &entry)?;
                // Created with its final permission bits where they let the
                // owner in (the chmod below is then usually not needed).
                let mode = (meta.mode & 0o777) | 0o700;
                match fsops::mkdir_at(parent.as_fd(), &name, mode) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => match lstat_at(parent.as_fd(), &name) {
                        Ok(st) if is_dir(&st) => {}
                        Ok(_) => {
                            clear_slot(parent.as_fd(), &name, &entry)?;
                            fsops::mkdir_at(parent.as_fd(), &name, mode)
                                .map_err(|x| ApplyError::io(&entry, "mkdir", x))?;
                        }
                        Err(x) => return Err(ApplyError::io(&entry, "stat", x)),
                    },
                    Err(x) => return Err(ApplyError::io(&entry, "mkdir", x)),
                }
                let d = fsops::open_subdir(parent.as_fd(), &name)
                    .map_err(|x| ApplyError::io(&entry, "open directory", x))?;
                set_meta_fd(d.as_fd(), &meta, &entry, false)?;
                self.dir_times.push((path, entry, meta));
                Ok(())
            }
            Kind::Symlink => {
                self.record(&path);
                let parent = self.parent_dir(&parent_rel, &entry)?;
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

    pub(super) fn in_root(&self, parent: &[u8], name: &[u8]) -> bool {
        open_dir_in(self.root(), parent)
            .ok()
            .is_some_and(|d| lstat_at(d.as_fd(), name).is_ok())
    }

    /// Copies regular file `parent/name` from the topmost lower layer holding
    /// it into the target (content, owner, mode, xattrs, times). Does nothing
    /// if no lower has it or a higher lower whites it out.
    pub(super) fn copy_up(
        &mut self,
        parent: &[u8],
        name: &[u8],
        entry: &str,
    ) -> Result<(), ApplyError> {
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
        let mut f = create_file(dir.as_fd(), name, st.st_mode, entry)?;
        io::copy(&mut File::from(src), &mut f).map_err(|x| ApplyError::io(entry, "copy up", x))?;
        let meta = Meta::from_stat(&st, xattrs);
        set_meta_fd(f.as_fd(), &meta, entry, true)?;
        self.record(&join_rel(parent, name));
        Ok(())
    }

    /// After all entries: empty opaque directories of lower content, then set
    /// directory times (children no longer change them).
    pub(super) fn finish(&mut self) -> Result<(), ApplyError> {
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
