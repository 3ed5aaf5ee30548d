//! Referrers (distribution spec 1.1): the manifests whose `subject` is a
//! given manifest — signatures, SBOMs, attestations attached to an image.
//!
//! - [`list`] asks `GET /v2/<name>/referrers/<digest>`; a registry without
//!   that API (404) is read through the tag schema's fallback: the index
//!   tagged `<alg>-<hex>` of the subject's digest.
//! - [`fetch_files`] downloads an artifact's files (oras's `pull`);
//!   [`local_files`] writes those of one in the local store.
//! - [`attach`] pushes an artifact (files as blobs, an empty config, the
//!   subject) and, when the registry does not answer `OCI-Subject` to the
//!   manifest's PUT, adds it to that fallback index itself, as the spec
//!   asks of clients.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageIndex, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, ANNOTATION_TITLE,
};

use berth_image::Images;

use crate::client::{Registry, Scope};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::push::{PushOptions, Upload};

/// The OCI index media type (the referrers answer and the fallback tag).
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI image manifest media type (an artifact's manifest).
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The empty JSON blob `{}`, the config of an artifact without one.
const EMPTY_JSON: &[u8] = b"{}";

/// The referrers of one subject.
#[derive(Debug, Clone)]
pub struct Referrers {
    /// Their descriptors (`artifactType` and `annotations` included).
    pub manifests: Vec<Descriptor>,
    /// Read from the fallback tag, the registry having no referrers API.
    pub from_fallback_tag: bool,
}

/// The tag schema's fallback tag for `subject`: `<alg>-<hex>`, cut to the
/// 128 characters a tag may have.
pub fn fallback_tag(subject: &Digest) -> String {
    let tag = format!("{}-{}", subject.algorithm().as_ref(), subject.digest());
    tag.chars().take(128).collect()
}

/// Lists the referrers of `subject` in `repo`, only those of
/// `artifact_type` when one is given.
pub async fn list(
    registry: &Registry,
    repo: &str,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Referrers> {
    let (index, filtered, from_fallback_tag) =
        match registry.referrers_api(repo, subject, artifact_type).await? {
            Some((data, filtered)) => {
                let what = format!("referrers of {subject} in {}/{repo}", registry.host());
                (parse_index(&data, &what)?, filtered, false)
            }
            None => (fallback_index(registry, repo, subject).await?, false, true),
        };
    let mut manifests = index.manifests().clone();
    if let (Some(t), false) = (artifact_type, filtered) {
        manifests.retain(|d| d.artifact_type().as_ref().is_some_and(|a| a.as_ref() == t));
    }
    Ok(Referrers {
        manifests,
        from_fallback_tag,
    })
}

fn parse_index(data: &[u8], what: &str) -> Result<ImageIndex> {
    serde_json::from_slice(data)
        .map_err(|e| Error::invalid(what, format!("not an OCI image index: {e}")))
}

/// The index under the fallback tag of `subject`, empty when there is none.
async fn fallback_index(registry: &Registry, repo: &str, subject: &Digest) -> Result<ImageIndex> {
    let tag = fallback_tag(subject);
    match registry.manifest(repo, &tag, None).await {
        Ok(m) => parse_index(
            &m.data,
            &format!("referrers fallback tag {}/{repo}:{tag}", registry.host()),
        ),
        Err(Error::Status { status: 404, .. }) => Ok(empty_index(Vec::new())),
        Err(e) => Err(e),
    }
}

fn empty_index(manifests: Vec<Descriptor>) -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index with every required field builds")
}

/// An artifact to attach to a manifest.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Its `artifactType`, e.g. `application/spdx+json`.
    pub artifact_type: String,
    /// The files, each one blob (its name as the title annotation), with
    /// the media type given after a colon or `application/octet-stream`.
    pub files: Vec<(PathBuf, String)>,
    /// The manifest's annotations.
    pub annotations: HashMap<String, String>,
}

/// Where an artifact went.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The artifact manifest's descriptor.
    pub manifest: Descriptor,
    /// The registry indexed the subject itself (`OCI-Subject`); otherwise
    /// the fallback tag's index was updated.
    pub registry_indexed: bool,
}

/// Reads `path` once: its digest and size.
fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = berth_core::digest::Hasher::sha256();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.digest(), size))
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Result<Descriptor> {
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(digest)
        .size(size)
        .build()
        .map_err(|e| Error::invalid(format!("descriptor of type {media_type}"), e.to_string()))
}

