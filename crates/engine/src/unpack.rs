//! Unpacking an image: its layer blobs, read from a [`BlobProvider`], each
//! applied with diff_id verification into a committed snapshot named by its
//! chain ID. Like containerd's unpacker it composes three parts that do not
//! know each other: a blob provider (the content store today, a registry
//! download tomorrow), the layer applier (berth-archive) and the
//! snapshotter.

use std::io::Read;

use berth_archive::{apply_layer, ApplyOptions, Compression, WhiteoutMode};
use berth_core::fs::Durability;
use berth_snapshot::{chain_ids, Driver, Kind, SnapshotError, Snapshotter, EXTRACT_PREFIX};
use oci_spec::image::Descriptor;

use crate::error::{Error, Result};

/// Where unpacking reads layer blobs from.
pub trait BlobProvider {
    /// Opens the blob `desc` for reading from its start. Errors name the
    /// blob's source (a path, a URL); the caller adds the layer.
    fn open_blob(&self, desc: &Descriptor) -> std::io::Result<Box<dyn Read + Send + '_>>;
}

impl BlobProvider for berth_content::Store {
    fn open_blob(&self, desc: &Descriptor) -> std::io::Result<Box<dyn Read + Send + '_>> {
        let file = self.reader(desc.digest()).map_err(std::io::Error::other)?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
    }
}

/// Makes sure every layer of an image (its manifest's `layers`, with the
/// config's `diff_ids`) is a committed snapshot named by its chain ID,
/// applying only the missing ones, and returns the top chain ID: the parent
/// of a container's snapshot (`None` for an image without layers). Layers
/// shared with other images are unpacked once. Layers are committed without
/// a sync ([`Durability::Volatile`]): a layer's snapshot is a cache of its
/// blob (which is durable), so a crash of the machine drops it and the next
/// unpack applies it again; a container kept across boots syncs its layers
/// (`Engine::create`). On failure the half-applied
/// snapshot is removed; one left by a killed process is removed by
/// [`Snapshotter::open`].
pub fn unpack(
    snapshotter: &Snapshotter,
    blobs: &dyn BlobProvider,
    layers: &[Descriptor],
    diff_ids: &[String],
    options: &ApplyOptions,
) -> Result<Option<String>> {
    if diff_ids.len() != layers.len() {
        return Err(Error::invalid(
            "image",
            format!(
                "the config lists {} diff_ids but the manifest {} layers; the image is corrupt (pull or load it again)",
                diff_ids.len(),
                layers.len()
            ),
        ));
    }
    let chain = chain_ids(diff_ids);
    for (i, id) in chain.iter().enumerate() {
        match snapshotter.stat(id) {
            Ok(info) if info.kind == Kind::Committed => continue,
            Ok(_) | Err(SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let parent = i.checked_sub(1).map(|p| chain[p].as_str());
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{EXTRACT_PREFIX}{}-{seq}-{id}", std::process::id());
        snapshotter.prepare(&key, parent)?;
        let result = apply_one(
            snapshotter,
            blobs,
            &key,
            i,
            &layers[i],
            &diff_ids[i],
            options,
        )
        .and_then(
            |()| match snapshotter.commit_with(id, &key, Durability::Volatile) {
                // Another unpack committed the same layer first: use theirs.
                Err(SnapshotError::AlreadyExists(_)) => Ok(snapshotter.remove(&key)?),
                other => Ok(other?),
            },
        );
        if let Err(e) = result {
            let _ = snapshotter.remove(&key);
            return Err(e);
        }
    }
    Ok(chain.last().cloned())
}

/// Applies layer `index` into the active snapshot `key`.
fn apply_one(
    snapshotter: &Snapshotter,
    blobs: &dyn BlobProvider,
    key: &str,
    index: usize,
    layer: &Descriptor,
    diff_id: &str,
    options: &ApplyOptions,
) -> Result<()> {
    let dir = snapshotter.fs_dir(key)?;
    let mut opts = options.clone();
    opts.expected_diff_id = Some(diff_id.to_string());
    match snapshotter.driver() {
        Driver::Overlay => {
            opts.whiteouts = WhiteoutMode::Overlay;
            opts.lowers = snapshotter.parent_dirs(key)?;
        }
        Driver::Copy => opts.whiteouts = WhiteoutMode::Remove,
    }
    let blob_error = |cause: String| Error::Blob {
        index,
        digest: layer.digest().to_string(),
        cause,
    };
    let compression = Compression::from_media_type(layer.media_type().as_ref())
        .map_err(|e| blob_error(e.to_string()))?;
    let reader = blobs
        .open_blob(layer)
        .map_err(|e| blob_error(e.to_string()))?;
    apply_layer(reader, compression, &dir, &opts).map_err(|cause| Error::Apply {
        index,
        diff_id: diff_id.to_string(),
        cause: Box::new(cause),
    })?;
    Ok(())
}
