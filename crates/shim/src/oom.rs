//! OOM notifications as they happen: on a cgroup v1 memory controller, an
//! eventfd registered through `cgroup.event_control` for the container's
//! `memory.oom_control` wakes a thread each time the OOM killer acts in the
//! cgroup (and once more when the cgroup is removed, which ends the
//! thread). Without a v1 memory controller the shim reports OOM kills when
//! the init exits.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The container's v1 memory cgroup directory, if it has one.
pub fn memory_cgroup_v1(paths: &[PathBuf]) -> Option<PathBuf> {
    paths
        .iter()
        .find(|p| p.join("memory.oom_control").exists())
        .cloned()
}

/// Calls `on_event` on a new thread each time the memory cgroup `dir`
/// signals an OOM event, until the cgroup is removed. Returns false when
/// the notification cannot be registered.
pub fn watch(dir: &Path, on_event: impl Fn() + Send + 'static) -> bool {
    // SAFETY: eventfd takes two integers and returns a new descriptor or -1.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return false;
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let Ok(control) = File::open(dir.join("memory.oom_control")) else {
        return false;
    };
    let registration = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    let registered = File::options()
        .write(true)
        .open(dir.join("cgroup.event_control"))
        .and_then(|mut f| f.write_all(registration.as_bytes()));
    if registered.is_err() {
        return false;
    }
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _control = control;
        let mut efd = File::from(efd);
        let mut count = [0u8; 8];
        while efd.read_exact(&mut count).is_ok() {
            if !dir.exists() {
                break;
            }
            on_event();
        }
    });
    true
}
