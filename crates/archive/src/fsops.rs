//! Confined filesystem primitives: every path is resolved inside a root
//! directory with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), and the
//! final component is never followed. Nothing is cached between calls.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Opens directory `rel` (components joined by `/`, "" for the root itself)
/// inside `root`, resolving every symlink as if `root` were `/`.
pub fn open_dir_in(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    let path: &OsStr = if rel.is_empty() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(rel)
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, path, how)
}

/// Opens `name` in `dir` for reading as a directory without following a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        OsStr::from_bytes(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// `lstat` of `name` in `dir`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<libc::stat, Errno> {
    fstatat(
        dir,
        OsStr::from_bytes(name),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// True if the stat describes a directory.
pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes `name` in `dir` and, for a directory, everything below it,
/// without following symlinks. A missing `name` is not an error.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if is_dir(&st) {
        let sub = open_subdir(dir, name)?;
        for child in list_dir(sub.as_fd())? {
            remove_all_at(sub.as_fd(), &child)?;
        }
        drop(sub);
        match unlinkat(dir, OsStr::from_bytes(name), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        match unlinkat(dir, OsStr::from_bytes(name), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Names in a directory (without `.` and `..`).
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    // Re-open so the Dir owns its own description (seek position).
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Creates directory `name` in `dir` (mode before umask); EEXIST is returned as is.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> Result<(), Errno> {
    mkdirat(dir, OsStr::from_bytes(name), Mode::from_bits_truncate(mode))
}

fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    CString::new(p).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

/// Sets an extended attribute on an open file.
pub fn fset_xattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: `n` is a valid NUL-terminated string, `value` a valid slice for
    // its length, and `fd` a descriptor borrowed for the duration of the call.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets an extended attribute on `name` in `dir` without following a final symlink.
pub fn lset_xattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    lset_xattr_c(&proc_path(dir, name)?, key, value)
}

/// Lists the extended attributes of `path` (not following a final symlink).
pub fn llist_xattrs(path: &std::path::Path) -> io::Result<Vec<Vec<u8>>> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `p` is NUL-terminated; `buf` is valid for `buf.len()` bytes.
        let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        buf.truncate(r as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_vec())
            .collect());
    }
}

/// Reads extended attribute `key` of `path` (not following a final symlink).
pub fn lget_xattr(path: &std::path::Path, key: &[u8]) -> io::Result<Vec<u8>> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let k = cstr(key)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: strings are NUL-terminated; `buf` is valid for its length.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                buf.resize(buf.len() * 8, 0);
                continue;
            }
            return Err(e);
        }
        buf.truncate(r as usize);
        return Ok(buf);
    }
}

/// Name/value pairs of extended attributes.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// All extended attributes of `path` (not following a final symlink), sorted by name.
pub fn read_xattrs(path: &std::path::Path) -> io::Result<Xattrs> {
    let mut keys = llist_xattrs(path)?;
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = lget_xattr(path, &k)?;
            Ok((k, v))
        })
        .collect()
}

/// Sets extended attribute `key` on `path` (not following a final symlink).
pub fn lset_xattr(path: &std::path::Path, key: &[u8], value: &[u8]) -> io::Result<()> {
    lset_xattr_c(&cstr(path.as_os_str().as_bytes())?, key, value)
}

fn lset_xattr_c(p: &CString, key: &[u8], value: &[u8]) -> io::Result<()> {
    let k = cstr(key)?;
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // value pointer/length come from a valid slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when this process runs in a user namespace that does not map all ids
/// (device nodes cannot be created there).
pub use berth_rootless::in_user_namespace;