/// Pushes `artifact` to `repo` with `subject` (a manifest or index of the
/// same repository) as its subject.
pub async fn attach(
    registry: &Registry,
    repo: &str,
    subject: &Descriptor,
    artifact: &Artifact,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Attached> {
    check_media_type(&artifact.artifact_type, "artifact type")?;
    let scope = Scope::repository(repo, "pull,push");
    let up = Upload {
        registry,
        repo,
        scope: &scope,
        mount_from: None,
        options,
        progress,
    };
    let mut layers = Vec::new();
    for (path, media_type) in &artifact.files {
        check_media_type(media_type, &format!("media type of {}", path.display()))?;
        let title = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::invalid(path.display().to_string(), "not a file name in UTF-8")
        })?;
        let (digest, size) = hash_file(path)?;
        let mut desc = descriptor(media_type, digest, size)?;
        desc.set_annotations(Some(HashMap::from([(
            ANNOTATION_TITLE.to_string(),
            title.to_string(),
        )])));
        up.blob(&desc, path).await?;
        layers.push(desc);
    }
    // The empty config `{}`, uploaded from a temporary file like any blob.
    let empty = tempfile_with(EMPTY_JSON)?;
    let config = descriptor(
        MediaType::EmptyJSON.as_ref(),
        berth_core::digest::sha256_of(EMPTY_JSON),
        EMPTY_JSON.len() as u64,
    )?;
    up.blob(&config, empty.path()).await?;
    if layers.is_empty() {
        // The spec's guidance for an artifact without files: one empty blob.
        layers.push(config.clone());
    }
    let mut subject = subject.clone();
    subject.set_annotations(None);
    subject.set_platform(None);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(artifact.artifact_type.as_str()))
        .config(config)
        .layers(layers)
        .subject(subject.clone())
        .annotations(artifact.annotations.clone())
        .build()
        .map_err(|e| Error::invalid("artifact manifest", e.to_string()))?;
    let data = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let digest = berth_core::digest::sha256_of(&data);
    let headers = registry
        .put_manifest(repo, digest.as_ref(), MANIFEST_TYPE, &data)
        .await?;
    let mut desc = descriptor(MANIFEST_TYPE, digest, data.len() as u64)?;
    desc.set_artifact_type(Some(MediaType::from(artifact.artifact_type.as_str())));
    if !artifact.annotations.is_empty() {
        desc.set_annotations(Some(artifact.annotations.clone()));
    }
    let registry_indexed = headers.contains_key("oci-subject");
    if !registry_indexed {
        add_to_fallback(registry, repo, subject.digest(), &desc).await?;
    }
    Ok(Attached {
        manifest: desc,
        registry_indexed,
    })
}

/// Adds `referrer` to the fallback tag's index of `subject` (read, add
/// unless present, put back).
pub(crate) async fn add_to_fallback(
    registry: &Registry,
    repo: &str,
    subject: &Digest,
    referrer: &Descriptor,
) -> Result<()> {
    let index = fallback_index(registry, repo, subject).await?;
    let mut manifests = index.manifests().clone();
    if manifests.iter().any(|d| d.digest() == referrer.digest()) {
        return Ok(());
    }
    manifests.push(referrer.clone());
    let data = serde_json::to_vec(&empty_index(manifests)).expect("an index serializes");
    registry
        .put_manifest(repo, &fallback_tag(subject), INDEX_TYPE, &data)
        .await?;
    Ok(())
}

/// The most files an artifact may have.
const MAX_ARTIFACT_FILES: usize = 1000;

/// Downloads the files of the artifact manifest `reference` (a digest as
/// `berth artifact ls` prints it, or a tag) of `repo` into `dir`, each
/// under its title annotation, verified while it streams and renamed into
/// place only when whole. Returns the paths written.
pub async fn fetch_files(
    registry: &Registry,
    repo: &str,
    reference: &str,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>> {
    use futures::StreamExt;
    use std::io::Write;

    let expected = berth_core::digest::parse(reference).ok();
    let m = registry
        .manifest(repo, reference, expected.as_ref())
        .await?;
    let what = format!("artifact {}/{repo}@{}", registry.host(), m.digest);
    let files = artifact_files(&m.data, &what)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for (title, layer) in files {
        let digest = layer.digest();
        let event = |state| {
            progress.event(crate::progress::Event::Blob {
                digest: digest.clone(),
                size: layer.size(),
                state,
            })
        };
        event(crate::progress::State::Transferring);
        let (resp, _) = registry.blob(repo, digest, 0).await?;
        let mut tmp = file_in(dir)?;
        let mut hasher = berth_core::digest::Hasher::new(digest.algorithm())
            .map_err(|e| Error::invalid(&what, e.to_string()))?;
        let mut size = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::network(&format!("blob {digest}"), &e))?;
            size += chunk.len() as u64;
            if size > layer.size() {
                return Err(Error::invalid(
                    format!("file {title} ({digest})"),
                    format!(
                        "the registry sent more than the {} bytes the manifest says",
                        layer.size()
                    ),
                ));
            }
            hasher.update(&chunk);
            tmp.write_all(&chunk)
                .map_err(|e| Error::io(tmp.path(), e))?;
        }
        let actual = hasher.digest();
        if size != layer.size() || &actual != digest {
            return Err(Error::invalid(
                format!("file {title} ({digest})"),
                format!("digest mismatch: the registry sent {size} bytes hashing to {actual}; nothing written"),
            ));
        }
        written.push(persist(tmp, dir, &title)?);
        event(crate::progress::State::Done);
    }
    berth_core::fs::fsync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(written)
}

