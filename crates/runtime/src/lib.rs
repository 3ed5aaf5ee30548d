//! OCI runtime library: container lifecycle, init process, namespaces,
//! mounts, devices, caps, rlimits, hooks, console.
//!
//! Library first: [`Runtime`] is a state root (runc's `--root`);
//! [`Runtime::create`] builds a container from a bundle, [`Container`]
//! starts, signals, execs into and deletes it. The `berth-runtime` binary is
//! a thin CLI over this API and `berth run` calls it in-process.

pub mod console;
pub mod features;
pub mod foreground;
pub mod hooks;
pub mod mini_init;
pub mod spec_template;

mod affinity;
mod cgroup_join;
mod channel;
mod container;
mod create;
mod error;
mod exec;
mod host_mounts;
mod idlist;
mod init;
mod lsm;
mod message;
pub mod mounts;
mod namespaces;
mod netdev;
mod process;
mod process_attrs;
pub mod reexec;
mod rootless;
mod seccomp;
pub mod signal;
pub mod spec;
pub mod state;
mod sys;
pub mod trampoline;

pub use container::{Container, Runtime};

/// The directory under a state root that holds the runtime's caches (the
/// compiled seccomp programs), not a container: no container id contains `@`.
pub const CACHE_DIR: &str = "@cache";
pub use create::CreateOptions;
pub use error::{Error, Result};
pub use exec::ExecOptions;
pub use foreground::{wait_exit, Foreground, FORWARDED_SIGNALS};
pub use reexec::{reexec_if_needed, reexec_read_only, Intent};
pub use state::{State, Status};
pub use sys::{loopback_up, pidfd_open, pidfd_send_signal, set_child_subreaper};
