//! The registry's data model on top of a [`Driver`]: blobs shared across
//! repositories, per-repository links, manifests, tags, referrers and
//! upload sessions.
//!
//! Layout (keys relative to the driver root):
//!
//! ```text
//! blobs/<alg>/<hex>                                  content (layers, configs, manifests), stored once
//! repos/<name>/_layers/<alg>/<hex>                   empty link: the repository holds this blob
//! repos/<name>/_manifests/revisions/<alg>/<hex>      link to a manifest; content is its media type
//! repos/<name>/_manifests/tags/<tag>                 the tagged manifest's digest
//! repos/<name>/_referrers/<alg>/<hex>/<alg>-<hex>    descriptor JSON of a manifest whose subject is <alg>:<hex>
//! uploads/<id>/info                                  JSON state of an upload session (see `sessions`)
//! uploads/<id>/data-<n>                              the bytes one request appended to it
//! ```
//!
//! Repository components cannot start with `_`, so link directories never
//! collide with nested repository names.
//!
//! Upload sessions keep their whole state in storage, hash state included,
//! so any replica sharing the storage serves any request of an upload; see
//! the `sessions` module.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::digest::{digest_of, sha256_of};
use bytes::Bytes;
use oci_spec::image::{Digest, ImageIndex, ImageManifest};

use crate::digest::{self, is_tag};
use crate::error::{Code, Error, Result};
use crate::storage::{ByteStream, Driver};

mod holds;
mod sessions;
pub use sessions::{blob_too_large, Session};

/// Largest manifest accepted (4 MiB, as the spec suggests).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Media types of image manifests whose blobs are validated.
const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Media types of indexes whose child manifests are validated.
const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Blob key.
pub fn blob_key(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.digest())
}
fn layer_key(repo: &str, d: &Digest) -> String {
    format!("repos/{repo}/_layers/{}/{}", d.algorithm(), d.digest())
}
fn revision_key(repo: &str, d: &Digest) -> String {
    format!(
        "repos/{repo}/_manifests/revisions/{}/{}",
        d.algorithm(),
        d.digest()
    )
}
fn tag_key(repo: &str, tag: &str) -> String {
    format!("repos/{repo}/_manifests/tags/{tag}")
}
fn referrers_dir(repo: &str, subject: &Digest) -> String {
    format!(
        "repos/{repo}/_referrers/{}/{}",
        subject.algorithm(),
        subject.digest()
    )
}

/// The repository store shared by all handlers.
pub struct Store {
    /// The storage backend.
    pub driver: Arc<dyn Driver>,
    sessions: Arc<Mutex<sessions::Sessions>>,
    /// Largest blob accepted, if limited (`limits.max_blob_size`).
    pub max_blob_size: Option<u64>,
    /// Upload sessions one repository may have open at once
    /// (`limits.max_uploads_per_repo`).
    pub max_uploads_per_repo: u64,
    /// An upload session no request used for this long is removed by
    /// [`Store::expire_uploads`] (`limits.upload_idle_timeout_secs`).
    pub upload_idle_timeout: Duration,
    /// A reference refreshes a blob's GC clock when it is older than this
    /// (well under the GC grace period; saves a write per hot read).
    pub touch_after: Duration,
}

/// A manifest read from the store.
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub body: Bytes,
}

/// The outcome of a manifest PUT.
pub struct PutManifest {
    /// Digest of the stored manifest.
    pub digest: Digest,
    /// The subject's digest when the manifest has one.
    pub subject: Option<String>,
}

impl Store {
    /// A store over `driver`.
    pub fn new(driver: Arc<dyn Driver>) -> Store {
        Store {
            driver,
            sessions: Arc::new(Mutex::new(sessions::Sessions::default())),
            max_blob_size: None,
            max_uploads_per_repo: u64::MAX,
            upload_idle_timeout: Duration::from_secs(3600),
            touch_after: Duration::from_secs(10),
        }
    }

