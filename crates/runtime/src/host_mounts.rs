//! Mounts of a container without a mount namespace of its own. The Runtime
//! Spec reads a namespace type left out as the runtime's ("inherited"), so
//! its `mounts`, masked and read-only paths are made in the runtime's mount
//! namespace, under the container's rootfs (as runc does). Unlike runc,
//! which leaves them on the host, `create` records the mounts that appeared
//! under the rootfs and `delete` detaches them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The mounts of the calling process's namespace at or under `rootfs`, as
/// (mount id, mount point), in mountinfo's order (parents first).
fn under(rootfs: &Path) -> Vec<(u64, PathBuf)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?.parse().ok()?;
            let point = berth_core::mountinfo::unescape(f.nth(3)?);
            point.starts_with(rootfs).then_some((id, point))
        })
        .collect()
}

/// The mounts under a rootfs before `create` made any.
pub(crate) struct Before {
    rootfs: PathBuf,
    ids: HashSet<u64>,
}

impl Before {
    /// Notes the mounts at or under `rootfs` now.
    pub(crate) fn take(rootfs: &Path) -> Before {
        Before {
            rootfs: rootfs.to_path_buf(),
            ids: under(rootfs).into_iter().map(|(id, _)| id).collect(),
        }
    }

    /// The mount points that appeared under the rootfs since, in the order
    /// they were made.
    pub(crate) fn new_mounts(&self) -> Vec<PathBuf> {
        under(&self.rootfs)
            .into_iter()
            .filter(|(id, _)| !self.ids.contains(id))
            .map(|(_, p)| p)
            .collect()
    }
}

/// Detaches `mounts` (recorded by [`Before::new_mounts`]) in reverse order,
/// each only if it lies under `rootfs`; one already gone is skipped.
pub(crate) fn unmount_all(mounts: &[PathBuf], rootfs: &Path) {
    for m in mounts.iter().rev().filter(|m| m.starts_with(rootfs)) {
        if let Err(e) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
            if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                tracing::warn!("cannot unmount {}: {e}", m.display());
            }
        }
    }
}
