//! Persistent network namespaces: a new namespace kept alive by a bind
//! mount of its nsfs file (as `ip netns add` keeps one), so that CNI can
//! set it up before the container exists and the runtime can join it by
//! path; and the removal of host links (a network's bridge).

use std::path::Path;

use berth_core::rtnetlink::{ifinfo, Rtnl};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// `statfs` magic of nsfs, the file system of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is a namespace file (a bind-mounted one, or one of
/// `/proc/PID/ns/`).
pub fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Creates a new network namespace and pins it at `path` (whose parent
/// must exist); `setup` runs inside it first (bringing `lo` up).
pub fn create(path: &Path, setup: fn() -> nix::Result<()>) -> Result<()> {
    std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) moves only the calling thread: a thread of its
    // own enters the namespace, pins it and ends.
    let pinned = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys("unshare(CLONE_NEWNET)", e))?;
        setup().map_err(|e| Error::sys("bringing lo up in the new network namespace", e))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("bind-mounting {own} at {}", target.display()), e))
    })
    .join()
    .unwrap_or_else(|_| Err(Error::invalid("network namespace thread", "it panicked")));
    if pinned.is_err() {
        let _ = std::fs::remove_file(path);
    }
    pinned
}

/// Unpins and removes the namespace file at `path` (the namespace goes
/// when its last process leaves); one already gone is fine.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys(format!("unmounting {}", path.display()), e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Whether the host has a network interface called `name`.
pub fn link_exists(name: &str) -> bool {
    !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
}

/// Deletes the host's network interface `name` (over rtnetlink:
/// RTM_DELLINK by index); one that does not exist is fine.
pub fn delete_link(name: &str) -> Result<()> {
    let index_file = Path::new("/sys/class/net").join(name).join("ifindex");
    let index: i32 = match std::fs::read_to_string(&index_file) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| Error::invalid(index_file.display().to_string(), "not an index"))?,
        Err(_) => return Ok(()),
    };
    match Rtnl::open().and_then(|r| r.request(libc::RTM_DELLINK, 0, &ifinfo(index, 0, 0), 0)) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(Error::sys(
            format!("deleting interface {name}"),
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )),
    }
}
