//! Finding the cgroup hierarchies (from /proc/self/mountinfo) and our own
//! cgroup in each (from /proc/self/cgroup), and turning an OCI cgroupsPath
//! into one directory per hierarchy.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use crate::Error;

/// Which cgroup layout the machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// Only cgroup v1 hierarchies are mounted.
    V1,
    /// Only the cgroup2 unified hierarchy is mounted.
    V2,
    /// v1 controller hierarchies plus a cgroup2 mount (usually
    /// /sys/fs/cgroup/unified) holding the controllers v1 does not.
    Hybrid,
}

/// One mounted v1 hierarchy (possibly several co-mounted controllers).
#[derive(Debug, Clone)]
pub(crate) struct V1Mount {
    /// Controllers (and `name=...` for named hierarchies) in this hierarchy.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The cgroup at the root of the mount (field 4 of mountinfo).
    pub root: String,
}

/// The cgroup2 mount.
#[derive(Debug, Clone)]
pub(crate) struct V2Mount {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The cgroup at the root of the mount.
    pub root: String,
}

/// Every cgroup hierarchy mounted on this machine.
#[derive(Debug, Clone)]
pub(crate) struct Mounts {
    pub v1: Vec<V1Mount>,
    pub v2: Option<V2Mount>,
}

/// v1 controllers berth knows and joins (plus the `name=systemd` hierarchy).
const V1_KNOWN: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "name=systemd",
];

impl Mounts {
    /// The hierarchies mounted in this process's mount namespace, read from
    /// /proc/self/mountinfo once per process: a runtime command looks them
    /// up several times (create, the init's binds, delete) and does not
    /// mount cgroup hierarchies itself.
    pub fn detect() -> Result<Mounts, Error> {
        static DETECTED: OnceLock<Mounts> = OnceLock::new();
        if let Some(m) = DETECTED.get() {
            return Ok(m.clone());
        }
        let mounts = Self::read()?;
        Ok(DETECTED.get_or_init(|| mounts).clone())
    }

    /// Reads /proc/self/mountinfo.
    fn read() -> Result<Mounts, Error> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|err| Error::Read {
            path: path.into(),
            err,
        })?;
        let mounts = Self::parse(&text);
        if mounts.v1.is_empty() && mounts.v2.is_none() {
            return Err(Error::NoCgroupFs);
        }
        Ok(mounts)
    }

    /// Parses mountinfo text; the first mount of each hierarchy wins.
    pub fn parse(text: &str) -> Mounts {
        let mut v1: Vec<V1Mount> = Vec::new();
        let mut v2 = None;
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let root = berth_core::mountinfo::unescape(pre[3])
                .to_string_lossy()
                .into_owned();
            let mountpoint = berth_core::mountinfo::unescape(pre[4]);
            match post[0] {
                "cgroup2" if v2.is_none() => v2 = Some(V2Mount { mountpoint, root }),
                "cgroup" => {
                    let controllers: Vec<String> = post[2]
                        .split(',')
                        .filter(|o| V1_KNOWN.contains(o))
                        .map(str::to_string)
                        .collect();
                    if controllers.is_empty()
                        || v1
                            .iter()
                            .any(|m| m.controllers.iter().any(|c| controllers.contains(c)))
                    {
                        continue;
                    }
                    v1.push(V1Mount {
                        controllers,
                        mountpoint,
                        root,
                    });
                }
                _ => {}
            }
        }
        Mounts { v1, v2 }
    }

    /// The layout: v1, v2 or hybrid.
    pub fn hierarchy(&self) -> Hierarchy {
        match (self.v1.is_empty(), self.v2.is_some()) {
            (true, _) => Hierarchy::V2,
            (false, true) => Hierarchy::Hybrid,
            (false, false) => Hierarchy::V1,
        }
    }
}

/// Our own cgroup per hierarchy, from /proc/self/cgroup: v1 entries keyed by
/// each controller name, the v2 entry keyed by "".
pub(crate) fn own_cgroups() -> Result<BTreeMap<String, String>, Error> {
    let path = Path::new("/proc/self/cgroup");
    let text = fs::read_to_string(path).map_err(|err| Error::Read {
        path: path.into(),
        err,
    })?;
    Ok(parse_proc_cgroup(&text))
}

/// Parses /proc/PID/cgroup text.
pub(crate) fn parse_proc_cgroup(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if ctrls.is_empty() {
            out.insert(String::new(), path.to_string());
        } else {
            for c in ctrls.split(',') {
                out.insert(c.to_string(), path.to_string());
            }
        }
    }
    out
}

/// The cgroupsPath after runc's rules, before it is placed in a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inner {
    /// Relative to each hierarchy's root.
    Absolute(PathBuf),
    /// Relative to the caller's own cgroup.
    Relative(PathBuf),
}

