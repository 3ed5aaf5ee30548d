//! The error type of every cgroup operation.

use std::path::PathBuf;

/// What went wrong, naming the file, value or path involved and, where there
/// is one, the fix. The OS error is part of the message (not a separate
/// `source()`), so printing the chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A systemd-style `slice:prefix:name` cgroups path was given.
    #[error(
        "cgroupsPath {path:?} is a systemd-style \"slice:prefix:name\" path, but the systemd cgroup \
         driver is not supported: use a cgroupfs path such as \"/mygroup/{last}\" \
         (podman: --cgroup-manager=cgroupfs; containerd: SystemdCgroup = false)"
    )]
    SystemdPath {
        /// The path as given.
        path: String,
        /// Its last component, for the suggestion.
        last: String,
    },
    /// The cgroups path is not usable (e.g. it escapes the hierarchy).
    #[error("invalid cgroupsPath {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// No cgroup filesystem is mounted.
    #[error("no cgroup filesystem is mounted (checked /proc/self/mountinfo): mount cgroup2 on /sys/fs/cgroup or the v1 controllers under it")]
    NoCgroupFs,
    /// A resource asks for a controller this machine does not provide.
    #[error("{resource}: {reason}")]
    Unsupported {
        /// The spec field, e.g. `linux.resources.network.classID`.
        resource: String,
        /// Why it cannot be applied and what to do.
        reason: String,
    },
    /// Reading a cgroup or proc file failed.
    #[error("reading {path}: {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// The kernel refused a value written to a cgroup file.
    #[error("writing {value:?} to {path}: {err}{hint}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The OS error.
        err: std::io::Error,
        /// Extra advice (may be empty), starting with "; ".
        hint: String,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup {path}: {err}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("removing cgroup {path}: {err} (processes still inside? check {path}/cgroup.procs)")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// A cgroup or proc file did not have the expected format.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The offending text.
        content: String,
    },
    /// Freezing or thawing did not complete.
    #[error("{what} of cgroup {path} did not complete: state is still {state:?}")]
    Freeze {
        /// "freezing" or "thawing".
        what: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The last state read.
        state: String,
    },
    /// Sending a signal to a process of the cgroup failed.
    #[error("sending signal {signal} to pid {pid}: {err}")]
    Kill {
        /// The process.
        pid: i32,
        /// The signal number.
        signal: i32,
        /// The OS error.
        err: nix::Error,
    },
}