    /// Size of blob `d` in `repo`, or BLOB_UNKNOWN. Refreshes the blob's
    /// GC clock, since a client that sees it will reference it.
    pub async fn blob_size(&self, repo: &str, d: &Digest) -> Result<u64> {
        let unknown = || {
            Error::new(
                Code::BlobUnknown,
                format!("blob {d} is not in repository {repo}: push it first"),
            )
        };
        self.linked_size(repo, d).await?.ok_or_else(unknown)
    }

    /// Size of blob `d` if `repo` links it, holding both the link and the
    /// blob against GC (see [`holds`]).
    async fn linked_size(&self, repo: &str, d: &Digest) -> Result<Option<u64>> {
        if self.hold(&layer_key(repo, d)).await?.is_none() {
            return Ok(None);
        }
        Ok(self.hold(&blob_key(d)).await?.map(|m| m.size))
    }

    /// A stream of `len` bytes of blob `d` from `offset`.
    pub async fn blob_reader(&self, d: &Digest, offset: u64, len: u64) -> Result<ByteStream> {
        Ok(self.driver.reader(&blob_key(d), offset, len).await?)
    }

    /// Removes blob `d` from `repo` (the content goes when GC finds it unused).
    pub async fn blob_delete(&self, repo: &str, d: &Digest) -> Result<()> {
        let key = layer_key(repo, d);
        if self.driver.stat(&key).await?.is_none() {
            return Err(Error::new(
                Code::BlobUnknown,
                format!("blob {d} is not in repository {repo}"),
            ));
        }
        self.driver.delete(&key).await?;
        Ok(())
    }

    /// Stores `data` as `key` unless it exists, holding it against GC
    /// either way (a new object's clock is fresh).
    async fn hold_or_put(&self, key: &str, data: Bytes) -> Result<()> {
        if self.hold(key).await?.is_none() {
            self.driver.put(key, data).await?;
        }
        Ok(())
    }

    /// Creates (or refreshes) `repo`'s link to blob `d`, durably.
    async fn put_link(&self, repo: &str, d: &Digest) -> Result<()> {
        self.hold_or_put(&layer_key(repo, d), Bytes::new()).await
    }

    /// Cross-repository mount: links `d` into `repo` if `from` has it (or,
    /// with no `from`, if the registry has it at all). Returns false when
    /// the blob is not available, so the caller starts a normal upload.
    pub async fn mount(&self, repo: &str, d: &Digest, from: Option<&str>) -> Result<bool> {
        if let Some(from) = from {
            if self.driver.stat(&layer_key(from, d)).await?.is_none() {
                return Ok(false);
            }
        }
        if self.hold(&blob_key(d)).await?.is_none() {
            return Ok(false);
        }
        self.put_link(repo, d).await?;
        Ok(true)
    }

    /// Resolves `reference` (tag or digest) in `repo` to a digest.
    pub async fn resolve(&self, repo: &str, reference: &str) -> Result<Digest> {
        if reference.contains(':') {
            return digest::parse(reference);
        }
        if !is_tag(reference) {
            // No manifest can have this name: reading it finds nothing (404,
            // as the OCI conformance suite expects); a PUT to it is refused
            // as invalid by `manifest_put`.
            return Err(Error::new(
                Code::ManifestUnknown,
                format!("reference {reference:?} is neither a tag nor a digest, so repository {repo} has no such manifest"),
            ));
        }
        let raw = self
            .driver
            .get(&tag_key(repo, reference))
            .await?
            .ok_or_else(|| {
                Error::new(
                    Code::ManifestUnknown,
                    format!("tag {reference:?} does not exist in repository {repo}"),
                )
            })?;
        digest::parse(String::from_utf8_lossy(&raw).trim())
    }

