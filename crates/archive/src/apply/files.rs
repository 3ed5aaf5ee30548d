//! One file's metadata (owner, mode, xattrs, times) and the operations
//! that create a file and set its metadata.

use std::fs::File;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, fstat, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};

use super::paths::os;
use crate::fsops::{self, remove_all_at};
use crate::tarstream::Entry;
use crate::ApplyError;

/// Metadata applied to every created entry.
#[derive(Clone)]
pub(super) struct Meta {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
    pub(super) atime: (i64, i64),
    pub(super) mtime: (i64, i64),
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    pub(super) fn from_entry(e: &Entry) -> Meta {
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
    pub(super) fn from_stat(st: &libc::stat, xattrs: fsops::Xattrs) -> Meta {
        Meta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            atime: (st.st_atime, st.st_atime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            xattrs,
        }
    }

    pub(super) fn times(&self) -> (TimeSpec, TimeSpec) {
        (
            TimeSpec::new(self.atime.0, self.atime.1),
            TimeSpec::new(self.mtime.0, self.mtime.1),
        )
    }
}

/// Sets owner, then mode (so setuid bits survive), xattrs and times on an
/// open fd. Owner and mode are only changed where they differ (a file this
/// process creates usually has both right already).
pub(super) fn set_meta_fd(
    fd: BorrowedFd<'_>,
    m: &Meta,
    entry: &str,
    times: bool,
) -> Result<(), ApplyError> {
    let st = fstat(fd).map_err(|e| ApplyError::io(entry, "stat", e))?;
    let chown = st.st_uid != m.uid || st.st_gid != m.gid;
    if chown {
        fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
            .map_err(|e| ApplyError::io(entry, "chown", e))?;
    }
    // A chown may have cleared setuid/setgid bits: set the mode again then.
    if chown || st.st_mode & 0o7777 != m.mode & 0o7777 {
        fchmod(fd, Mode::from_bits_truncate(m.mode))
            .map_err(|e| ApplyError::io(entry, "chmod", e))?;
    }
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
pub(super) fn set_meta_at(
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
pub(super) fn clear_slot(
    parent: BorrowedFd<'_>,
    name: &[u8],
    entry: &str,
) -> Result<(), ApplyError> {
    remove_all_at(parent, name).map_err(|e| ApplyError::io(entry, "replace existing entry", e))
}

/// Creates a regular file (replacing what is there) with permission bits
/// `mode` (before umask; the fd is writable whatever they say) and returns
/// it open for writing.
pub(super) fn create_file(
    parent: BorrowedFd<'_>,
    name: &[u8],
    mode: u32,
    entry: &str,
) -> Result<File, ApplyError> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(mode & 0o777);
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
