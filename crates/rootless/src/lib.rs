//! Rootless containers: what an unprivileged user needs to run them.
//!
//! - [`subid`]: the user's subordinate id ranges in /etc/subuid and /etc/subgid.
//! - [`idmap`]: writing a new user namespace's uid_map and gid_map — directly
//!   when the caller may (root, or a single mapping of its own id), through
//!   newuidmap/newgidmap (Debian's uidmap package) otherwise, after checking
//!   the ranges against /etc/subuid so a missing range is a clear error.
//! - [`dirs`]: the user's runtime directory ($XDG_RUNTIME_DIR).
//! - [`userns`]: re-running the current command as root of a new user and
//!   mount namespace mapping the user's id and subordinate ranges (what
//!   `podman unshare` does), so layers keep their owners and overlay mounts.

mod error;

pub mod dirs;
pub mod idmap;
pub mod subid;
pub mod userns;

pub use error::Error;

/// True when this process runs in a user namespace that does not map every
/// id (its "root" is not the host's root: device nodes cannot be created,
/// cgroups not written unless delegated).
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// True when this process is not the host's root: an unprivileged user, or
/// root of a user namespace.
pub fn is_rootless() -> bool {
    !nix::unistd::Uid::effective().is_root() || in_user_namespace()
}

/// The caller's effective uid as the parent user namespace sees it: the
/// user's own uid when berth runs as root of its rootless user namespace.
pub fn outer_uid() -> u32 {
    let uid = nix::unistd::Uid::effective().as_raw();
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    map.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            match f[..] {
                [inside, outside, count] if uid >= inside && uid - inside < count => {
                    Some(outside + (uid - inside))
                }
                _ => None,
            }
        })
        .next()
        .unwrap_or(uid)
}

/// The name of user `uid` in the password database, or the number when it
/// has none (subordinate id files accept either).
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}
