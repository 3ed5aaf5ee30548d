//! OCI runtime library: container lifecycle, init process, namespaces, mounts, devices, caps, rlimits, seccomp, hooks, console.
pub mod console;
pub mod hooks;
pub mod features;
pub mod spec_template;
