//! S3-compatible object storage behind the [`Driver`] interface, with the
//! `object_store` crate.
//!
//! Mapping:
//! - objects are keys under an optional prefix; "directories" are key prefixes
//!   (`stat` of a prefix with objects under it reports it as present);
//! - S3 has no append, so an [`Appender`] stores each write as its own object
//!   `<key>/<offset, 20 digits>`; `stat` and `reader` see the parts as one
//!   object, so an upload survives a restart like on the filesystem;
//! - `concat` of a single object is copy + delete; of parts, one multipart
//!   upload of their concatenation (the parts are read back once, at commit);
//! - `list` reports a prefix only when an object lies under it (one extra
//!   request per prefix; some servers keep emptied "directories");
//! - `touch` copies the object onto itself (S3 keeps no settable mtime), or
//!   through a temporary key when the server refuses a self-copy.
//!
//! Limits: path-style addressing only.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};
use serde::Deserialize;

use super::{random_hex, Appender, ByteStream, Driver, Meta, Precondition, Unavailable, Version};

/// S3 settings in the config file (`storage.s3`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:3900`.
    pub endpoint: String,
    /// Bucket (must exist).
    pub bucket: String,
    /// Region name the server expects.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Key prefix inside the bucket (so several registries can share one).
    #[serde(default)]
    pub prefix: String,
    /// Longest wait for one S3 request, retries included, before the
    /// registry answers `503` (seconds).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

fn default_region() -> String {
    "us-east-1".into()
}

/// A [`Driver`] over an S3 bucket.
#[derive(Debug)]
pub struct S3Driver {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

fn io_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            io::Error::new(io::ErrorKind::NotFound, e.to_string())
        }
        other => io::Error::other(Unavailable(format!("S3 storage: {other}"))),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn meta_of(objects: &[ObjectMeta]) -> Option<Meta> {
    let newest = objects.iter().map(|o| o.last_modified).max()?;
    Some(Meta {
        size: objects.iter().map(|o| o.size).sum(),
        modified: SystemTime::from(newest),
    })
}

impl S3Driver {
    /// Connects to the bucket described by `cfg` (no request is made yet).
    pub fn new(cfg: &S3Config) -> io::Result<S3Driver> {
        // reqwest is built without a crypto provider; use ring, like the
        // server's TLS. An already installed provider is fine.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let store = AmazonS3Builder::new()
            .with_endpoint(&cfg.endpoint)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
            .with_virtual_hosted_style_request(false)
            // A lost server must not hold requests for object_store's
            // default of 3 minutes of retries: fail within the timeout,
            // so the registry answers 503 and a load balancer moves on.
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2).min(timeout))
                    .with_timeout(timeout),
            )
            // After the client options, which would reset it.
            .with_allow_http(cfg.endpoint.starts_with("http://"))
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: timeout,
                ..Default::default()
            })
            .build()
            .map_err(|e| {
                io::Error::other(format!("S3 storage config (bucket {}): {e}", cfg.bucket))
            })?;
        Ok(S3Driver {
            store: Arc::new(store),
            prefix: cfg.prefix.trim_matches('/').to_string(),
        })
    }

    fn key(&self, path: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(path)
        } else {
            Path::from(format!("{}/{path}", self.prefix))
        }
    }

    /// The object at `path` alone, or else the objects directly under
    /// `path/` sorted by key (an appended object's parts), and whether
    /// `path/` has deeper "directories".
    async fn parts(&self, path: &str) -> io::Result<(Vec<ObjectMeta>, bool)> {
        match self.store.head(&self.key(path)).await {
            Ok(m) => return Ok((vec![m], false)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(io_err(e)),
        }
        let r = self
            .store
            .list_with_delimiter(Some(&self.key(path)))
            .await
            .map_err(io_err)?;
        let mut parts = r.objects;
        parts.sort_by(|a, b| a.location.cmp(&b.location));
        Ok((parts, !r.common_prefixes.is_empty()))
    }
}

struct S3Appender {
    store: Arc<dyn ObjectStore>,
    base: Path,
    offset: u64,
}

#[async_trait]
impl Appender for S3Appender {
    async fn write(&mut self, parts: Vec<Bytes>) -> io::Result<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len == 0 {
            return Ok(());
        }
        let key = Path::from(format!("{}/{:020}", self.base, self.offset));
        self.store
            .put(&key, parts.into_iter().collect::<PutPayload>())
            .await
            .map_err(io_err)?;
        self.offset += len;
        Ok(())
    }
    async fn sync(&mut self) -> io::Result<()> {
        Ok(()) // every part is durable once its PUT returned
    }
}

impl S3Driver {
    /// Writes the concatenation of `parts` to `to` with one multipart upload.
    async fn concatenate(&self, parts: &[ObjectMeta], to: &str) -> io::Result<()> {
        let upload = self
            .store
            .put_multipart(&self.key(to))
            .await
            .map_err(io_err)?;
        let mut w = WriteMultipart::new(upload);
        for p in parts {
            let data = self
                .store
                .get(&p.location)
                .await
                .map_err(io_err)?
                .bytes()
                .await
                .map_err(io_err)?;
            w.wait_for_capacity(4).await.map_err(io_err)?;
            w.put(data);
        }
        w.finish().await.map(|_| ()).map_err(io_err)
    }
}

