//! Container networking for `berth run`, on the CNI reference plugins
//! (Debian's containernetworking-plugins in `/usr/lib/cni`):
//!
//! - [`Networks`]: the networks of a data root as CNI conflists (bridge,
//!   portmap; host-local allocations under the data root), the
//!   default one created on first use, and each container's attachment
//!   with ADD's cached result for DEL ([`store`]);
//! - [`cni`]: the CNI exec protocol (ADD, DEL, CHECK);
//! - [`rules`]: each network's masquerade and FORWARD rules, installed
//!   once for the network instead of per container;
//! - [`netns`]: persistent network namespaces, which exist before the
//!   container so that CNI can set them up and the runtime join them;
//! - [`ports`]: `-p` published ports; [`files`]: `/etc/hosts`,
//!   `/etc/hostname` and `/etc/resolv.conf` as podman writes them.
//!
//! The engine decides when a container is attached and detached; this
//! crate knows nothing about containers beyond their ids.

pub mod cni;
mod error;
pub mod files;
pub mod netns;
pub mod ports;
pub mod rules;
pub mod store;
pub mod subnet;

pub use error::{Error, Result};
pub use files::{Dns, HostEntry};
pub use ports::{parse_publish, PortMapping, Protocol};
pub use store::{Attachment, CreateOptions, Network, Networks, DEFAULT_NETWORK};
pub use subnet::Subnet;