    /// The media type of manifest `d` in `repo`, or MANIFEST_UNKNOWN.
    pub async fn manifest_media_type(&self, repo: &str, d: &Digest) -> Result<String> {
        let raw = self
            .driver
            .get(&revision_key(repo, d))
            .await?
            .ok_or_else(|| {
                Error::new(
                    Code::ManifestUnknown,
                    format!("manifest {d} is not in repository {repo}"),
                )
            })?;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    /// Reads the manifest `reference` of `repo`.
    pub async fn manifest_get(&self, repo: &str, reference: &str) -> Result<Manifest> {
        let digest = self.resolve(repo, reference).await?;
        let media_type = self.manifest_media_type(repo, &digest).await?;
        let body = self.driver.get(&blob_key(&digest)).await?.ok_or_else(|| {
            Error::new(
                Code::ManifestUnknown,
                format!(
                    "manifest {digest} of repository {repo} has no content (garbage-collected?)"
                ),
            )
        })?;
        Ok(Manifest {
            digest,
            media_type,
            body,
        })
    }

    async fn require_blob(&self, repo: &str, d: &str, what: &str) -> Result<Digest> {
        let digest = digest::parse(d).map_err(|_| {
            Error::new(
                Code::ManifestInvalid,
                format!("{what} has an invalid digest {d:?}"),
            )
        })?;
        let missing = || {
            Error::new(
                Code::ManifestBlobUnknown,
                format!("{what} {digest} is not in repository {repo}: push the blob before the manifest"),
            )
        };
        self.linked_size(repo, &digest).await?.ok_or_else(missing)?;
        Ok(digest)
    }

    /// Validates and stores a manifest under `reference` (a tag or its
    /// digest) and the extra `tags`.
    pub async fn manifest_put(
        &self,
        repo: &str,
        reference: &str,
        content_type: Option<&str>,
        body: Bytes,
        tags: &[String],
    ) -> Result<PutManifest> {
        if body.len() > MAX_MANIFEST {
            return Err(Error::with_status(
                Code::SizeInvalid,
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "manifest is {} bytes; the limit is {MAX_MANIFEST} bytes (4 MiB)",
                    body.len()
                ),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                Code::ManifestInvalid,
                format!("manifest is not valid JSON: {e}"),
            )
        })?;
        let body_type = value.get("mediaType").and_then(|v| v.as_str());
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| !c.is_empty());
        if let (Some(b), Some(c)) = (body_type, content_type) {
            if b != c {
                return Err(Error::new(
                    Code::ManifestInvalid,
                    format!("manifest mediaType {b:?} differs from the Content-Type header {c:?}"),
                ));
            }
        }
        let media_type = body_type
            .or(content_type)
            .ok_or_else(|| {
                Error::new(
                    Code::ManifestInvalid,
                    "manifest has no mediaType field and the request no Content-Type header",
                )
            })?
            .to_string();
        // Served back as the GET's Content-Type: a value no header can
        // carry would make the manifest unreadable.
        if !berth_core::name::valid_media_type(&media_type) {
            return Err(Error::new(
                Code::ManifestInvalid,
                format!("manifest media type {media_type:?} is invalid: a media type is TYPE/SUBTYPE of letters, digits and !#$&-^_.+ (e.g. application/vnd.oci.image.manifest.v1+json)"),
            ));
        }
        let mut digest = sha256_of(&body);
        if reference.contains(':') {
            let given = digest::parse(reference)?;
            let actual = digest_of(given.algorithm(), &body)?;
            if actual != given {
                return Err(Error::new(
                    Code::DigestInvalid,
                    format!("manifest content has digest {actual}, not {given} as in the URL"),
                ));
            }
            digest = actual;
        } else if !is_tag(reference) {
            return Err(Error::new(
                Code::ManifestInvalid,
                format!("tag {reference:?} is invalid: use [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"),
            ));
        }
        for t in tags {
            if !is_tag(t) {
                return Err(Error::new(
                    Code::ManifestInvalid,
                    format!(
                        "tag parameter {t:?} is invalid: use [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
                    ),
                ));
            }
        }
        let mut subject = None;
        let mut artifact_type = None;
        let annotations = value.get("annotations").cloned();
        if MANIFEST_TYPES.contains(&media_type.as_str()) {
            let m: ImageManifest = serde_json::from_value(value.clone()).map_err(|e| {
                Error::new(
                    Code::ManifestInvalid,
                    format!("image manifest is invalid: {e}"),
                )
            })?;
            let mut required = vec![(m.config().digest().as_ref(), "config blob")];
            required.extend(
                m.layers()
                    .iter()
                    // Foreign layers are fetched from their URLs.
                    .filter(|l| l.urls().as_ref().is_none_or(|u| u.is_empty()))
                    .map(|l| (l.digest().as_ref(), "layer")),
            );
            // Checked side by side; the first missing one in manifest order
            // is reported.
            let checks = futures::future::join_all(
                required
                    .iter()
                    .map(|(d, what)| self.require_blob(repo, d, what)),
            )
            .await;
            for check in checks {
                check?;
            }
            subject = m.subject().as_ref().map(|s| s.digest().to_string());
            artifact_type = Some(
                m.artifact_type()
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| m.config().media_type().to_string()),
            );
        } else if INDEX_TYPES.contains(&media_type.as_str()) {
            let idx: ImageIndex = serde_json::from_value(value.clone()).map_err(|e| {
                Error::new(
                    Code::ManifestInvalid,
                    format!("image index is invalid: {e}"),
                )
            })?;
            for child in idx.manifests() {
                let cd = digest::parse(child.digest().as_ref())?;
                if self.driver.stat(&revision_key(repo, &cd)).await?.is_none() {
                    return Err(Error::new(
                        Code::ManifestBlobUnknown,
                        format!("index references manifest {cd}, which is not in repository {repo}: push it first"),
                    ));
                }
            }
            subject = idx.subject().as_ref().map(|s| s.digest().to_string());
            artifact_type = idx.artifact_type().as_ref().map(|a| a.to_string());
        } else if media_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
            return Err(Error::new(
                Code::ManifestInvalid,
                format!("manifest type {media_type} (Docker schema 1) is not supported: push an OCI or Docker schema 2 manifest"),
            ));
        }
        // The subject is indexed after the manifest is stored: a digest
        // that cannot be indexed is refused before anything is written.
        let subject_digest = subject
            .as_deref()
            .map(|s| {
                digest::parse(s).map_err(|e| {
                    Error::new(
                        Code::ManifestInvalid,
                        format!("manifest subject has an unusable digest: {e}"),
                    )
                })
            })
            .transpose()?;
        // Content and revision link are written side by side (their fsyncs
        // overlap); tags and referrers only once both are durable, so a tag
        // never names a manifest a crash could lose.
        let key = blob_key(&digest);
        let store_blob = self.hold_or_put(&key, body.clone());
        let revision = revision_key(repo, &digest);
        // Held first, so that a GC deleting an old revision of the same
        // manifest (untagged) cannot remove the one written here.
        let store_revision = async {
            self.hold(&revision).await?;
            self.driver
                .put(&revision, Bytes::from(media_type.clone()))
                .await?;
            Ok::<(), Error>(())
        };
        let (stored, revised) = tokio::join!(store_blob, store_revision);
        stored?;
        revised?;
        if let Some(sd) = &subject_digest {
            let mut desc = serde_json::json!({
                "mediaType": media_type,
                "digest": digest.to_string(),
                "size": body.len(),
            });
            if let Some(a) = &artifact_type {
                desc["artifactType"] = a.clone().into();
            }
            if let Some(a) = annotations {
                desc["annotations"] = a;
            }
            self.driver
                .put(
                    &format!(
                        "{}/{}-{}",
                        referrers_dir(repo, sd),
                        digest.algorithm(),
                        digest.digest()
                    ),
                    Bytes::from(desc.to_string()),
                )
                .await?;
        }
        let mut all_tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        if !reference.contains(':') {
            all_tags.push(reference);
        }
        let target = Bytes::from(digest.to_string());
        let tag_keys: Vec<String> = all_tags.into_iter().map(|t| tag_key(repo, t)).collect();
        futures::future::try_join_all(tag_keys.iter().map(|k| self.driver.put(k, target.clone())))
            .await?;
        Ok(PutManifest { digest, subject })
    }

    /// Deletes a tag, or a manifest by digest (with its tags and its entry
    /// in its subject's referrers).
    pub async fn manifest_delete(&self, repo: &str, reference: &str) -> Result<()> {
        if !reference.contains(':') {
            let key = tag_key(repo, reference);
            if !is_tag(reference) || self.driver.stat(&key).await?.is_none() {
                return Err(Error::new(
                    Code::ManifestUnknown,
                    format!("tag {reference:?} does not exist in repository {repo}"),
                ));
            }
            self.driver.delete(&key).await?;
            return Ok(());
        }
        let d = digest::parse(reference)?;
        let manifest = self.manifest_get(repo, reference).await?;
        for t in self.tags(repo).await.unwrap_or_default() {
            if let Ok(td) = self.resolve(repo, &t).await {
                if td == d {
                    self.driver.delete(&tag_key(repo, &t)).await?;
                }
            }
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&manifest.body) {
            if let Some(s) = v
                .pointer("/subject/digest")
                .and_then(|s| s.as_str())
                .and_then(|s| digest::parse(s).ok())
            {
                self.driver
                    .delete(&format!(
                        "{}/{}-{}",
                        referrers_dir(repo, &s),
                        d.algorithm(),
                        d.digest()
                    ))
                    .await?;
            }
        }
        self.driver.delete(&revision_key(repo, &d)).await?;
        Ok(())
    }

    /// True if the repository exists.
    pub async fn repo_exists(&self, repo: &str) -> Result<bool> {
        Ok(self.driver.stat(&format!("repos/{repo}")).await?.is_some())
    }

    /// Tags of `repo` in lexical order, or NAME_UNKNOWN.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        if !self.repo_exists(repo).await? {
            return Err(Error::new(
                Code::NameUnknown,
                format!("repository {repo} does not exist"),
            ));
        }
        let mut tags = self
            .driver
            .list(&format!("repos/{repo}/_manifests/tags"))
            .await?;
        tags.sort();
        Ok(tags)
    }

    /// Every repository that has manifests, in lexical order.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(prefix) = stack.pop() {
            let dir = if prefix.is_empty() {
                "repos".to_string()
            } else {
                format!("repos/{prefix}")
            };
            for child in self.driver.list(&dir).await? {
                if child == "_manifests" {
                    out.push(prefix.clone());
                } else if !child.starts_with('_') {
                    stack.push(if prefix.is_empty() {
                        child
                    } else {
                        format!("{prefix}/{child}")
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`,
    /// optionally only those of `artifact_type`.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<serde_json::Value>> {
        let dir = referrers_dir(repo, subject);
        let mut out = Vec::new();
        for name in self.driver.list(&dir).await? {
            let Some(raw) = self.driver.get(&format!("{dir}/{name}")).await? else {
                continue;
            };
            let Ok(desc) = serde_json::from_slice::<serde_json::Value>(&raw) else {
                continue;
            };
            if let Some(want) = artifact_type {
                if desc.get("artifactType").and_then(|a| a.as_str()) != Some(want) {
                    continue;
                }
            }
            out.push(desc);
        }
        Ok(out)
    }

    /// Every repository name (for GC).
    pub(crate) async fn repos(&self) -> Result<Vec<String>> {
        self.catalog().await
    }

    /// Digests of the manifests stored in `repo` (for GC).
    pub(crate) async fn revisions(&self, repo: &str) -> Result<Vec<Digest>> {
        self.list_digests(&format!("repos/{repo}/_manifests/revisions"))
            .await
    }

    /// Digests of the blobs linked into `repo` (for GC).
    pub(crate) async fn layer_links(&self, repo: &str) -> Result<Vec<Digest>> {
        self.list_digests(&format!("repos/{repo}/_layers")).await
    }

    /// Digests of every stored blob (for GC).
    pub(crate) async fn all_blobs(&self) -> Result<Vec<Digest>> {
        self.list_digests("blobs").await
    }

    async fn list_digests(&self, dir: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in self.driver.list(dir).await? {
            for hex in self.driver.list(&format!("{dir}/{alg}")).await? {
                if let Ok(d) = digest::parse(&format!("{alg}:{hex}")) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Key of the link of blob `d` in `repo` (for GC).
    pub(crate) fn layer_link_key(repo: &str, d: &Digest) -> String {
        layer_key(repo, d)
    }

    /// Key of manifest `d`'s revision link in `repo` (for GC).
    pub(crate) fn revision_link_key(repo: &str, d: &Digest) -> String {
        revision_key(repo, d)
    }
}