/// Writes the files of the artifact manifest `digest` kept in the local
/// store (a referrer `berth pull --referrers` fetched) into `dir`, each
/// under its title annotation, renamed into place only when whole.
/// Returns the paths written.
pub fn local_files(images: &Images, digest: &Digest, dir: &Path) -> Result<Vec<PathBuf>> {
    let data = images
        .content()
        .read_blob(digest, crate::client::MAX_MANIFEST as u64)?;
    let files = artifact_files(&data, &format!("artifact {digest} in the local store"))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for (title, layer) in files {
        let mut tmp = file_in(dir)?;
        let mut blob = images.content().reader(layer.digest())?;
        std::io::copy(&mut blob, tmp.as_file_mut()).map_err(|e| Error::io(tmp.path(), e))?;
        written.push(persist(tmp, dir, &title)?);
    }
    berth_core::fs::fsync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(written)
}

/// A temporary file in `dir` for one artifact file.
fn file_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".berth-artifact-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Syncs `tmp` and renames it to `dir/title`.
fn persist(tmp: tempfile::NamedTempFile, dir: &Path, title: &str) -> Result<PathBuf> {
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    let path = dir.join(title);
    tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    Ok(path)
}

/// The files of the artifact manifest `data`: each titled layer with its
/// title, every name checked (a plain file name, no two alike) before
/// anything is written; `what` names the artifact in errors.
fn artifact_files(data: &[u8], what: &str) -> Result<Vec<(String, Descriptor)>> {
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(data)
        .map_err(|e| Error::invalid(what, format!("not an OCI image manifest: {e}")))?;
    if manifest.layers().len() > MAX_ARTIFACT_FILES {
        return Err(Error::invalid(what, "more than 1000 files"));
    }
    let mut files = Vec::new();
    for layer in manifest.layers() {
        let Some(title) = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_TITLE))
        else {
            continue; // e.g. the empty blob of an artifact without files
        };
        let plain = !title.is_empty()
            && title.len() <= 255
            && title != "."
            && title != ".."
            && !title.contains(['/', '\0']);
        if !plain {
            return Err(Error::invalid(
                what,
                format!(
                    "file name {title:?} of {} is not a plain file name; refused",
                    layer.digest()
                ),
            ));
        }
        if files.iter().any(|(t, _): &(String, Descriptor)| t == title) {
            return Err(Error::invalid(what, format!("two files named {title:?}")));
        }
        berth_core::digest::check_supported(layer.digest())
            .map_err(|e| Error::invalid(what, e.to_string()))?;
        files.push((title.clone(), layer.clone()));
    }
    Ok(files)
}

/// A media type as RFC 6838 shapes it: `type/subtype`, restricted characters.
fn check_media_type(text: &str, what: &str) -> Result<()> {
    if berth_core::name::valid_media_type(text) {
        return Ok(());
    }
    Err(Error::invalid(
        format!("{what} {text:?}"),
        "a media type is TYPE/SUBTYPE of letters, digits and !#$&-^_.+ (e.g. application/spdx+json)",
    ))
}

/// A temporary file holding `data`.
fn tempfile_with(data: &[u8]) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut file =
        tempfile::NamedTempFile::new().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    file.write_all(data)
        .map_err(|e| Error::io(file.path().to_path_buf(), e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tags_and_media_types() {
        let d = berth_core::digest::sha256_of(b"x");
        assert_eq!(fallback_tag(&d), format!("sha256-{}", d.digest()));
        assert!(berth_core::name::valid_tag(&fallback_tag(&d)));
        assert!(check_media_type("application/spdx+json", "t").is_ok());
        for bad in ["", "text", "a/b/c", "a/b c", "a/b\n"] {
            assert!(check_media_type(bad, "t").is_err(), "{bad:?}");
        }
    }
}
