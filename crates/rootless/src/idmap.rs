//! Writing the uid_map and gid_map of a new user namespace.
//!
//! Root writes any map itself. An unprivileged caller may write only one
//! line mapping its own id (for the gid map after writing "deny" to
//! `setgroups`); anything more goes through the setuid helpers newuidmap
//! and newgidmap, which allow the ranges /etc/subuid and /etc/subgid grant
//! the user. The ranges are checked here first, so a missing range is an
//! error naming the file, the user and the fix instead of the helper's
//! terse refusal.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::subid::{self, Range};
use crate::Error;

/// One line of an id map: container ids `container ..+size` are host ids
/// `host ..+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The first id inside the namespace.
    pub container: u32,
    /// The first id outside (in the caller's namespace).
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

/// Which of the two maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// uid_map, newuidmap, /etc/subuid.
    Uid,
    /// gid_map, newgidmap, /etc/subgid.
    Gid,
}

impl Kind {
    fn proc_file(self) -> &'static str {
        match self {
            Kind::Uid => "uid_map",
            Kind::Gid => "gid_map",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Kind::Uid => "newuidmap",
            Kind::Gid => "newgidmap",
        }
    }

    /// "subuid" or "subgid".
    pub fn sub_name(self) -> &'static str {
        match self {
            Kind::Uid => "subuid",
            Kind::Gid => "subgid",
        }
    }

    /// /etc/subuid or /etc/subgid.
    pub fn sub_file(self) -> &'static Path {
        Path::new(match self {
            Kind::Uid => subid::SUBUID_FILE,
            Kind::Gid => subid::SUBGID_FILE,
        })
    }

    /// The caller's effective id of this kind.
    pub fn own_id(self) -> u32 {
        match self {
            Kind::Uid => nix::unistd::Uid::effective().as_raw(),
            Kind::Gid => nix::unistd::Gid::effective().as_raw(),
        }
    }

    /// The caller's subordinate ranges of this kind.
    pub fn own_ranges(self) -> Result<Vec<Range>, Error> {
        let uid = nix::unistd::Uid::effective().as_raw();
        subid::ranges(self.sub_file(), &crate::user_name(uid), uid)
    }
}

/// How the maps of a new user namespace get written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Written to /proc/PID/{uid,gid}_map by this process.
    Direct,
    /// Through newuidmap / newgidmap.
    Helper,
}

fn how(kind: Kind, maps: &[IdMap]) -> How {
    if nix::unistd::Uid::effective().is_root() {
        return How::Direct;
    }
    match maps {
        [m] if m.size == 1 && m.host == kind.own_id() => How::Direct,
        _ => How::Helper,
    }
}

/// Writes the uid and gid maps of the user namespace process `pid` has
/// just created, directly or through newuidmap/newgidmap (see the module
/// docs). Empty maps are left unwritten.
pub fn write(pid: i32, uid_maps: &[IdMap], gid_maps: &[IdMap]) -> Result<(), Error> {
    for (kind, maps) in [(Kind::Uid, uid_maps), (Kind::Gid, gid_maps)] {
        if maps.is_empty() {
            continue;
        }
        match how(kind, maps) {
            How::Direct => write_direct(pid, kind, maps)?,
            How::Helper => {
                check_delegated(kind, maps)?;
                run_helper(pid, kind, maps)?;
            }
        }
    }
    Ok(())
}

fn write_direct(pid: i32, kind: Kind, maps: &[IdMap]) -> Result<(), Error> {
    if kind == Kind::Gid && !nix::unistd::Uid::effective().is_root() {
        // An unprivileged gid map needs setgroups denied first.
        let path = format!("/proc/{pid}/setgroups");
        std::fs::write(&path, "deny").map_err(|e| Error::Io {
            what: format!("cannot write \"deny\" to {path}"),
            source: e,
        })?;
    }
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect();
    let path = format!("/proc/{pid}/{}", kind.proc_file());
    std::fs::write(&path, text.as_bytes()).map_err(|e| Error::Io {
        what: format!("cannot write {:?} to {path}", text.trim()),
        source: e,
    })
}

