//! Persistent network namespaces: a new namespace kept alive by a bind
//! mount of its nsfs file (as `ip netns add` keeps one), so that CNI can
//! set it up before the container exists and the runtime can join it by
//! path; and the removal of host links (a network's bridge).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

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
    let what = || format!("deleting interface {name}");
    // SAFETY: socket takes integers and returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(Error::sys(what(), nix::errno::Errno::last()));
    }
    // SAFETY: the kernel just returned this descriptor; it is ours alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
    let mut msg = [0u8; 32];
    msg[0..4].copy_from_slice(&32u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_DELLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg[16] = libc::AF_UNSPEC as u8;
    msg[20..24].copy_from_slice(&index.to_ne_bytes());
    // SAFETY: `msg` is a live buffer of the length given; the kernel
    // reads it only during the call.
    if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(Error::sys(what(), nix::errno::Errno::last()));
    }
    let mut answer = [0u8; 1024];
    // SAFETY: `answer` is a live, writable buffer of the length given.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            0,
        )
    };
    if n < 0 {
        return Err(Error::sys(what(), nix::errno::Errno::last()));
    }
    // NLMSG_ERROR carries a negative errno after the header (0: the ack).
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    if n >= 20 && kind == libc::NLMSG_ERROR as u16 {
        let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
        if code != 0 && code != -libc::ENODEV {
            return Err(Error::sys(what(), nix::errno::Errno::from_raw(-code)));
        }
    }
    Ok(())
}
