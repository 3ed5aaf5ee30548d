//! Online garbage collection (zot's model): runs while the registry serves.
//!
//! Mark: every manifest kept in any repository marks itself, its config,
//! layers and child manifests. Sweep: unmarked blobs, and repository links
//! to them, are deleted once their last reference or upload is older than
//! the grace period. Operations that create references (upload commit,
//! mount, manifest PUT, blob HEAD) refresh a blob's clock and GC deletes
//! each key inside a deletion mark in storage (`store::holds`), so a push
//! in progress on any replica never loses a blob it relies on, whichever
//! replicas run GC and however many at once. Stale upload sessions go after their
//! own grace period; with `delete_untagged`, manifests no tag, index or
//! subject reaches go too.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use oci_spec::image::Digest;

use crate::config::GcConfig;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::store::{blob_key, Store};

/// What one GC run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs: u64,
    /// Untagged manifests deleted.
    pub manifests: u64,
    /// Upload sessions deleted.
    pub uploads: u64,
}

fn children(body: &[u8]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |d: Option<&serde_json::Value>| {
        if let Some(d) = d
            .and_then(|d| d.as_str())
            .and_then(|d| crate::digest::parse(d).ok())
        {
            out.push(d);
        }
    };
    push(v.pointer("/config/digest"));
    for key in ["layers", "manifests", "blobs"] {
        if let Some(list) = v.get(key).and_then(|l| l.as_array()) {
            for item in list {
                push(item.get("digest"));
            }
        }
    }
    out
}

/// Runs one collection.
pub async fn collect(store: &Store, cfg: &GcConfig, metrics: &Metrics) -> Result<GcReport> {
    collect_at(store, cfg, metrics, SystemTime::now()).await
}

/// Runs one collection as if the clock said `now` (tests use a later `now`
/// to let grace periods pass on backends whose times cannot be set).
pub async fn collect_at(
    store: &Store,
    cfg: &GcConfig,
    metrics: &Metrics,
    now: SystemTime,
) -> Result<GcReport> {
    let grace = Duration::from_secs(cfg.grace_secs);
    // Stale uploads.
    let mut report = GcReport {
        uploads: store
            .sweep_uploads(true, Duration::from_secs(cfg.upload_grace_secs), now)
            .await?,
        ..GcReport::default()
    };

    // Mark.
    let mut marked: HashSet<Digest> = HashSet::new();
    let repos = store.repos().await?;
    for repo in &repos {
        let revisions = store.revisions(repo).await?;
        let mut keep: HashSet<Digest> = HashSet::new();
        let mut bodies = Vec::new();
        for d in &revisions {
            if let Some(body) = store.driver.get(&blob_key(d)).await? {
                bodies.push((d.clone(), body));
            }
        }
        if cfg.delete_untagged {
            // Roots: tagged manifests and manifests with a subject (referrers).
            let mut roots: Vec<Digest> = Vec::new();
            for t in store.tags(repo).await.unwrap_or_default() {
                if let Ok(d) = store.resolve(repo, &t).await {
                    roots.push(d);
                }
            }
            for (d, body) in &bodies {
                let has_subject = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .is_some_and(|v| v.get("subject").is_some());
                if has_subject {
                    roots.push(d.clone());
                }
            }
            while let Some(d) = roots.pop() {
                if keep.insert(d.clone()) {
                    if let Some((_, body)) = bodies.iter().find(|(b, _)| *b == d) {
                        roots.extend(children(body));
                    }
                }
            }
            for d in &revisions {
                if keep.contains(d) {
                    continue;
                }
                let key = Store::revision_link_key(repo, d);
                let removed = store
                    .gc_remove(&key, grace, now, || store.manifest_delete(repo, d.as_ref()))
                    .await?;
                if removed {
                    report.manifests += 1;
                } else {
                    keep.insert(d.clone());
                }
            }
        } else {
            keep.extend(revisions.iter().cloned());
        }
        for (d, body) in &bodies {
            if keep.contains(d) {
                marked.insert(d.clone());
                marked.extend(children(body));
            }
        }
    }

    // Sweep repository links, then blobs.
    for repo in &repos {
        for d in store.layer_links(repo).await? {
            if marked.contains(&d) {
                continue;
            }
            let key = Store::layer_link_key(repo, &d);
            store
                .gc_remove(&key, grace, now, || async {
                    Ok(store.driver.delete(&key).await?)
                })
                .await?;
        }
    }
    for d in store.all_blobs().await? {
        if marked.contains(&d) {
            continue;
        }
        let key = blob_key(&d);
        let removed = store
            .gc_remove(&key, grace, now, || async {
                Ok(store.driver.delete(&key).await?)
            })
            .await?;
        if removed {
            report.blobs += 1;
        }
    }
    metrics.gc_runs.fetch_add(1, Ordering::Relaxed);
    metrics
        .gc_blobs_deleted
        .fetch_add(report.blobs, Ordering::Relaxed);
    metrics
        .gc_manifests_deleted
        .fetch_add(report.manifests, Ordering::Relaxed);
    metrics
        .gc_uploads_deleted
        .fetch_add(report.uploads, Ordering::Relaxed);
    Ok(report)
}
