//! Image records (name → descriptor), kept in the content store's own
//! `index.json` with `org.opencontainers.image.ref.name` annotations holding
//! the full normalised reference, so the store stays a valid OCI layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_content::layout::{self, REF_NAME};
use berth_content::{FileLock, Info, LockMode, Store};
use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageConfiguration, ImageManifest, ImageManifestBuilder,
    MediaType,
};

use crate::error::{Error, Result};
use crate::media::{self, kind, Kind, PlatformSpec, MAX_JSON};
use crate::reference::Reference;

/// One image record: a name and the manifest or index it points at.
#[derive(Debug, Clone)]
pub struct Record {
    /// The full normalised name.
    pub name: Reference,
    /// The manifest or index descriptor.
    pub target: Descriptor,
}

/// A resolved image: record, the platform's manifest and its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The record the image was found through.
    pub record: Record,
    /// The manifest chosen (for an index: the platform's).
    pub manifest_descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The image config.
    pub config: ImageConfiguration,
}

impl Image {
    /// The image ID docker shows: the config digest.
    pub fn id(&self) -> &Digest {
        self.manifest.config().digest()
    }

    /// Config plus layers, compressed, in bytes.
    pub fn size(&self) -> u64 {
        self.manifest.config().size() + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }
}

/// A descriptor for a committed blob.
pub fn descriptor(media_type: MediaType, info: &Info) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(info.digest.clone())
        .size(info.size)
        .build()
        .expect("a descriptor with media type, digest and size always builds")
}

/// The image store: a content [`Store`] under `<root>/content` plus the
/// image records in its index.json.
#[derive(Debug, Clone)]
pub struct Images {
    root: PathBuf,
    content: Store,
}

impl Images {
    /// Opens (creating if needed) the image store under the data root.
    pub fn open(root: &Path) -> Result<Images> {
        let content = Store::open(root.join("content"))?;
        Ok(Images {
            root: root.to_path_buf(),
            content,
        })
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store.
    pub fn content(&self) -> &Store {
        &self.content
    }

    pub(crate) fn records_lock(&self) -> Result<FileLock> {
        Ok(FileLock::acquire(
            &self.content.dir().join("records.lock"),
            LockMode::Exclusive,
        )?)
    }

    /// Every record, sorted by name (referrers are not records: see
    /// [`Images::referrers`]).
    pub fn list(&self) -> Result<Vec<Record>> {
        let index = layout::read_index(self.content.dir())?;
        let mut out = Vec::new();
        for desc in index.manifests() {
            if crate::referrers::subject_of(desc).is_some() {
                continue; // a referrer, not an image
            }
            let Some(name) = desc.annotations().as_ref().and_then(|a| a.get(REF_NAME)) else {
                out.push(Record {
                    name: Reference::unnamed(desc.digest().clone()),
                    target: desc.clone(),
                });
                continue;
            };
            let name = Reference::parse(name).map_err(|e| {
                Error::invalid(
                    format!("{}/index.json", self.content.dir().display()),
                    format!("record with an invalid name: {e}"),
                )
            })?;
            out.push(Record {
                name,
                target: desc.clone(),
            });
        }
        out.sort_by_key(|r| r.name.to_string());
        Ok(out)
    }

    /// Finds a record by name (`busybox`, `docker.io/library/busybox:latest`),
    /// by `repository@digest`, or by a prefix (at least 4 hex digits) of its
    /// image ID or manifest digest.
    pub fn get(&self, name: &str) -> Result<Record> {
        let records = self.list()?;
        if let Ok(reference) = Reference::parse(name) {
            if let Some(r) = records.iter().find(|r| r.name == reference) {
                return Ok(r.clone());
            }
            // `repo@digest` names the record of that repository whose
            // manifest or index has that digest.
            if let Some(digest) = reference.digest() {
                if let Some(r) = records.iter().find(|r| {
                    r.name.repository() == reference.repository() && r.target.digest() == digest
                }) {
                    return Ok(r.clone());
                }
            }
        }
        let hex = name
            .strip_prefix("sha256:")
            .or_else(|| name.strip_prefix("sha512:"))
            .unwrap_or(name);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            for r in &records {
                if r.target.digest().digest().starts_with(hex) {
                    return Ok(r.clone());
                }
                if let Ok(image) = self.resolve(r, &PlatformSpec::host()) {
                    if image.id().digest().starts_with(hex) {
                        return Ok(r.clone());
                    }
                }
            }
        }
        Err(Error::NotFound(name.to_string()))
    }