/// Applies runc's cgroupfs-driver rules to a cgroupsPath: a
/// "slice:prefix:name" path is refused; an empty path means the container id
/// relative to our own cgroup; `..` cannot climb above the root.
pub(crate) fn inner_path(cgroups_path: &str, container_id: &str) -> Result<Inner, Error> {
    if !cgroups_path.contains('/') && cgroups_path.matches(':').count() == 2 {
        let last = cgroups_path.rsplit(':').next().unwrap_or_default();
        return Err(Error::SystemdPath {
            path: cgroups_path.to_string(),
            last: if last.is_empty() {
                container_id.to_string()
            } else {
                last.to_string()
            },
        });
    }
    let (raw, absolute) = if cgroups_path.is_empty() {
        if container_id.is_empty() || container_id.contains('/') {
            return Err(Error::InvalidPath {
                path: cgroups_path.to_string(),
                reason: format!(
                    "cgroupsPath is empty and the container id {container_id:?} cannot name a cgroup: give a cgroupsPath"
                ),
            });
        }
        (container_id, false)
    } else {
        (cgroups_path, cgroups_path.starts_with('/'))
    };
    // Clean like runc's CleanPath: resolve `.`/`..` lexically, never above the root.
    let mut clean = PathBuf::new();
    for comp in Path::new(raw).components() {
        match comp {
            Component::Normal(c) => clean.push(c),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(Error::InvalidPath {
            path: cgroups_path.to_string(),
            reason:
                "it names the root cgroup, which a container cannot own: use e.g. \"/berth/<id>\""
                    .into(),
        });
    }
    Ok(if absolute {
        Inner::Absolute(clean)
    } else {
        Inner::Relative(clean)
    })
}

/// Joins `own` (a cgroup path in the namespace) onto a mount whose root is `root`.
fn under_mount(mountpoint: &Path, root: &str, own: &str) -> PathBuf {
    let rel = Path::new(own)
        .strip_prefix(root)
        .unwrap_or_else(|_| Path::new(own));
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    mountpoint.join(rel)
}

/// The directory for `inner` in a v1 hierarchy.
pub(crate) fn v1_dir(m: &V1Mount, inner: &Inner, own: &BTreeMap<String, String>) -> PathBuf {
    match inner {
        Inner::Absolute(p) => m.mountpoint.join(p),
        Inner::Relative(p) => {
            let own = m
                .controllers
                .iter()
                .find_map(|c| own.get(c))
                .map(String::as_str)
                .unwrap_or("/");
            under_mount(&m.mountpoint, &m.root, own).join(p)
        }
    }
}

/// The directory for `inner` in the cgroup2 hierarchy. Like runc, a relative
/// path is placed beside our own cgroup (under its parent), since a cgroup
/// holding processes cannot delegate controllers to children.
pub(crate) fn v2_dir(m: &V2Mount, inner: &Inner, own: &BTreeMap<String, String>) -> PathBuf {
    match inner {
        Inner::Absolute(p) => m.mountpoint.join(p),
        Inner::Relative(p) => {
            let own = own.get("").map(String::as_str).unwrap_or("/");
            let parent = Path::new(own)
                .parent()
                .and_then(Path::to_str)
                .unwrap_or("/");
            under_mount(&m.mountpoint, &m.root, parent).join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 31 0:32 / /mnt/again\\040x rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn parses_hybrid_mountinfo() {
        let m = Mounts::parse(HYBRID);
        assert_eq!(m.hierarchy(), Hierarchy::Hybrid);
        assert_eq!(m.v1.len(), 3, "second memory mount ignored: {m:?}");
        assert_eq!(m.v1[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m.v1[0].mountpoint, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1[2].controllers, ["name=systemd"]);
        assert_eq!(
            m.v2.as_ref().map(|v| v.mountpoint.clone()),
            Some("/sys/fs/cgroup/unified".into())
        );
    }

    #[test]
    fn parses_pure_v2_and_escapes() {
        let m = Mounts::parse("1 2 0:3 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n");
        assert_eq!(m.hierarchy(), Hierarchy::V2);
        assert_eq!(
            m.v2.map(|v| v.mountpoint),
            Some(PathBuf::from("/sys/fs/cgroup x"))
        );
    }

    #[test]
    fn cgroups_path_rules() {
        assert_eq!(
            inner_path("/default/abc", "abc").unwrap(),
            Inner::Absolute("default/abc".into())
        );
        assert_eq!(
            inner_path("", "abc").unwrap(),
            Inner::Relative("abc".into())
        );
        assert_eq!(
            inner_path("a/../../b", "x").unwrap(),
            Inner::Relative("b".into())
        );
        assert_eq!(
            inner_path("/../../etc", "x").unwrap(),
            Inner::Absolute("etc".into())
        );
        let e = inner_path("system.slice:docker:abc", "abc").unwrap_err();
        assert!(e.to_string().contains("systemd"), "{e}");
        assert!(e.to_string().contains("cgroupfs"), "{e}");
        let e = inner_path("/", "abc").unwrap_err();
        assert!(e.to_string().contains("root cgroup"), "{e}");
    }

    #[test]
    fn relative_paths_follow_own_cgroup() {
        let own = parse_proc_cgroup("4:memory:/outer/me\n1:cpu,cpuacct:/\n0::/user/me\n");
        let m = Mounts::parse(HYBRID);
        let inner = Inner::Relative("ctr".into());
        assert_eq!(
            v1_dir(&m.v1[1], &inner, &own),
            Path::new("/sys/fs/cgroup/memory/outer/me/ctr")
        );
        assert_eq!(
            v1_dir(&m.v1[0], &inner, &own),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/ctr")
        );
        let v2 = m.v2.as_ref().unwrap();
        assert_eq!(
            v2_dir(v2, &inner, &own),
            Path::new("/sys/fs/cgroup/unified/user/ctr")
        );
    }
}
