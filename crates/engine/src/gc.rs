//! Garbage collection of the data root: containers whose owner was killed
//! are reaped first (their snapshots and mounts are only free then),
//! network attachments no container owns are detached, then anonymous
//! volumes no container uses any more, then unreachable blobs (berth-image)
//! and the committed layer snapshots no
//! image needs, all under the content store's exclusive GC lock.

use std::collections::{HashMap, HashSet};

use berth_image::media::{kind, Kind};
use berth_image::Images;
use berth_snapshot::{Kind as SnapshotKind, Snapshotter};

use crate::container;
use crate::error::Result;
use crate::Engine;

/// What [`Engine::gc`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Names of the abandoned containers reaped.
    pub reaped: Vec<String>,
    /// Problems met while reaping (reaping goes on past them).
    pub warnings: Vec<String>,
    /// Containers whose record is gone but whose network attachment was
    /// left (a crash): detached (CNI DEL), their addresses freed.
    pub networks: Vec<String>,
    /// Container snapshots whose record is gone (a crashed run, a record
    /// removed by hand), removed with their mounts.
    pub orphans: Vec<String>,
    /// Anonymous volumes no container uses (their container was removed
    /// without `-v`, or its create crashed).
    pub volumes: Vec<String>,
    /// Container bundles (rootfs mounts) left by a crashed run or monitor
    /// that no running container needs: unmounted and removed (ids).
    pub bundles: Vec<String>,
    /// Blobs and ingests removed from the image store.
    pub blobs: berth_image::gc::GcReport,
    /// Committed layer snapshots (chain IDs) no image needs any more.
    pub snapshots: Vec<String>,
}

impl Engine {
    /// Reaps, under the containers lock, the containers whose owning
    /// process was killed: what a new run does before claiming a name.
    /// Returns the names reaped and the problems met.
    pub fn reap_abandoned(&self) -> Result<(Vec<String>, Vec<String>)> {
        let layout = self.layout();
        if !layout.containers().is_dir() {
            return Ok((Vec::new(), Vec::new()));
        }
        let _names = container::lock(layout)?;
        let gone: Vec<_> = container::list(layout)?
            .into_iter()
            .filter(|r| r.abandoned())
            .collect();
        if gone.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let warnings = container::reap(layout, &gone, &self.snapshotter()?);
        Ok((gone.into_iter().map(|r| r.name).collect(), warnings))
    }

    /// `berth gc`: reaps abandoned containers, removes the anonymous
    /// volumes no container uses, then removes every blob no
    /// image reaches and every committed snapshot no image needs (active
    /// snapshots — containers, running unpacks — are kept with their
    /// ancestors). Waits for running loads, pulls and unpacks, which hold
    /// leases on the store.
    pub fn gc(&self) -> Result<GcReport> {
        let (reaped, warnings) = self.reap_abandoned()?;
        let bundles = self.remove_stale_bundles()?;
        let networks = crate::network::gc(self.layout())?;
        let orphans = self.remove_orphan_snapshots()?;
        let volumes = self.remove_unused_volumes(true)?;
        let images = self.images();
        let _lock = images.content().gc_lock()?;
        let blobs = berth_image::gc::gc_locked(images)?;
        let snapshots = if self.layout().snapshotter().is_dir() {
            gc_snapshots(images, &self.snapshotter()?)?
        } else {
            Vec::new()
        };
        Ok(GcReport {
            reaped,
            warnings,
            networks,
            orphans,
            volumes,
            bundles,
            blobs,
            snapshots,
        })
    }
}

impl Engine {
    /// Unmounts and removes the bundles under the default state root that
    /// no record owns, or whose container exited and whose owner (its
    /// monitor, or a foreground `berth run`) is gone. Returns their ids.
    fn remove_stale_bundles(&self) -> Result<Vec<String>> {
        let layout = self.layout();
        let dir = crate::layout::bundle_dir(&layout.default_state_root(), "");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let _names = container::lock(layout)?;
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let stale = match self.container_record(&id) {
                Ok(rec) => rec.status == container::Status::Exited && rec.owner_gone(),
                Err(crate::Error::NoSuchContainer { .. }) => true,
                Err(_) => false,
            };
            if stale {
                let bundle = entry.path();
                let _ = berth_snapshot::unmount(&bundle.join("rootfs"));
                container::remove_dir(&bundle)?;
                removed.push(id);
            }
        }
        Ok(removed)
    }

    /// Removes the active container snapshots (`container-<id>`) no
    /// container record owns, unmounting them from the default state
    /// root's bundle first. Returns their names.
    fn remove_orphan_snapshots(&self) -> Result<Vec<String>> {
        let layout = self.layout();
        if !layout.snapshotter().is_dir() {
            return Ok(Vec::new());
        }
        let _names = container::lock(layout)?;
        let snapshotter = self.snapshotter()?;
        let mut orphans = Vec::new();
        snapshotter.walk(|info| {
            if let Some(id) = info.name.strip_prefix(container::SNAPSHOT_PREFIX) {
                if info.kind == SnapshotKind::Active && !layout.container_record(id).exists() {
                    orphans.push((info.name.clone(), id.to_string()));
                }
            }
        })?;
        let mut removed = Vec::new();
        for (name, id) in orphans {
            let bundle = crate::layout::bundle_dir(&layout.default_state_root(), &id);
            let _ = berth_snapshot::unmount(&bundle.join("rootfs"));
            let _ = container::remove_dir(&bundle);
            let _ = container::remove_dir(&layout.container(&id));
            snapshotter.remove(&name)?;
            removed.push(name);
        }
        Ok(removed)
    }
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
fn gc_snapshots(images: &Images, snapshotter: &Snapshotter) -> Result<Vec<String>> {
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
