//! Disk usage of a snapshot's own directory, like `du`: allocated blocks
//! and inodes, each inode counted once however many links it has.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::io_err;
use crate::SnapshotError;

/// Disk use of a snapshot's own directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes allocated (each inode counted once).
    pub size: u64,
    /// Number of inodes.
    pub inodes: u64,
}

/// The usage of the tree at `dir`; nothing if it does not exist.
pub(crate) fn measure(dir: &Path) -> Result<Usage, SnapshotError> {
    let mut seen = HashSet::new();
    let mut u = Usage::default();
    if dir.exists() {
        du(dir, &mut seen, &mut u)?;
    }
    Ok(u)
}

fn du(dir: &Path, seen: &mut HashSet<(u64, u64)>, u: &mut Usage) -> Result<(), SnapshotError> {
    let m = fs::symlink_metadata(dir).map_err(io_err(dir, "stat"))?;
    if seen.insert((m.dev(), m.ino())) {
        u.inodes += 1;
        u.size += m.blocks() * 512;
    }
    if m.is_dir() {
        for e in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
            let e = e.map_err(io_err(dir, "list"))?;
            du(&e.path(), seen, u)?;
        }
    }
    Ok(())
}
