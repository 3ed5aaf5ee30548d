//! Garbage collection and consistency checks of the image store.

use std::collections::HashMap;

use berth_content::FsckReport;
use oci_spec::image::Digest;

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
}

/// Deletes every blob no image record reaches (directly or through the
/// referrers of what it reaches), and abandoned ingests.
/// Holds the store's exclusive GC lock, so it waits for running loads,
/// imports, pulls and unpacks (which hold leases) and they wait for it.
pub fn gc(images: &Images) -> Result<GcReport> {
    let _lock = images.content().gc_lock()?;
    gc_locked(images)
}

/// [`gc`] for a caller that holds the store's GC lock already (to collect
/// more under the same lock, as the engine does with snapshots).
pub fn gc_locked(images: &Images) -> Result<GcReport> {
    let store = images.content();
    let mut marked = HashMap::new();
    let mut problems = Vec::new();
    for record in images.list()? {
        images.reachable(&record.target, &mut marked, &mut problems);
    }
    images.mark_referrers(&mut marked, &mut problems)?;
    let mut report = GcReport::default();
    for info in store.walk()? {
        if !marked.contains_key(&info.digest) {
            store.delete(&info.digest)?;
            report.freed += info.size;
            report.removed.push(info.digest);
        }
    }
    report.ingests = store.clean_ingests()?;
    Ok(report)
}

/// Verifies every blob (see [`berth_content::Store::fsck`]) and that every
/// image record and referrer reaches complete, parseable content. Returns
/// the blob report and the record problems, each naming the image (or
/// referrer) and blob.
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
    images.check_referrers(&mut problems)?;
    Ok((report, problems))
}