/// Every map must lie in the caller's own id or in one of its ranges.
fn check_delegated(kind: Kind, maps: &[IdMap]) -> Result<(), Error> {
    let own = kind.own_id();
    let ranges = kind.own_ranges()?;
    let user = crate::user_name(nix::unistd::Uid::effective().as_raw());
    for m in maps {
        let mine = m.size == 1 && m.host == own;
        if mine || subid::covered(&ranges, m.host, m.size) {
            continue;
        }
        if ranges.is_empty() {
            return Err(Error::NoRange {
                kind: kind.sub_name(),
                user,
                file: kind.sub_file().to_path_buf(),
            });
        }
        return Err(Error::NotDelegated {
            kind: kind.sub_name(),
            container: m.container,
            host: m.host,
            size: m.size,
            own,
            user,
            file: kind.sub_file().to_path_buf(),
            ranges: ranges
                .iter()
                .map(|r| {
                    format!(
                        "{}-{}",
                        r.start,
                        u64::from(r.start) + u64::from(r.count) - 1
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(())
}

/// newuidmap or newgidmap: /usr/bin first (where Debian installs them
/// setuid), then $PATH.
fn find_tool(kind: Kind) -> Result<PathBuf, Error> {
    let fixed = Path::new("/usr/bin").join(kind.tool());
    if fixed.is_file() {
        return Ok(fixed);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(kind.tool()))
        .find(|p| p.is_file())
        .ok_or(Error::NoTool { tool: kind.tool() })
}

fn run_helper(pid: i32, kind: Kind, maps: &[IdMap]) -> Result<(), Error> {
    let tool = find_tool(kind)?;
    let mut args = vec![pid.to_string()];
    for m in maps {
        args.extend([m.container, m.host, m.size].map(|n| n.to_string()));
    }
    let failed = |stderr: String| Error::ToolFailed {
        tool: kind.tool(),
        args: args.join(" "),
        stderr,
    };
    let out = Command::new(&tool)
        .args(&args)
        .output()
        .map_err(|e| failed(format!("cannot run {}: {e}", tool.display())))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(failed(if text.is_empty() {
            out.status.to_string()
        } else {
            text
        }));
    }
    Ok(())
}

/// The maps giving container root the caller's own id and container ids
/// 1.. the caller's subordinate ranges in file order (podman's default for
/// rootless containers); a clear error when the user has no range.
pub fn default_maps(kind: Kind) -> Result<Vec<IdMap>, Error> {
    let ranges = kind.own_ranges()?;
    if ranges.is_empty() {
        return Err(Error::NoRange {
            kind: kind.sub_name(),
            user: crate::user_name(nix::unistd::Uid::effective().as_raw()),
            file: kind.sub_file().to_path_buf(),
        });
    }
    Ok(maps_for(kind.own_id(), &ranges))
}

/// Root as `own`, container ids 1.. as `ranges` in order; an id given
/// twice (the user's own within a range) is mapped once: the kernel
/// refuses a map naming a host id twice.
fn maps_for(own: u32, ranges: &[Range]) -> Vec<IdMap> {
    let mut ids = vec![Range {
        start: own,
        count: 1,
    }];
    for r in ranges {
        subid::add_new_ids(&mut ids, *r);
    }
    let mut maps = vec![IdMap {
        container: 0,
        host: own,
        size: 1,
    }];
    let mut next: u64 = 1;
    for r in &ids[1..] {
        // Container ids stop at 4294967294 (4294967295 is "no id").
        let room = u64::from(u32::MAX) - next;
        let size = u64::from(r.count).min(room);
        if size == 0 {
            break;
        }
        maps.push(IdMap {
            container: next as u32,
            host: r.start,
            size: size as u32,
        });
        next += size;
    }
    maps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_own_id_in_its_range_is_mapped_once() {
        let r = |start, count| Range { start, count };
        let m = |container, host, size| IdMap {
            container,
            host,
            size,
        };
        assert_eq!(
            maps_for(1000, &[r(100000, 65536)]),
            [m(0, 1000, 1), m(1, 100000, 65536)]
        );
        assert_eq!(
            maps_for(1000, &[r(0, 65536)]),
            [m(0, 1000, 1), m(1, 0, 1000), m(1001, 1001, 64535)]
        );
    }
}