#[async_trait]
impl Driver for S3Driver {
    async fn stat(&self, path: &str) -> io::Result<Option<Meta>> {
        let (parts, dirs) = self.parts(path).await?;
        Ok(meta_of(&parts).or(dirs.then_some(Meta {
            size: 0,
            modified: SystemTime::UNIX_EPOCH,
        })))
    }

    async fn get(&self, path: &str) -> io::Result<Option<Bytes>> {
        match self.store.get(&self.key(path)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(io_err)?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn put(&self, path: &str, data: Bytes) -> io::Result<()> {
        self.store
            .put(&self.key(path), PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(io_err)
    }

    async fn get_versioned(&self, path: &str) -> io::Result<Option<(Bytes, Version)>> {
        let r = match self.store.get(&self.key(path)).await {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        let etag = r.meta.e_tag.clone().ok_or_else(|| {
            io::Error::other(format!(
                "S3 storage: the server sent no ETag for {path}; conditional writes need one"
            ))
        })?;
        Ok(Some((r.bytes().await.map_err(io_err)?, Version(etag))))
    }

    async fn put_if(
        &self,
        path: &str,
        data: Bytes,
        cond: &Precondition,
    ) -> io::Result<Option<Version>> {
        let mode = match cond {
            Precondition::Absent => PutMode::Create,
            Precondition::Matches(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.0.clone()),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.key(path), PutPayload::from(data), opts)
            .await
        {
            Ok(r) => match r.e_tag {
                Some(etag) => Ok(Some(Version(etag))),
                None => Err(io::Error::other(format!(
                    "S3 storage: the server sent no ETag for {path}; conditional writes need one"
                ))),
            },
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn concat(&self, from: &[String], to: &str) -> io::Result<()> {
        let mut parts = Vec::new();
        for f in from {
            parts.extend(self.parts(f).await?.0);
        }
        let single = parts.len() == 1 && from.len() == 1 && parts[0].location == self.key(&from[0]);
        if single {
            self.store
                .copy(&self.key(&from[0]), &self.key(to))
                .await
                .map_err(io_err)?;
        } else if let Err(e) = self.concatenate(&parts, to).await {
            // Some servers (Garage) cancel other multipart uploads of a key
            // when one completes. If a concurrent writer stored `to`, that
            // is the same as our concatenation followed by theirs.
            if self.store.head(&self.key(to)).await.is_err() {
                return Err(e);
            }
        }
        for f in from {
            self.delete(f).await?;
        }
        Ok(())
    }

    async fn reader(&self, path: &str, offset: u64, len: u64) -> io::Result<ByteStream> {
        let (parts, _) = self.parts(path).await?;
        if parts.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path} not found in S3"),
            ));
        }
        // The byte ranges of each part that fall inside [offset, offset+len).
        let end = offset + len;
        let mut pieces = Vec::new();
        let mut at = 0u64;
        for p in parts {
            let (start, stop) = (at, at + p.size);
            at = stop;
            if stop <= offset || start >= end || p.size == 0 {
                continue;
            }
            let from = offset.max(start) - start;
            let to = end.min(stop) - start;
            pieces.push((p.location, from..to));
        }
        let store = self.store.clone();
        let stream = futures::stream::iter(pieces)
            .then(move |(loc, range)| {
                let store = store.clone();
                async move {
                    let opts = GetOptions {
                        range: Some(GetRange::Bounded(range)),
                        ..Default::default()
                    };
                    let r = store.get_opts(&loc, opts).await.map_err(io_err)?;
                    Ok::<_, io::Error>(r.into_stream().map_err(io_err))
                }
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }

    async fn appender(&self, path: &str) -> io::Result<Box<dyn Appender>> {
        let offset = self.stat(path).await?.map_or(0, |m| m.size);
        Ok(Box::new(S3Appender {
            store: self.store.clone(),
            base: self.key(path),
            offset,
        }))
    }

    async fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let r = self
            .store
            .list_with_delimiter(Some(&self.key(path)))
            .await
            .map_err(io_err)?;
        // Some servers (SeaweedFS) keep a "directory" after its last object
        // is deleted; only prefixes with an object under them count.
        let mut dirs = Vec::new();
        for prefix in &r.common_prefixes {
            let mut under = self.store.list(Some(prefix));
            if under.next().await.transpose().map_err(io_err)?.is_some() {
                dirs.push(prefix);
            }
        }
        let mut out: Vec<String> = dirs
            .into_iter()
            .chain(r.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn delete(&self, path: &str) -> io::Result<()> {
        match self.store.delete(&self.key(path)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(io_err(e)),
        }
        let under: Vec<Path> = self
            .store
            .list(Some(&self.key(path)))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(io_err)?;
        for key in under {
            match self.store.delete(&key).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(())
    }

    async fn touch(&self, path: &str) -> io::Result<()> {
        let key = self.key(path);
        if self.store.copy(&key, &key).await.is_ok() {
            return Ok(());
        }
        let tmp = Path::from(format!("{key}.touch-{}", random_hex(6)));
        self.store.copy(&key, &tmp).await.map_err(io_err)?;
        let back = self.store.copy(&tmp, &key).await.map_err(io_err);
        let _ = self.store.delete(&tmp).await;
        back
    }
}
