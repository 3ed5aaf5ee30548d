//! The primitives every berth crate shares, each written once:
//!
//! - [`fs`]: crash-safe replacement of a file (temp file with a unique name
//!   in the same directory, rename) with an explicit [`fs::Durability`].
//! - [`digest`]: strict parsing of the digests berth can verify (sha256,
//!   sha512) into oci-spec's `Digest`, and a streaming [`digest::Hasher`].
//! - [`name`]: the distribution spec's repository name and tag grammar.
//! - [`rtnetlink`]: a NETLINK_ROUTE socket for link and address requests.
//! - [`error_chain`]: an error and its causes on one line, each said once.
//!
//! A leaf: it depends on no other berth crate.

pub mod digest;
mod error;
pub mod fs;
pub mod mountinfo;
pub mod name;
pub mod rtnetlink;

pub use error::error_chain;
