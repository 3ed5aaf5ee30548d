//! Snapshotters keyed by chain IDs: overlay and a plain-copy fallback.
//!
//! The API follows containerd's: [`Snapshotter::prepare`] makes a writable
//! *active* snapshot on top of a committed parent, [`Snapshotter::view`] a
//! read-only one, [`Snapshotter::commit`] freezes an active snapshot under a
//! name (for image layers: its chain ID), and [`Snapshotter::mounts`] says how
//! to mount any of them. Metadata (parent, kind, directory id) lives in one
//! JSON file replaced atomically under an exclusive `flock`; snapshot
//! contents live in `<root>/snapshots/<id>/{fs,work}`.
//!
//! Image layers are committed under their chain IDs ([`chain_ids`]);
//! unpacking them (reading blobs, applying layers) is berth-engine's job.
//!
//! Source layout, one job per file:
//!
//! | file | job |
//! |---|---|
//! | `snapshotter.rs` | [`Snapshotter`]: open and the operations (prepare, view, commit, commit_with, sync, mounts, stat, walk, remove, usage, cleanup) |
//! | `metadata.rs` | the metadata database: [`Kind`], [`Info`], records, the `flock`, atomic load/save of `metadata.json` |
//! | `driver.rs` | [`Driver`]: overlay or copy for a new store, each driver's directories and mounts |
//! | `usage.rs` | [`Usage`]: disk use of a snapshot's directory |
//! | `copy.rs` | [`copy_tree`], the copy driver's faithful tree copy |
//! | `mount.rs` | [`Mount`], [`mount_all`], [`unmount`] |
//! | `chain.rs` | [`chain_ids`], [`EXTRACT_PREFIX`]: how layer snapshots and unpacks' active snapshots are named |
//! | `error.rs` | [`SnapshotError`] |

mod chain;
mod copy;
mod driver;
mod error;
mod metadata;
mod mount;
mod snapshotter;
mod usage;

pub use chain::{chain_ids, EXTRACT_PREFIX};
pub use copy::copy_tree;
pub use driver::Driver;
pub use error::SnapshotError;
pub use metadata::{Info, Kind};
pub use mount::{mount_all, unmount, Mount};
pub use snapshotter::Snapshotter;
pub use usage::Usage;
