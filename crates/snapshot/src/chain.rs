//! The naming rules unpackers and the snapshotter share: a layer's
//! committed snapshot is named by its chain ID, and the active snapshot an
//! unpack applies it into is named `extract-<pid>-…`, so that
//! [`Snapshotter::open`](crate::Snapshotter::open) can remove one whose
//! process died. The unpacking itself is berth-engine's.

use sha2::{Digest, Sha256};

/// Key prefix of the active snapshots an unpack applies layers into,
/// followed by the unpacking process's pid and a `-`. Such a snapshot left
/// by a process that died is removed by
/// [`Snapshotter::open`](crate::Snapshotter::open).
pub const EXTRACT_PREFIX: &str = "extract-";

/// Chain IDs of a layer stack: `chain[0] = diff_ids[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff_ids[n])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// True if `key` is an unpack's active snapshot whose process no longer runs.
pub(crate) fn owner_is_dead(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(EXTRACT_PREFIX) else {
        return false;
    };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
        return false;
    };
    if pid == std::process::id() as i32 {
        return false;
    }
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
