//! Applying an image's layer chain into committed snapshots.

use std::io::Read;

use berth_archive::{apply_layer, ApplyError, ApplyOptions, Compression, WhiteoutMode};
use sha2::{Digest, Sha256};

use crate::{Driver, Kind, SnapshotError, Snapshotter};

/// Key prefix of the active snapshots [`unpack_chain`] writes into. Such a
/// snapshot left by a process that died is removed by [`Snapshotter::open`].
pub const EXTRACT_PREFIX: &str = "extract-";

/// Opens layer `index` of the image: the (compressed) blob and its compression.
pub type LayerOpener<'a> =
    dyn FnMut(usize) -> Result<(Box<dyn Read + Send + 'a>, Compression), String> + 'a;

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

/// Makes sure every layer of `diff_ids` is a committed snapshot named by its
/// chain ID, applying only the missing ones (each verified against its
/// diff_id) and returns the top chain ID, the parent for a container's
/// `prepare`. On failure the half-applied snapshot is removed.
pub fn unpack_chain(
    snapshotter: &Snapshotter,
    diff_ids: &[String],
    open_layer: &mut LayerOpener<'_>,
    options: &ApplyOptions,
) -> Result<Option<String>, SnapshotError> {
    let chain = chain_ids(diff_ids);
    for (i, id) in chain.iter().enumerate() {
        match snapshotter.stat(id) {
            Ok(info) if info.kind == Kind::Committed => continue,
            Ok(_) | Err(SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let parent = if i == 0 {
            None
        } else {
            Some(chain[i - 1].as_str())
        };
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{EXTRACT_PREFIX}{}-{seq}-{id}", std::process::id());
        snapshotter.prepare(&key, parent)?;
        let result = (|| {
            let dir = snapshotter.fs_dir(&key)?;
            let mut opts = options.clone();
            opts.expected_diff_id = Some(diff_ids[i].clone());
            match snapshotter.driver() {
                Driver::Overlay => {
                    opts.whiteouts = WhiteoutMode::Overlay;
                    opts.lowers = snapshotter.parent_dirs(&key)?;
                }
                Driver::Copy => opts.whiteouts = WhiteoutMode::Remove,
            }
            let (reader, compression) =
                open_layer(i).map_err(|detail| SnapshotError::OpenLayer {
                    index: i,
                    diff_id: diff_ids[i].clone(),
                    detail,
                })?;
            apply_layer(reader, compression, &dir, &opts).map_err(|source: ApplyError| {
                SnapshotError::Apply {
                    index: i,
                    diff_id: diff_ids[i].clone(),
                    source,
                }
            })?;
            match snapshotter.commit(id, &key) {
                // Another unpack committed the same layer first: use theirs.
                Err(SnapshotError::AlreadyExists(_)) => snapshotter.remove(&key),
                other => other,
            }
        })();
        if let Err(e) = result {
            let _ = snapshotter.remove(&key);
            return Err(e);
        }
    }
    Ok(chain.last().cloned())
}