    /// Adds or replaces records (one atomic index.json update). An
    /// [unnamed](Reference::unnamed) record is an entry without a
    /// `ref.name`; naming an image drops its unnamed record.
    pub fn put(&self, entries: &[(Reference, Descriptor)]) -> Result<()> {
        let _lock = self.records_lock()?;
        let dir = self.content.dir();
        let mut index = layout::read_index(dir)?;
        let mut manifests = index.manifests().clone();
        for (name, target) in entries {
            let unnamed_of_target = |d: &Descriptor| {
                d.digest() == target.digest()
                    && crate::referrers::subject_of(d).is_none()
                    && d.annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_none()
            };
            if name.is_unnamed() {
                if !manifests.iter().any(|d| d.digest() == target.digest()) {
                    let mut desc = target.clone();
                    desc.set_annotations(None);
                    manifests.push(desc);
                }
                continue;
            }
            let text = name.to_string();
            manifests.retain(|d| {
                d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) != Some(&text)
                    && !unnamed_of_target(d)
            });
            let mut desc = target.clone();
            let mut annotations = desc.annotations().clone().unwrap_or_default();
            annotations.retain(|k, _| k != layout::CONTAINERD_IMAGE_NAME);
            annotations.insert(REF_NAME.to_string(), text);
            desc.set_annotations(Some(annotations));
            manifests.push(desc);
        }
        index.set_manifests(manifests);
        Ok(layout::write_index(dir, &index)?)
    }

    /// Gives the image `source` the extra name `target`.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference> {
        let record = self.get(source)?;
        let name = Reference::parse(target)?;
        self.put(&[(name.clone(), record.target)])?;
        Ok(name)
    }

    /// Removes the record `name` (content stays until `berth gc`).
    pub fn remove(&self, name: &str) -> Result<Record> {
        let record = self.get(name)?;
        let _lock = self.records_lock()?;
        let dir = self.content.dir();
        let mut index = layout::read_index(dir)?;
        let text = (!record.name.is_unnamed()).then(|| record.name.to_string());
        let mut manifests = index.manifests().clone();
        manifests.retain(|d| {
            let name = d.annotations().as_ref().and_then(|a| a.get(REF_NAME));
            match &text {
                Some(t) => name != Some(t),
                None => name.is_some() || d.digest() != record.target.digest(),
            }
        });
        index.set_manifests(manifests);
        layout::write_index(dir, &index)?;
        Ok(record)
    }

    /// Stores an OCI manifest of `config` (an OCI image config blob) and
    /// `layers`; returns the manifest's descriptor.
    pub fn put_manifest(&self, config: &Info, layers: Vec<Descriptor>) -> Result<Descriptor> {
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, config))
            .layers(layers)
            .build()
            .map_err(|e| Error::invalid("new manifest", e.to_string()))?;
        let body = serde_json::to_vec(&manifest)
            .map_err(|e| Error::invalid("new manifest", e.to_string()))?;
        let info = self.content.put_bytes(&body, "new manifest")?;
        Ok(descriptor(MediaType::ImageManifest, &info))
    }

    /// Reads a manifest blob.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<ImageManifest> {
        let data = self.content.read_blob(desc.digest(), MAX_JSON)?;
        media::parse_manifest(&data, &format!("manifest {}", desc.digest()))
    }

    /// Reads an index blob.
    pub fn read_index(&self, desc: &Descriptor) -> Result<oci_spec::image::ImageIndex> {
        let data = self.content.read_blob(desc.digest(), MAX_JSON)?;
        media::parse_index(&data, &format!("index {}", desc.digest()))
    }

    /// Reads a config blob.
    pub fn read_config(&self, desc: &Descriptor) -> Result<ImageConfiguration> {
        let data = self.content.read_blob(desc.digest(), MAX_JSON)?;
        media::parse_config(&data, &format!("config {}", desc.digest()))
    }

    /// Resolves a record to the manifest for `platform` and its config.
    pub fn resolve(&self, record: &Record, platform: &PlatformSpec) -> Result<Image> {
        let mut desc = record.target.clone();
        for _ in 0..4 {
            match kind(desc.media_type()) {
                Kind::Manifest => {
                    let manifest = self.read_manifest(&desc)?;
                    let config = self.read_config(manifest.config())?;
                    return Ok(Image {
                        record: record.clone(),
                        manifest_descriptor: desc,
                        manifest,
                        config,
                    });
                }
                Kind::Index => {
                    let index = self.read_index(&desc)?;
                    let what = format!("index {} of {}", desc.digest(), record.name);
                    desc = media::select_platform(&index, platform, &what)?.clone();
                }
                _ => {
                    return Err(Error::invalid(
                        format!("image {}", record.name),
                        format!(
                            "points at {} ({}), which is not a manifest or index",
                            desc.digest(),
                            desc.media_type()
                        ),
                    ))
                }
            }
        }
        Err(Error::invalid(
            format!("image {}", record.name),
            "indexes nested too deeply",
        ))
    }

    /// Looks up `name` and resolves it for `platform`.
    pub fn image(&self, name: &str, platform: &PlatformSpec) -> Result<Image> {
        let record = self.get(name)?;
        self.resolve(&record, platform)
    }

    /// Every blob reachable from `desc` that is present in the store
    /// (children of an index that were never fetched are skipped), with
    /// problems (missing or unreadable blobs of present manifests) reported.
    pub fn reachable(
        &self,
        desc: &Descriptor,
        out: &mut HashMap<Digest, Descriptor>,
        problems: &mut Vec<String>,
    ) {
        if out.contains_key(desc.digest()) {
            return;
        }
        if !self.content.exists(desc.digest()) {
            problems.push(format!(
                "blob {} ({}) is missing",
                desc.digest(),
                desc.media_type()
            ));
            return;
        }
        out.insert(desc.digest().clone(), desc.clone());
        match kind(desc.media_type()) {
            Kind::Index => match self.read_index(desc) {
                Ok(index) => {
                    for child in index.manifests() {
                        if self.content.exists(child.digest()) {
                            self.reachable(child, out, problems);
                        }
                    }
                }
                Err(e) => problems.push(e.to_string()),
            },
            Kind::Manifest => match self.read_manifest(desc) {
                Ok(m) => {
                    self.reachable(m.config(), out, problems);
                    for layer in m.layers() {
                        self.reachable(layer, out, problems);
                    }
                }
                Err(e) => problems.push(e.to_string()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_tags_are_all_recorded() {
        let root = tempfile::tempdir().unwrap();
        let images = Images::open(root.path()).unwrap();
        let info = images.content().put_bytes(b"{}", "test").unwrap();
        let target = descriptor(MediaType::ImageManifest, &info);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let images = images.clone();
                let target = target.clone();
                std::thread::spawn(move || {
                    let name = Reference::parse(&format!("example.com/app:v{i}")).unwrap();
                    images.put(&[(name, target)]).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(images.list().unwrap().len(), 8);
        let by_digest = format!("example.com/app@{}", info.digest);
        assert_eq!(
            images.get(&by_digest).unwrap().target.digest(),
            &info.digest
        );
        assert!(images
            .get(&format!("example.com/other@{}", info.digest))
            .is_err());
        images.remove("example.com/app:v3").unwrap();
        assert!(matches!(
            images.get("example.com/app:v3"),
            Err(Error::NotFound(_))
        ));
        assert_eq!(images.list().unwrap().len(), 7);
    }
}
