//! cgroup v1, v2 and hybrid managers behind one trait.
//!
//! [`manager`] reads /proc/self/mountinfo, finds every mounted hierarchy
//! (v1 controllers, the cgroup2 mount, or both on a hybrid machine) and
//! returns a [`Manager`] for one container's cgroup in each of them. The
//! cgroupsPath is interpreted like runc's cgroupfs driver: absolute paths are
//! relative to each hierarchy's root, relative paths to the caller's own
//! cgroup, and an empty path is the container id relative to the caller's own
//! cgroup. The systemd driver ("slice:prefix:name") is not supported.
//!
//! Source layout, imports going one way: `fs` (the [`Manager`] operations)
//! calls `resources` (`set`, with `bpf` for v2 device rules) and `stats`;
//! all three find the container's directories through `cgroup`, which
//! builds on `mounts` (the hierarchies); every cgroup file is read, written
//! and parsed through `files`.

mod bpf;
mod cgroup;
mod error;
mod files;
mod fs;
mod mounts;
mod resources;
mod stats;

use std::path::PathBuf;

pub use error::Error;
pub use mounts::Hierarchy;
pub use resources::DEFAULT_DEVICE_RULES;
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry, MemoryStats, PidsStats,
    Stats, Throttling,
};

/// One container's cgroup, in every hierarchy the machine mounts.
pub trait Manager: Send + Sync {
    /// Creates the cgroup directories (copying cpuset.cpus/mems from the
    /// parent in v1, enabling controllers in v2) and moves `pid` into them.
    fn apply(&self, pid: i32) -> Result<(), Error>;
    /// Writes the resource limits of the runtime spec to the cgroup files.
    /// Also used for `update`. Fields left unset are not touched. The
    /// cgroup must exist (see [`Manager::apply`]). Device rules are written
    /// in order, followed by runc's [`DEFAULT_DEVICE_RULES`]. In cgroup v1 a
    /// deny-all rule briefly denies every device until the allows follow:
    /// like runc, write device rules while no container process is creating
    /// or opening devices (before the init builds /dev, or after it is done).
    fn set(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<(), Error>;
    /// Every process in the cgroup, including those in child cgroups.
    /// Empty when the cgroup does not exist.
    fn pids(&self) -> Result<Vec<i32>, Error>;
    /// Freezes every process of the cgroup and waits until they are frozen.
    fn freeze(&self) -> Result<(), Error>;
    /// Thaws a frozen cgroup and waits until it runs again.
    fn thaw(&self) -> Result<(), Error>;
    /// Reads the usage counters (shaped like runc's `events --stats` data).
    fn stats(&self) -> Result<Stats, Error>;
    /// How many of the cgroup's processes the OOM killer has killed so far
    /// (what `events` watches to report OOM events).
    fn oom_kills(&self) -> Result<u64, Error>;
    /// Removes the cgroup directories (and any child cgroups) in every
    /// hierarchy, retrying while the kernel still reports them busy. Kills
    /// nothing; a missing cgroup is not an error.
    fn destroy(&self) -> Result<(), Error>;
    /// The cgroup's directory in each hierarchy (v1 ones first, then the v2 one).
    fn paths(&self) -> Vec<PathBuf>;

    /// Moves `pid` into the existing cgroup (e.g. for `exec`).
    fn join(&self, pid: i32) -> Result<(), Error>;
    /// Sends `signal` to every process of the cgroup, freezing it meanwhile
    /// (when a freezer is available) so none can fork away.
    fn kill_all(&self, signal: i32) -> Result<(), Error>;
    /// Whether the cgroup is currently frozen.
    fn is_frozen(&self) -> Result<bool, Error>;
    /// Which layout the machine uses.
    fn hierarchy(&self) -> Hierarchy;
    /// Creates the cgroup directories (as [`Manager::apply`] does) without
    /// moving any process: for callers that move a process themselves
    /// (the runtime's init joins v1 hierarchies by writing "0" to `tasks`
    /// and the v2 one through clone3's CLONE_INTO_CGROUP, which avoids the
    /// global RCU-synchronised lock a cgroup.procs write takes).
    fn create(&self) -> Result<(), Error>;
}

/// The manager for `cgroups_path` (the spec's `linux.cgroupsPath`, possibly
/// empty) of container `container_id`, on whatever hierarchy this machine
/// mounts. Nothing is created until [`Manager::apply`].
pub fn manager(cgroups_path: &str, container_id: &str) -> Result<Box<dyn Manager>, Error> {
    Ok(Box::new(cgroup::Cgroup::new(cgroups_path, container_id)?))
}

/// The manager for cgroup directories recorded earlier from
/// [`Manager::paths`] (e.g. in the container's state), independent of the
/// caller's own cgroup. Each path must lie below a mounted hierarchy.
pub fn manager_from_paths(paths: &[PathBuf]) -> Result<Box<dyn Manager>, Error> {
    Ok(Box::new(cgroup::Cgroup::from_paths(paths)?))
}

/// Where every cgroup hierarchy (v1 and cgroup2) is mounted.
pub fn mountpoints() -> Result<Vec<PathBuf>, Error> {
    let m = mounts::Mounts::detect()?;
    Ok(m.v1
        .into_iter()
        .map(|v| v.mountpoint)
        .chain(m.v2.map(|v| v.mountpoint))
        .collect())
}

/// The layout of this machine's cgroup hierarchies.
pub fn detect_hierarchy() -> Result<Hierarchy, Error> {
    Ok(mounts::Mounts::detect()?.hierarchy())
}
