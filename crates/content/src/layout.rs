//! Reading and writing OCI image layouts (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), as skopeo's `oci:` transport and umoci make them.

use std::path::{Path, PathBuf};

use oci_spec::image::{Digest, ImageIndex, ImageIndexBuilder, MediaType};

use crate::error::{Error, Result};
use berth_core::digest::check_supported;
use berth_core::fs::{atomic_write, Durability};

/// The layout version this crate writes and reads.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// The annotation holding an image's name in an index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The annotation containerd and docker put beside [`REF_NAME`] to hold the
/// full image name.
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// The path of a blob inside the layout at `dir`. Only sha256 and sha512
/// digests are accepted, so the path never leaves `dir/blobs`.
pub fn blob_path(dir: &Path, digest: &Digest) -> Result<PathBuf> {
    check_supported(digest)?;
    Ok(dir
        .join("blobs")
        .join(digest.algorithm().as_ref())
        .join(digest.digest()))
}

/// An empty image index (schema 2, OCI media type).
pub fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .expect("an index with every required field set always builds")
}

/// Makes `dir` an OCI layout if it is not one yet: `oci-layout`, an empty
/// `index.json` and `blobs/sha256`.
pub fn init(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| Error::io(dir, e))?;
    let marker = dir.join("oci-layout");
    if !marker.exists() {
        let body = serde_json::json!({ "imageLayoutVersion": LAYOUT_VERSION });
        atomic_write(&marker, body.to_string().as_bytes(), Durability::Durable)
            .map_err(|e| Error::io(&marker, e))?;
    }
    let index = dir.join("index.json");
    if !index.exists() {
        write_index(dir, &empty_index())?;
    }
    Ok(())
}

/// Checks `dir/oci-layout` and parses `dir/index.json`; errors name the file.
pub fn read_index(dir: &Path) -> Result<ImageIndex> {
    let marker = dir.join("oci-layout");
    let text = std::fs::read(&marker).map_err(|e| Error::Layout {
        path: marker.clone(),
        reason: format!(
            "cannot read the oci-layout file ({e}); is this an OCI image layout directory?"
        ),
    })?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Json {
        path: marker.clone(),
        cause: e,
    })?;
    match value.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(v) if v.starts_with("1.") => {}
        other => {
            return Err(Error::Layout {
                path: marker,
                reason: format!(
                    "unsupported imageLayoutVersion {other:?} (this berth reads 1.x layouts)"
                ),
            })
        }
    }
    let path = dir.join("index.json");
    let body = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&body).map_err(|e| Error::Json { path, cause: e })
}

/// Replaces `dir/index.json` atomically.
pub fn write_index(dir: &Path, index: &ImageIndex) -> Result<()> {
    let path = dir.join("index.json");
    let body = serde_json::to_vec(index).map_err(|e| Error::Json {
        path: path.clone(),
        cause: e,
    })?;
    atomic_write(&path, &body, Durability::Durable).map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_read_gives_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        assert!(read_index(dir.path()).unwrap().manifests().is_empty());
    }

    #[test]
    fn read_index_names_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_index(dir.path()).unwrap_err().to_string();
        assert!(err.contains("oci-layout"), "{err}");
        init(dir.path()).unwrap();
        std::fs::write(dir.path().join("index.json"), "{not json").unwrap();
        let err = read_index(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("index.json") && err.contains("invalid JSON"),
            "{err}"
        );
    }

    #[test]
    fn blob_paths_refuse_unknown_algorithms() {
        let d: Digest = "md5:abcd".parse().unwrap();
        assert!(blob_path(Path::new("/x"), &d).is_err());
    }
}
