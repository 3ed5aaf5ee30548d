//! Push: every blob of a local image the registry lacks (a HEAD first; a
//! cross-repository mount when the image came from another repository of
//! the same registry; else a monolithic or chunked upload), then the
//! manifests, then the index or manifest under each tag.

use futures::StreamExt;
use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode, Url};

use berth_image::media::{self, Kind, PlatformSpec};
use berth_image::{Images, Reference};

use crate::client::{file_body, status_error, transient, Registry, Scope};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, State};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Tags to put the image under besides the destination's own.
    pub extra_tags: Vec<String>,
    /// Upload blobs larger than this in PATCH chunks of this size (`None`:
    /// one monolithic PUT per blob).
    pub chunk_size: Option<u64>,
    /// Blobs uploaded at once.
    pub max_concurrent: usize,
    /// For an index some of whose manifests were never pulled: the
    /// platform whose manifest is pushed instead.
    pub platform: PlatformSpec,
    /// Times a failed chunk is resumed from the server's Range.
    pub retries: u32,
    /// Also push the local referrers (signatures, SBOMs) of every pushed
    /// manifest and index, and theirs, after them.
    pub referrers: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            extra_tags: Vec::new(),
            chunk_size: None,
            max_concurrent: 3,
            platform: PlatformSpec::host(),
            retries: 3,
            referrers: false,
        }
    }
}

/// A document to PUT: its descriptor and bytes.
pub(crate) struct Document {
    pub(crate) desc: Descriptor,
    pub(crate) data: Vec<u8>,
}

/// Pushes the local image `source` to `dest` (whose tag, plus
/// `extra_tags`, it is put under), then, with [`PushOptions::referrers`],
/// the local referrers of what it pushed; returns the pushed manifest or
/// index digest.
pub async fn push(
    images: &Images,
    registry: &Registry,
    source: &str,
    dest: &Reference,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let _lease = images.content().lease()?;
    let record = images.get(source)?;
    let content = images.content();
    let mut target = record.target.clone();
    if media::kind(target.media_type()) == Kind::Index {
        let index = images.read_index(&target)?;
        let complete = index.manifests().iter().all(|m| content.exists(m.digest()));
        if !complete {
            // Only one platform was pulled: push its manifest.
            target = images
                .resolve(&record, &options.platform)?
                .manifest_descriptor;
        }
    }
    // Manifests below the target (children first), and every blob.
    let mut manifests: Vec<Document> = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    collect(images, &target, &mut manifests, &mut blobs, 0)?;

    let repo = dest.path();
    let mount_from = (record.name.domain() == dest.domain() && record.name.path() != repo)
        .then(|| record.name.path().to_string());
    let scope = match &mount_from {
        Some(from) => Scope::repository(repo, "pull,push").and_pull(from),
        None => Scope::repository(repo, "pull,push"),
    };
    let up = Upload {
        registry,
        repo,
        scope: &scope,
        mount_from: mount_from.as_deref(),
        options,
        progress,
    };
    let results: Vec<Result<()>> = futures::stream::iter(blobs.iter())
        .map(|b| async {
            let path = content.blob_path(b.digest())?;
            up.blob(b, &path).await
        })
        .buffer_unordered(options.max_concurrent.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;

    let top = manifests.pop().expect("collect always adds the target");
    for m in &manifests {
        registry
            .put_manifest(
                repo,
                m.desc.digest().as_ref(),
                m.desc.media_type().as_ref(),
                &m.data,
            )
            .await?;
    }
    let mut tags: Vec<String> = dest.tag().map(str::to_string).into_iter().collect();
    tags.extend(options.extra_tags.iter().cloned());
    if tags.is_empty() {
        tags.push(top.desc.digest().to_string());
    }
    for tag in &tags {
        if !berth_core::name::valid_tag(tag) && berth_core::digest::parse(tag).is_err() {
            return Err(Error::invalid(
                format!("tag {tag:?}"),
                "letters, digits, _ . - (at most 128, not starting with . or -)",
            ));
        }
        registry
            .put_manifest(repo, tag, top.desc.media_type().as_ref(), &top.data)
            .await?;
    }
    if options.referrers {
        let subjects: Vec<Digest> = manifests
            .iter()
            .chain(std::iter::once(&top))
            .map(|m| m.desc.digest().clone())
            .collect();
        crate::referrer_copy::push_referrers(images, &up, &subjects).await?;
    }
    Ok(top.desc.digest().clone())
}

/// Adds `desc`'s manifests (children before parents, `desc` last) and blobs.
pub(crate) fn collect(
    images: &Images,
    desc: &Descriptor,
    manifests: &mut Vec<Document>,
    blobs: &mut Vec<Descriptor>,
    depth: usize,
) -> Result<()> {
    if depth > 4 {
        return Err(Error::invalid(
            format!("index {}", desc.digest()),
            "indexes nested too deeply",
        ));
    }
    let data = images
        .content()
        .read_blob(desc.digest(), crate::client::MAX_MANIFEST as u64)?;
    match media::kind(desc.media_type()) {
        Kind::Index => {
            let index = images.read_index(desc)?;
            for child in index.manifests() {
                collect(images, child, manifests, blobs, depth + 1)?;
            }
        }
        Kind::Manifest => {
            let m = images.read_manifest(desc)?;
            for b in std::iter::once(m.config()).chain(m.layers()) {
                if !blobs.iter().any(|x| x.digest() == b.digest()) {
                    blobs.push(b.clone());
                }
            }
        }
        _ => {
            return Err(Error::invalid(
                format!("{}", desc.digest()),
                format!(
                    "media type {} is not a manifest or index",
                    desc.media_type()
                ),
            ))
        }
    }
    manifests.push(Document {
        desc: desc.clone(),
        data,
    });
    Ok(())
}

/// The blob uploads of one push.
pub(crate) struct Upload<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) repo: &'a str,
    pub(crate) scope: &'a Scope,
    pub(crate) mount_from: Option<&'a str>,
    pub(crate) options: &'a PushOptions,
    pub(crate) progress: &'a dyn Progress,
}

