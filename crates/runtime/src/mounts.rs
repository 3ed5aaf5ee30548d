//! The container's root filesystem: mounts in config order, devices, /dev
//! symlinks, pivot_root, masked and read-only paths.
//!
//! Before pivot_root every mount target and device node is resolved inside
//! the rootfs with `openat2(RESOLVE_IN_ROOT)`, created component by
//! component where missing, and the mount is made onto `/proc/self/fd/N` of
//! the resolved descriptor: a symlink in the rootfs can never send a mount
//! to the host (CVE-2021-30465 class).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use crate::sys::fd_path;

/// A failed rootfs step, as text for the parent.
pub(crate) type MResult<T> = Result<T, String>;

fn e(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> String {
    move |err| format!("{what}: {err}")
}

/// The propagation flag of a name (`shared`, `rslave`, ...).
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Options that set a flag and their opposites that clear it, as
/// (setting name, clearing name, flag).
const TOGGLES: &[(&str, &str, MsFlags)] = &[
    ("ro", "rw", MsFlags::MS_RDONLY),
    ("nosuid", "suid", MsFlags::MS_NOSUID),
    ("nodev", "dev", MsFlags::MS_NODEV),
    ("noexec", "exec", MsFlags::MS_NOEXEC),
    ("sync", "async", MsFlags::MS_SYNCHRONOUS),
    ("mand", "nomand", MsFlags::MS_MANDLOCK),
    ("noatime", "atime", MsFlags::MS_NOATIME),
    ("nodiratime", "diratime", MsFlags::MS_NODIRATIME),
    ("relatime", "norelatime", MsFlags::MS_RELATIME),
    ("strictatime", "nostrictatime", MsFlags::MS_STRICTATIME),
    ("lazytime", "nolazytime", MsFlags::MS_LAZYTIME),
    ("silent", "loud", MsFlags::MS_SILENT),
];

/// The (set, clear) flags of a [`TOGGLES`] option name.
fn toggle_flag(name: &str) -> Option<(MsFlags, MsFlags)> {
    TOGGLES.iter().find_map(|&(set, clear, flag)| {
        if name == set {
            Some((flag, MsFlags::empty()))
        } else if name == clear {
            Some((MsFlags::empty(), flag))
        } else {
            None
        }
    })
}

/// Changes the propagation of the mount at `target` to `flags` (one of
/// MS_SHARED, MS_SLAVE, MS_PRIVATE, MS_UNBINDABLE, maybe with MS_REC).
fn set_propagation(target: &str, flags: MsFlags) -> nix::Result<()> {
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
}

/// Remounts the bind mount open as `target` with `flags`, keeping the flags
/// the kernel locks (a user namespace cannot clear them).
fn remount_bind(target: &OwnedFd, flags: MsFlags) -> nix::Result<()> {
    let flags = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | locked_flags(target);
    mount(
        None::<&str>,
        fd_path(target.as_fd()).as_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
}

/// Mount options split into flags to set, propagation changes and the
/// filesystem-specific data string.
#[derive(Debug, PartialEq)]
pub(crate) struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
}

/// Splits a mount's options the way mount(8) does.
pub(crate) fn parse_options(opts: &[String]) -> MResult<MountOptions> {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
    };
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::empty(), MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            // runc's tmpfs copy-up of the image's directory contents; the
            // empty tmpfs is what this runtime gives.
            "tmpcopyup" => (MsFlags::empty(), MsFlags::empty()),
            "idmap" | "ridmap" | "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev"
            | "rnoexec" | "rexec" | "rnoatime" | "ratime" | "rrelatime" | "rstrictatime" => {
                return Err(format!(
                    "mount option {opt:?} (mount_setattr) is not supported by berth-runtime; use the non-recursive form"
                ))
            }
            other => match toggle_flag(other) {
                Some(toggle) => toggle,
                None => {
                    if let Some(p) = propagation_flag(other) {
                        o.propagation.push(p);
                    } else {
                        o.data.push(other.to_string());
                    }
                    continue;
                }
            },
        };
        o.flags.insert(set);
        o.flags.remove(clear);
    }
    Ok(o)
}

