//! Garbage collection and consistency checks of the image store.

use std::collections::{HashMap, HashSet};

use berth_content::FsckReport;
use berth_snapshot::{Kind as SnapshotKind, Snapshotter};
use oci_spec::image::Digest;

use crate::media::{kind, Kind};

use crate::error::Result;
use crate::records::Images;

/// What [`gc`] removed.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Blobs deleted.
    pub removed: Vec<Digest>,
    /// Bytes freed.
    pub freed: u64,
    /// Abandoned ingests removed.
    pub ingests: usize,
    /// Committed layer snapshots (chain IDs) no image needs any more.
    pub snapshots: Vec<String>,
}

/// The snapshotter's directory under the data root (`berth run` unpacks
/// image layers there, one committed snapshot per chain ID).
pub const SNAPSHOTTER_DIR: &str = "snapshotter";

/// Deletes every blob no image record reaches, abandoned ingests, and (if
/// `<root>/snapshotter` exists) committed layer snapshots no image needs.
/// Holds the store's exclusive GC lock, so it waits for running loads,
/// imports, pulls and unpacks (which hold leases) and they wait for it.
pub fn gc(images: &Images) -> Result<GcReport> {
    let store = images.content();
    let _lock = store.gc_lock()?;
    let mut marked = HashMap::new();
    let mut problems = Vec::new();
    for record in images.list()? {
        images.reachable(&record.target, &mut marked, &mut problems);
    }
    let mut report = GcReport::default();
    for info in store.walk()? {
        if !marked.contains_key(&info.digest) {
            store.delete(&info.digest)?;
            report.freed += info.size;
            report.removed.push(info.digest);
        }
    }
    report.ingests = store.clean_ingests()?;
    let snapshot_root = images.root().join(SNAPSHOTTER_DIR);
    if snapshot_root.is_dir() {
        let snapshotter = Snapshotter::open(&snapshot_root, None)?;
        report.snapshots = gc_snapshots(images, &snapshotter)?;
    }
    Ok(report)
}

/// Chain IDs of every layer stack any image record reaches (all platforms
/// present in the store).
fn needed_chain_ids(images: &Images) -> Result<HashSet<String>> {
    let mut marked = HashMap::new();
    let mut problems = Vec::new();
    for record in images.list()? {
        images.reachable(&record.target, &mut marked, &mut problems);
    }
    let mut chains = HashSet::new();
    for desc in marked.values() {
        if kind(desc.media_type()) != Kind::Manifest {
            continue;
        }
        let Ok(manifest) = images.read_manifest(desc) else {
            continue;
        };
        let Ok(config) = images.read_config(manifest.config()) else {
            continue;
        };
        chains.extend(berth_snapshot::chain_ids(config.rootfs().diff_ids()));
    }
    Ok(chains)
}

/// Removes committed snapshots that are neither a chain ID of an image nor
/// the ancestor of a kept snapshot (active and view snapshots, i.e.
/// containers and running unpacks, are always kept with their ancestors).
/// Returns the removed names. Call it with the store's GC lock held.
pub fn gc_snapshots(images: &Images, snapshotter: &Snapshotter) -> Result<Vec<String>> {
    let chains = needed_chain_ids(images)?;
    let mut all = Vec::new();
    snapshotter.walk(|info| all.push(info.clone()))?;
    let parent_of: HashMap<String, Option<String>> = all
        .iter()
        .map(|i| (i.name.clone(), i.parent.clone()))
        .collect();
    let mut keep = HashSet::new();
    for info in &all {
        if info.kind != SnapshotKind::Committed || chains.contains(&info.name) {
            let mut name = Some(info.name.clone());
            while let Some(n) = name {
                if !keep.insert(n.clone()) {
                    break;
                }
                name = parent_of.get(&n).cloned().flatten();
            }
        }
    }
    let mut doomed: Vec<String> = all
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !keep.contains(n))
        .collect();
    let mut removed = Vec::new();
    // Children before parents.
    while !doomed.is_empty() {
        let before = doomed.len();
        let parents: HashSet<String> = doomed
            .iter()
            .filter_map(|n| parent_of.get(n).cloned().flatten())
            .collect();
        let (leaves, rest): (Vec<String>, Vec<String>) =
            doomed.into_iter().partition(|n| !parents.contains(n));
        for leaf in leaves {
            snapshotter.remove(&leaf)?;
            removed.push(leaf);
        }
        doomed = rest;
        if doomed.len() == before {
            break;
        }
    }
    Ok(removed)
}

/// Verifies every blob (see [`berth_content::Store::fsck`]) and that every
/// image record reaches complete, parseable content. Returns the blob
/// report and the record problems, each naming the image and blob.
pub fn fsck(images: &Images) -> Result<(FsckReport, Vec<String>)> {
    let report = images.content().fsck()?;
    let mut problems = Vec::new();
    for record in images.list()? {
        let mut seen = HashMap::new();
        let mut found = Vec::new();
        images.reachable(&record.target, &mut seen, &mut found);
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("image {}: {p}", record.name)),
        );
    }
    Ok((report, problems))
}