impl Upload<'_> {
    /// Uploads the blob `desc` whose bytes are the file at `path`, unless
    /// the repository has it or it can be mounted.
    pub(crate) async fn blob(&self, desc: &Descriptor, path: &std::path::Path) -> Result<()> {
        let digest = desc.digest();
        let event = |state| {
            self.progress.event(Event::Blob {
                digest: digest.clone(),
                size: desc.size(),
                state,
            })
        };
        if self
            .registry
            .has_blob(self.repo, digest, self.scope)
            .await?
        {
            event(State::Exists);
            return Ok(());
        }
        let mount = self.mount_from.map(|from| (digest, from));
        let Some(url) = self
            .registry
            .start_upload(self.repo, mount, self.scope)
            .await?
        else {
            event(State::Mounted);
            return Ok(());
        };
        event(State::Transferring);
        let url = match self.options.chunk_size {
            Some(chunk) if desc.size() > chunk => {
                self.chunks(url, path, digest, desc.size(), chunk).await?
            }
            _ => url,
        };
        let mut put = url.clone();
        put.query_pairs_mut().append_pair("digest", digest.as_ref());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let monolithic = self.options.chunk_size.is_none_or(|c| desc.size() <= c);
        if monolithic {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(desc.size()));
        } else {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
        }
        let resp = self
            .registry
            .send(self.scope, Method::PUT, put.clone(), headers, &|| {
                if monolithic {
                    file_body(path).map(Some)
                } else {
                    Ok(None)
                }
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(status_error(&format!("PUT {put} (blob {digest})"), resp).await);
        }
        event(State::Done);
        Ok(())
    }

    /// PATCHes the blob at `path` in chunks; a failed chunk resumes from
    /// the offset the server reports. Returns the URL to finish the upload at.
    async fn chunks(
        &self,
        mut url: Url,
        path: &std::path::Path,
        digest: &Digest,
        size: u64,
        chunk: u64,
    ) -> Result<Url> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut offset = 0u64;
        let mut failures = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| Error::io(path, e))?;
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("{offset}-{}", offset + len - 1)).expect("digits"),
            );
            let body = bytes::Bytes::from(buf);
            let sent = self
                .registry
                .send(self.scope, Method::PATCH, url.clone(), headers, &|| {
                    Ok(Some(body.clone().into()))
                })
                .await;
            let outcome = match sent {
                Ok(r) if r.status() == StatusCode::ACCEPTED => Ok(r),
                Ok(r) => Err(status_error(&format!("PATCH {url}"), r).await),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => {
                    url = self.registry.location(&url, &r)?;
                    offset += len;
                    self.progress.event(Event::Bytes {
                        digest: digest.clone(),
                        done: offset,
                    });
                }
                Err(e) if transient(&e) && failures < self.options.retries => {
                    failures += 1;
                    (offset, url) = self.upload_offset(&url).await?;
                    if offset > size {
                        return Err(Error::invalid(
                            format!("upload {url} of blob {digest}"),
                            format!("the registry claims {offset} bytes of a {size}-byte blob"),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(url)
    }

    /// How much of an upload the server holds (GET on the session: `Range:
    /// 0-N`), and where to continue it (its `Location`, else `url`).
    async fn upload_offset(&self, url: &Url) -> Result<(u64, Url)> {
        let resp = self
            .registry
            .send(
                self.scope,
                Method::GET,
                url.clone(),
                HeaderMap::new(),
                &|| Ok(None),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(&format!("GET {url}"), resp).await);
        }
        let next = match resp.headers().contains_key(reqwest::header::LOCATION) {
            true => self.registry.location(url, &resp)?,
            false => url.clone(),
        };
        let range = resp
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0-0");
        let end = range
            .rsplit('-')
            .next()
            .and_then(|e| e.parse::<u64>().ok())
            .ok_or_else(|| Error::invalid(format!("GET {url}"), format!("bad Range {range:?}")))?;
        // Saturating: a claim of u64::MAX bytes fails the caller's size check.
        let offset = if range == "0-0" {
            0
        } else {
            end.saturating_add(1)
        };
        tracing::debug!("upload {url} resumes at byte {offset}");
        Ok((offset, next))
    }
}