fn rel(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

fn open_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` (absolute inside the container) as an O_PATH fd, resolved
/// with `root` as "/" so symlinks and ".." cannot leave the rootfs.
pub(crate) fn open_in_root(root: &OwnedFd, path: &Path) -> nix::Result<OwnedFd> {
    let r = rel(path);
    let r = if r.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        r
    };
    openat2(root.as_fd(), &r, open_how(OFlag::O_PATH))
}

/// Like [`open_in_root`], but creates what is missing: directories for all
/// components, and the last one as a directory or (if `file`) an empty file.
/// A component that is a symlink to a missing path has its target created
/// instead, resolved inside the root as the kernel would (runc does the
/// same), so a destination like `/run -> /var/run` in an image works.
pub(crate) fn create_in_root(root: &OwnedFd, path: &Path, file: bool) -> MResult<OwnedFd> {
    create_following(root, path, file, 0)
}

/// The kernel's limit on symlinks followed in one lookup (MAXSYMLINKS).
const MAX_SYMLINKS: u32 = 40;

fn create_following(root: &OwnedFd, path: &Path, file: bool, links: u32) -> MResult<OwnedFd> {
    let r = rel(path);
    match open_in_root(root, &r) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(err) => {
            return Err(format!(
                "cannot resolve {} in the rootfs: {err}",
                path.display()
            ))
        }
    }
    let comps: Vec<&OsStr> = r.iter().collect();
    let mut done = PathBuf::new();
    for (i, name) in comps.iter().enumerate() {
        let next = done.join(name);
        match open_in_root(root, &next) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                let parent = open_in_root(root, &done)
                    .map_err(e(format!("cannot open {} in the rootfs", done.display())))?;
                if let Ok(target) = nix::fcntl::readlinkat(parent.as_fd(), *name) {
                    // A dangling symlink: create its target, then the rest
                    // beneath it. An absolute target starts at the root.
                    if links >= MAX_SYMLINKS {
                        return Err(format!(
                            "cannot create {} in the rootfs: too many levels of symbolic links",
                            path.display()
                        ));
                    }
                    let mut via = done.join(&target);
                    via.extend(&comps[i + 1..]);
                    return create_following(root, &via, file, links + 1);
                }
                let last = i + 1 == comps.len();
                let made = if last && file {
                    nix::fcntl::openat(
                        parent.as_fd(),
                        *name,
                        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map(drop)
                } else {
                    nix::sys::stat::mkdirat(parent.as_fd(), *name, Mode::from_bits_truncate(0o755))
                };
                match made {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(err) => {
                        return Err(format!(
                            "cannot create {} in the rootfs: {err}",
                            next.display()
                        ))
                    }
                }
            }
            Err(err) => {
                return Err(format!(
                    "cannot resolve {} in the rootfs: {err}",
                    next.display()
                ))
            }
        }
        done = next;
    }
    open_in_root(root, &r).map_err(e(format!("cannot open {} in the rootfs", path.display())))
}

/// Mount flags the kernel locks on an existing mount (they must be kept by
/// a bind remount, or the remount fails inside a user namespace).
fn locked_flags(fd: &OwnedFd) -> MsFlags {
    let mut f = MsFlags::empty();
    if let Ok(st) = fstatvfs(fd) {
        let fl = st.flags();
        for (s, m) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(s) {
                f |= m;
            }
        }
    }
    f
}

/// Everything the init needs to build the rootfs.
pub(crate) struct RootfsPlan<'a> {
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub mounts: &'a [Mount],
    pub devices: &'a [LinuxDevice],
    pub userns: bool,
    /// (host directory of the container's cgroup, name under /sys/fs/cgroup)
    pub cgroup_binds: &'a [(PathBuf, String)],
    /// linux.mountLabel: the SELinux context of new filesystems.
    pub mount_label: Option<&'a str>,
}

/// Phase 1 of the rootfs (before createContainer hooks and pivot_root):
/// makes the host's mounts slaves, binds the rootfs onto itself, then
/// [`make_mounts`].
pub(crate) fn prepare_rootfs(plan: &RootfsPlan<'_>) -> MResult<()> {
    set_propagation("/", MsFlags::MS_SLAVE | MsFlags::MS_REC)
        .map_err(e("cannot make / a recursive slave"))?;
    mount(
        Some(plan.rootfs),
        plan.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(e(format!(
        "cannot bind the rootfs {} onto itself",
        plan.rootfs.display()
    )))?;
    make_mounts(plan)
}

/// Makes every mount of the spec in order under the rootfs and populates
/// /dev (unless the spec binds it). Alone (see `host_mounts.rs`): in the
/// runtime's own mount namespace, for a container without one, where the
/// propagation of the runtime's mounts is left as it is.
pub(crate) fn make_mounts(plan: &RootfsPlan<'_>) -> MResult<()> {
    let root = nix::fcntl::open(
        plan.rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(e(format!(
        "cannot open the rootfs {}",
        plan.rootfs.display()
    )))?;
    for m in plan.mounts {
        mount_one(&root, m, plan)
            .map_err(|err| format!("mount {}: {err}", m.destination().display()))?;
    }
    let dev_is_bound = plan.mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    });
    if !dev_is_bound {
        create_default_devices(&root, plan.userns)?;
    }
    for d in plan.devices {
        create_device(&root, d, plan.userns)?;
    }
    Ok(())
}

fn mount_one(root: &OwnedFd, m: &Mount, plan: &RootfsPlan<'_>) -> MResult<()> {
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let dest = m.destination();
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(root, dest, &opts, plan.cgroup_binds);
    }
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    let target = if is_bind {
        let src = m.source().clone().ok_or("a bind mount needs a source")?;
        let src = if src.is_absolute() {
            src
        } else {
            plan.bundle.join(src)
        };
        let meta = std::fs::metadata(&src)
            .map_err(|err| format!("bind source {}: {err}", src.display()))?;
        let target = create_in_root(root, dest, !meta.is_dir())?;
        mount(
            Some(&src),
            fd_path(target.as_fd()).as_str(),
            None::<&str>,
            opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(e(format!("cannot bind {}", src.display())))?;
        let target = open_in_root(root, dest).map_err(e("cannot reopen the mount"))?;
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount_bind(&target, extra).map_err(e("cannot remount the bind with its options"))?;
        }
        target
    } else {
        let target = create_in_root(root, dest, false)?;
        let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let mut data = opts.data.clone();
        // runc's choice: proc, sysfs and mqueue keep the kernel's labels.
        if let Some(label) = plan.mount_label {
            if !matches!(typ, "proc" | "sysfs" | "mqueue") {
                data.push(crate::lsm::mount_context(label));
            }
        }
        let data = data.join(",");
        let data = if data.is_empty() {
            None
        } else {
            Some(data.as_str())
        };
        let res = mount(
            Some(&source),
            fd_path(target.as_fd()).as_str(),
            Some(typ),
            opts.flags,
            data,
        );
        match res {
            Ok(()) => {}
            Err(Errno::EPERM) if typ == "sysfs" => {
                // sysfs of the host's network namespace cannot be mounted from
                // a user namespace: bind the host's /sys instead (as runc).
                mount(
                    Some("/sys"),
                    fd_path(target.as_fd()).as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(e("cannot bind /sys"))?;
                let t = open_in_root(root, dest).map_err(e("cannot reopen the mount"))?;
                remount_bind(&t, opts.flags).map_err(e("cannot remount /sys"))?;
            }
            Err(err) => return Err(format!("cannot mount {typ} ({}): {err}", source.display())),
        }
        open_in_root(root, dest).map_err(e("cannot reopen the mount"))?
    };
    for p in &opts.propagation {
        set_propagation(fd_path(target.as_fd()).as_str(), *p)
            .map_err(e("cannot set mount propagation"))?;
    }
    Ok(())
}

/// /sys/fs/cgroup inside the container: the container's own cgroup of every
/// hierarchy bound in (a tmpfs with one directory per hierarchy on v1 and
/// hybrid hosts, the one cgroup2 directory on v2 hosts).
fn mount_cgroup(
    root: &OwnedFd,
    dest: &Path,
    opts: &MountOptions,
    binds: &[(PathBuf, String)],
) -> MResult<()> {
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let per_mount = opts.flags
        & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY);
    let bind = |src: &Path, target: &OwnedFd, what: &Path| -> MResult<()> {
        mount(
            Some(src),
            fd_path(target.as_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(e(format!("cannot bind cgroup {}", src.display())))?;
        let t = open_in_root(root, what).map_err(e("cannot reopen the cgroup mount"))?;
        let flags = per_mount | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | locked_flags(&t);
        mount(
            None::<&str>,
            fd_path(t.as_fd()).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(e(format!("cannot remount cgroup {}", src.display())))
    };
    if let [(src, name)] = binds {
        if name.is_empty() {
            let target = create_in_root(root, dest, false)?;
            return bind(src, &target, dest);
        }
    }
    let target = create_in_root(root, dest, false)?;
    let tflags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        fd_path(target.as_fd()).as_str(),
        Some("tmpfs"),
        tflags,
        Some("mode=755"),
    )
    .map_err(e("cannot mount the tmpfs for cgroups"))?;
    for (src, name) in binds {
        if name.is_empty() {
            continue;
        }
        let sub = dest.join(name);
        let t = create_in_root(root, &sub, false)?;
        bind(src, &t, &sub)?;
        if name.contains(',') {
            let dir = open_in_root(root, dest).map_err(e("cannot reopen the cgroup tmpfs"))?;
            for part in name.split(',') {
                let _ = nix::unistd::symlinkat(name.as_str(), dir.as_fd(), part);
            }
        }
    }
    if ro {
        let t = open_in_root(root, dest).map_err(e("cannot reopen the cgroup tmpfs"))?;
        mount(
            None::<&str>,
            fd_path(t.as_fd()).as_str(),
            None::<&str>,
            tflags | MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT,
            Some("mode=755"),
        )
        .map_err(e("cannot remount the cgroup tmpfs read-only"))?;
    }
    Ok(())
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn create_default_devices(root: &OwnedFd, userns: bool) -> MResult<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        make_node(
            root,
            Path::new(path),
            SFlag::S_IFCHR,
            *major,
            *minor,
            0o666,
            0,
            0,
            userns,
        )?;
    }
    let dev = create_in_root(root, Path::new("/dev"), false)?;
    let devraw = dev.as_fd();
    let _ = nix::unistd::unlinkat(devraw, "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match nix::unistd::symlinkat(target, devraw, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(err) => return Err(format!("cannot create the /dev/{name} symlink: {err}")),
        }
    }
    if Path::new("/proc/kcore").exists() {
        let _ = nix::unistd::symlinkat("/proc/kcore", devraw, "core");
    }
    Ok(())
}

fn create_device(root: &OwnedFd, d: &LinuxDevice, userns: bool) -> MResult<()> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(format!(
                "device {}: type \"a\" is only valid in cgroup rules",
                d.path().display()
            ))
        }
    };
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    make_node(
        root,
        d.path(),
        kind,
        d.major() as u64,
        d.minor() as u64,
        mode,
        d.uid().unwrap_or(0),
        d.gid().unwrap_or(0),
        userns,
    )
}

#[allow(clippy::too_many_arguments)]
fn make_node(
    root: &OwnedFd,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    userns: bool,
) -> MResult<()> {
    let parent_path = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| format!("device path {} has no file name", path.display()))?;
    let parent = create_in_root(root, parent_path, false)?;
    let praw = parent.as_fd();
    let _ = nix::unistd::unlinkat(praw, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    if userns {
        // mknod is not allowed in a user namespace: bind the host's node.
        let target = create_in_root(root, path, true)?;
        return mount(
            Some(path),
            fd_path(target.as_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(e(format!("cannot bind device {}", path.display())));
    }
    let perm = Mode::from_bits_truncate(mode);
    mknodat(praw, name, kind, perm, makedev(major, minor))
        .map_err(e(format!("cannot create device {}", path.display())))?;
    fchmodat(praw, name, perm, FchmodatFlags::FollowSymlink)
        .map_err(e(format!("cannot chmod device {}", path.display())))?;
    nix::unistd::fchownat(
        praw,
        name,
        Some(uid.into()),
        Some(gid.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(e(format!("cannot chown device {}", path.display())))
}

/// Makes the rootfs "/" of the calling process: pivot_root (or MS_MOVE and
/// chroot with `no_pivot`), detaching the old root.
pub(crate) fn enter_rootfs(rootfs: &Path, no_pivot: bool) -> MResult<()> {
    nix::unistd::chdir(rootfs).map_err(e(format!("cannot chdir to {}", rootfs.display())))?;
    if no_pivot {
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(e("cannot move the rootfs onto /"))?;
        nix::unistd::chroot(".").map_err(e("cannot chroot into the rootfs"))?;
    } else {
        let old = nix::fcntl::open(
            "/",
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(e("cannot open the old root"))?;
        nix::unistd::pivot_root(".", ".").map_err(e("pivot_root"))?;
        nix::unistd::fchdir(old.as_fd()).map_err(e("cannot fchdir to the old root"))?;
        set_propagation(".", MsFlags::MS_SLAVE | MsFlags::MS_REC)
            .map_err(e("cannot make the old root a slave"))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(e("cannot detach the old root"))?;
    }
    nix::unistd::chdir("/").map_err(e("cannot chdir to /"))
}

/// Makes `rootfs` the root of this process alone, for a container without
/// a mount namespace of its own (pivot_root would move the runtime's own
/// namespace's root): chroot, as runc does then.
pub(crate) fn chroot_into(rootfs: &Path) -> MResult<()> {
    nix::unistd::chdir(rootfs).map_err(e(format!("cannot chdir to {}", rootfs.display())))?;
    nix::unistd::chroot(".").map_err(e("cannot chroot into the rootfs"))?;
    nix::unistd::chdir("/").map_err(e("cannot chdir to /"))
}

/// Hides `path` (after pivot_root): an empty read-only tmpfs over a
/// directory, /dev/null over anything else. Missing paths are skipped.
pub(crate) fn mask_path(path: &str) -> MResult<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    let res = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.map_err(e(format!("cannot mask {path}")))
}

/// Makes `path` read-only (after pivot_root); missing paths are skipped.
pub(crate) fn readonly_path(path: &str) -> MResult<()> {
    match mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(err) => return Err(format!("cannot bind {path} read-only: {err}")),
    }
    remount_ro(path)
}

/// Remounts the mount at `path` read-only, keeping its locked flags.
pub(crate) fn remount_ro(path: &str) -> MResult<()> {
    let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(e(format!("cannot open {path}")))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(&fd);
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(e(format!("cannot remount {path} read-only")))
}

/// Sets the propagation of the container's "/" (linux.rootfsPropagation).
pub(crate) fn set_root_propagation(name: &str) -> MResult<()> {
    let flag =
        propagation_flag(name).ok_or_else(|| format!("unknown rootfsPropagation {name:?}"))?;
    set_propagation("/", flag).map_err(e(format!("cannot make / {name}")))
}

/// Writes `value` to the sysctl `key` (dots or slashes) under /proc/sys.
pub(crate) fn write_sysctl(key: &str, value: &str) -> MResult<()> {
    if key.contains("..") || key.starts_with('/') {
        return Err(format!("sysctl {key:?}: not a valid key"));
    }
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value.as_bytes()).map_err(|err| {
        format!(
            "sysctl {key}={value}: cannot write {}: {err}",
            path.display()
        )
    })
}

/// Host cgroup directories (with their name under /sys/fs/cgroup) for the
/// container's cgroup `paths`.
pub(crate) fn cgroup_binds(paths: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mps = berth_cgroups::mountpoints().unwrap_or_default();
    let mut out = Vec::new();
    for p in paths {
        if let Some(mp) = mps
            .iter()
            .filter(|mp| p.starts_with(mp))
            .max_by_key(|mp| mp.as_os_str().len())
        {
            let name = if mp == Path::new("/sys/fs/cgroup") {
                String::new()
            } else {
                mp.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            out.push((p.clone(), name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&[
            "nosuid".into(),
            "ro".into(),
            "rslave".into(),
            "size=64k".into(),
            "mode=755".into(),
        ])
        .unwrap();
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, vec!["size=64k".to_string(), "mode=755".to_string()]);
        let o = parse_options(&["ro".into(), "rw".into(), "rbind".into()]).unwrap();
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
    }

    #[test]
    fn toggles_set_and_clear_their_flag() {
        for &(set, clear, flag) in TOGGLES {
            let o = parse_options(&[set.into()]).unwrap();
            assert_eq!(o.flags, flag, "{set}");
            let o = parse_options(&[set.into(), clear.into()]).unwrap();
            assert_eq!(o.flags, MsFlags::empty(), "{set},{clear}");
            assert!(o.data.is_empty(), "{clear} went to the data string");
        }
    }

    #[test]
    fn every_advertised_option_is_recognised() {
        for name in crate::features::MOUNT_OPTIONS {
            let o = parse_options(&[name.to_string()]).unwrap();
            assert!(o.data.is_empty(), "{name} went to the data string");
        }
    }

    #[test]
    fn unsupported_recursive_options_are_named() {
        let err = parse_options(&["rro".into()]).unwrap_err();
        assert!(err.contains("\"rro\""), "{err}");
    }

    #[test]
    fn relative_paths_drop_root_and_dots() {
        assert_eq!(rel(Path::new("/a/./b/../c")), PathBuf::from("a/b/../c"));
    }

    #[test]
    fn create_in_root_stays_inside_on_escaping_symlinks() {
        let root_dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("escape")).unwrap();
        let root = nix::fcntl::open(
            root_dir.path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        // The symlink dangles inside the root: refusing is safe, and
        // creating must happen inside.
        let res = create_in_root(&root, Path::new("/escape/sub/file"), true);
        assert!(
            !outside.path().join("sub").exists(),
            "a directory was created outside the root"
        );
        if res.is_ok() {
            let inside = root_dir
                .path()
                .join(outside.path().strip_prefix("/").unwrap())
                .join("sub/file");
            assert!(inside.is_file(), "{} missing", inside.display());
        }
        // Through a symlink that resolves inside the root, creation works.
        std::fs::create_dir(root_dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/real", root_dir.path().join("link")).unwrap();
        create_in_root(&root, Path::new("/link/a/b"), false).unwrap();
        assert!(root_dir.path().join("real/a/b").is_dir());
    }

    /// A destination through a symlink to a missing path gets the link's
    /// target created inside the root (was a bare ENOENT).
    #[test]
    fn create_in_root_creates_the_target_of_a_dangling_symlink() {
        let root_dir = tempfile::tempdir().unwrap();
        let r = root_dir.path();
        std::os::unix::fs::symlink("/var/run", r.join("run")).unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        std::os::unix::fs::symlink("../missing/dir", r.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("/../../../../chain", r.join("up")).unwrap();
        std::os::unix::fs::symlink("/up", r.join("chain")).unwrap();
        std::os::unix::fs::symlink("/loop", r.join("loop")).unwrap();
        let root = nix::fcntl::open(r, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        create_in_root(&root, Path::new("/run/sub"), false).unwrap();
        assert!(r.join("var/run/sub").is_dir());
        create_in_root(&root, Path::new("/etc/rel/file"), true).unwrap();
        assert!(r.join("missing/dir/file").is_file());
        let err = create_in_root(&root, Path::new("/up/x"), false).unwrap_err();
        assert!(err.contains("symbolic links"), "{err}");
        let err = create_in_root(&root, Path::new("/loop"), true).unwrap_err();
        assert!(
            err.contains("symbolic links") && err.contains("/loop"),
            "{err}"
        );
    }
}
