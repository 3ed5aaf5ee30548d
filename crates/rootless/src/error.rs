use std::path::PathBuf;

/// What can go wrong setting up a rootless container; each names the file,
/// tool or id involved and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user has no subordinate id range to map.
    #[error("no {kind} range for user {user} in {file}: add one with `usermod --add-{kind}s 100000-165535 {user}` (as root)")]
    NoRange {
        /// "subuid" or "subgid".
        kind: &'static str,
        /// The user's name.
        user: String,
        /// /etc/subuid or /etc/subgid.
        file: PathBuf,
    },
    /// A mapping asks for host ids the user may not map.
    #[error("{kind} mapping {container} {host} {size}: host ids {host}..{end} are neither your own id {own} nor in user {user}'s ranges in {file} ({ranges}): map only those, or add a range with `usermod --add-{kind}s`", end = u64::from(*host) + u64::from(*size) - 1)]
    NotDelegated {
        /// "subuid" or "subgid".
        kind: &'static str,
        /// The mapping's first container id.
        container: u32,
        /// The mapping's first host id.
        host: u32,
        /// The mapping's size.
        size: u32,
        /// The caller's own id.
        own: u32,
        /// The user's name.
        user: String,
        /// /etc/subuid or /etc/subgid.
        file: PathBuf,
        /// The user's ranges, "start-end, ...".
        ranges: String,
    },
    /// A subordinate id file has a line that does not parse.
    #[error("{file} line {line}: {reason} (expected NAME_OR_UID:START:COUNT)")]
    BadLine {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// newuidmap or newgidmap is not installed.
    #[error("{tool} not found in /usr/bin or $PATH: install Debian's uidmap package (apt-get install uidmap) to map more than your own id")]
    NoTool {
        /// newuidmap or newgidmap.
        tool: &'static str,
    },
    /// newuidmap or newgidmap refused.
    #[error("{tool} {args} failed: {stderr}")]
    ToolFailed {
        /// newuidmap or newgidmap.
        tool: &'static str,
        /// Its arguments.
        args: String,
        /// What it printed (or how it ended).
        stderr: String,
    },
    /// A data root was made under other id maps than the current ones.
    #[error("data root {root}: its files were stored under the id maps [{then}], and berth now runs under [{now}] (the user's ranges in /etc/subuid or /etc/subgid changed): restore the old ranges, or remove the data root (as root: its files belong to the old ids) and pull again")]
    MapsChanged {
        /// The data root.
        root: PathBuf,
        /// The recorded maps.
        then: String,
        /// The current maps.
        now: String,
    },
    /// No runtime directory for the user.
    #[error("XDG_RUNTIME_DIR is not set and /run/user/{uid} is not a directory of yours: set XDG_RUNTIME_DIR to a directory only you can write (a systemd login session sets /run/user/{uid}), or pass --root")]
    NoRuntimeDir {
        /// The caller's uid.
        uid: u32,
    },
    /// XDG_RUNTIME_DIR is set but unusable.
    #[error("XDG_RUNTIME_DIR={path}: {reason}")]
    BadRuntimeDir {
        /// Its value.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error on a file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}
