//! Mount descriptions and the code that performs them.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::SnapshotError;

/// One mount to perform, shaped like containerd's `mount.Mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    pub kind: String,
    /// Source path (`overlay` for overlay mounts).
    pub source: String,
    /// Options: `ro`/`rw`/`rbind` for binds, `lowerdir=`, `upperdir=`, `workdir=` for overlay.
    pub options: Vec<String>,
}

fn err(target: &Path, what: &str, e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Mount {
        target: target.to_path_buf(),
        detail: format!("{what}: {e}"),
    }
}

/// Mounts `mounts` on `target` in order (normally exactly one).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), SnapshotError> {
    for m in mounts {
        match m.kind.as_str() {
            "bind" => {
                let rec = m.options.iter().any(|o| o == "rbind");
                let mut flags = MsFlags::MS_BIND;
                if rec {
                    flags |= MsFlags::MS_REC;
                }
                mount(
                    Some(m.source.as_str()),
                    target,
                    None::<&str>,
                    flags,
                    None::<&str>,
                )
                .map_err(|e| err(target, &format!("bind mount of {}", m.source), e))?;
                if m.options.iter().any(|o| o == "ro") {
                    mount(
                        None::<&str>,
                        target,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .map_err(|e| err(target, "read-only remount", e))?;
                }
            }
            "overlay" => mount_overlay(&m.options, target)?,
            other => {
                return Err(err(
                    target,
                    "mount",
                    format!("unsupported mount type {other:?} (expected bind or overlay)"),
                ))
            }
        }
    }
    Ok(())
}

/// Unmounts `target` (lazily if busy is not an option: a plain unmount).
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    umount2(target, MntFlags::empty()).map_err(|e| err(target, "unmount", e))
}

// From <linux/mount.h> (not all are in the libc crate).
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// Longest option string `mount(2)` accepts (one page, with its NUL).
const PAGE_LIMIT: usize = 4095;

/// Most lower layers one overlay mount stacks (the kernel's OVL_MAX_STACK).
const MAX_LOWERS: usize = 500;

fn mount_overlay(options: &[String], target: &Path) -> Result<(), SnapshotError> {
    let lowers = options
        .iter()
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .map(|v| v.split(':').count())
        .sum::<usize>();
    if lowers > MAX_LOWERS {
        return Err(err(
            target,
            "overlay mount",
            format!(
                "{lowers} layers, and overlayfs stacks at most {MAX_LOWERS}: rebuild the image with fewer layers"
            ),
        ));
    }
    let data = options.join(",");
    if data.len() <= PAGE_LIMIT {
        return mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| err(target, "overlay mount", e));
    }
    // Too long for one page: the new mount API takes each lower separately.
    let fs = fsopen("overlay").map_err(|e| err(target, "fsopen(overlay)", e))?;
    for o in options {
        let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
        if k == "lowerdir" {
            for l in v.split(':') {
                fsconfig_string(&fs, "lowerdir+", l)
                    .map_err(|e| err(target, &format!("fsconfig lowerdir+={l}"), e))?;
            }
        } else if k == "ro" {
            continue;
        } else if v.is_empty() {
            fsconfig_flag(&fs, k).map_err(|e| err(target, &format!("fsconfig {k}"), e))?;
        } else {
            fsconfig_string(&fs, k, v).map_err(|e| err(target, &format!("fsconfig {k}={v}"), e))?;
        }
    }
    fsconfig_create(&fs).map_err(|e| err(target, "fsconfig create (overlay)", e))?;
    let mnt = fsmount(&fs).map_err(|e| err(target, "fsmount", e))?;
    move_mount(&mnt, target).map_err(|e| err(target, "move_mount", e))
}

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::other("NUL in mount option"))
}

fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fsopen(fstype: &str) -> std::io::Result<OwnedFd> {
    let t = cstr(fstype)?;
    // SAFETY: `t` is a valid NUL-terminated string for the call's duration.
    let fd = check(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsopen returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fsconfig_string(fs: &OwnedFd, key: &str, value: &str) -> std::io::Result<()> {
    let k = cstr(key)?;
    let v = cstr(value)?;
    // SAFETY: valid fd and NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

fn fsconfig_flag(fs: &OwnedFd, key: &str) -> std::io::Result<()> {
    let k = cstr(key)?;
    // SAFETY: valid fd and NUL-terminated key; flags take no value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            k.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    Ok(())
}

fn fsconfig_create(fs: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: valid fd; CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    Ok(())
}

fn fsmount(fs: &OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: valid fs context fd; plain flags.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    // SAFETY: fsmount returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn move_mount(mnt: &OwnedFd, target: &Path) -> std::io::Result<()> {
    let t = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("NUL in target path"))?;
    let empty = cstr("")?;
    // SAFETY: valid mount fd and NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}
