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
//! uploads/<id>/info                                  JSON: repository, algorithm
//! uploads/<id>/data                                  bytes received so far
//! ```
//!
//! Repository components cannot start with `_`, so link directories never
//! collide with nested repository names.
//!
//! Upload hash state: the running hasher of an upload lives in memory while
//! the server runs, so no chunk is ever read back. After a restart the first
//! request that touches an old session re-hashes its data file once (sha2's
//! internal state has no portable serialisation).
//!
//! Upload limits: the sessions held in memory are counted per repository
//! (`max_uploads_per_repo`), and [`Store::expire_uploads`] removes those no
//! request has used for `upload_idle_timeout`. A session leaves storage
//! before memory, and requests check, once they hold its lock, that it is
//! still the one held ([`Store::is_current`]): a request racing with a
//! finish, cancel or expiry gets BLOB_UPLOAD_UNKNOWN.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_core::digest::{digest_of, sha256_of, Hasher};
use bytes::Bytes;
use futures::TryStreamExt;
use oci_spec::image::{Digest, DigestAlgorithm, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::{self, is_tag};
use crate::error::{Code, Error, Result};
use crate::storage::{Appender, ByteStream, Driver};

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

/// Persisted description of an upload session.
#[derive(Debug, Serialize, Deserialize)]
struct UploadInfo {
    repo: String,
}

/// An upload in progress: its running hash and size.
pub struct Session {
    /// Repository the upload belongs to.
    pub repo: String,
    /// Session id.
    pub id: String,
    hashing: Hashing,
    /// Bytes received.
    pub offset: u64,
    writer: Option<Box<dyn Appender>>,
    /// When a request last used the session (the expiry sweep's clock).
    touched: Instant,
    /// Set when the session is finished, cancelled or expired, for
    /// requests that were waiting for its lock.
    closed: bool,
}

/// The running hash of an upload. Each piece is hashed on the blocking
/// pool at batch priority (see [`crate::batch`]) while the next one is
/// received.
enum Hashing {
    /// Nothing in flight.
    Idle(Hasher),
    /// A piece is being hashed; the task hands the hasher back.
    Busy(tokio::task::JoinHandle<Hasher>),
    /// The hashing task failed (it panicked): the session is forgotten.
    Lost,
}

impl Hashing {
    /// Waits for the piece being hashed and takes the hasher, which then
    /// holds everything appended so far; `Lost` until it is put back.
    async fn take(&mut self) -> Result<Hasher> {
        let lost = || -> Error {
            std::io::Error::other(
                "hashing the upload's data failed; send the request again (the upload resumes from what is stored)",
            )
            .into()
        };
        match std::mem::replace(self, Hashing::Lost) {
            Hashing::Idle(h) => Ok(h),
            Hashing::Busy(task) => task.await.map_err(|_| lost()),
            Hashing::Lost => Err(lost()),
        }
    }

    /// Starts hashing `parts` after everything before them.
    async fn feed(&mut self, parts: Vec<Bytes>) -> Result<()> {
        let mut hasher = self.take().await?;
        *self = Hashing::Busy(tokio::task::spawn_blocking(move || {
            crate::batch::run(|| parts.iter().for_each(|p| hasher.update(p)));
            hasher
        }));
        Ok(())
    }

    /// The digest of everything appended so far.
    async fn digest(&mut self) -> Result<Digest> {
        let hasher = self.take().await?;
        let digest = hasher.digest();
        *self = Hashing::Idle(hasher);
        Ok(digest)
    }
}

/// The 413 SIZE_INVALID answer for `what` (an upload or a request body)
/// that would grow past the blob size limit `max`.
pub fn blob_too_large(what: &str, max: u64) -> Error {
    Error::with_status(
        Code::SizeInvalid,
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "{what} would exceed the registry's blob size limit of {max} bytes \
             (limits.max_blob_size in its config): push a smaller blob, or ask the \
             registry's operator to raise the limit"
        ),
    )
}

impl Session {
    /// A session of `repo` with nothing received yet.
    fn new(repo: &str, id: &str) -> Session {
        Session {
            repo: repo.to_string(),
            id: id.to_string(),
            hashing: Hashing::Idle(Hasher::sha256()),
            offset: 0,
            writer: None,
            touched: Instant::now(),
            closed: false,
        }
    }

    /// Notes that a request uses the session now (the expiry sweep only
    /// removes sessions idle for `limits.upload_idle_timeout_secs`).
    pub fn touch(&mut self) {
        self.touched = Instant::now();
    }

    /// True once the session was finished, cancelled or expired.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Appends the concatenation of `parts`, hashing it on the way.
    pub async fn append(&mut self, store: &Store, parts: Vec<Bytes>) -> Result<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if let Some(max) = store.max_blob_size {
            if self.offset + len > max {
                return Err(blob_too_large(&format!("upload {}", self.id), max));
            }
        }
        if self.writer.is_none() {
            self.writer = Some(
                store
                    .driver
                    .appender(&format!("uploads/{}/data", self.id))
                    .await?,
            );
        }
        // Both proceed on the blocking pool while the next piece arrives.
        if let Err(e) = self.hashing.feed(parts.clone()).await {
            self.fail(store);
            return Err(e);
        }
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.write(parts).await {
                self.fail(store);
                return Err(e.into());
            }
        }
        self.offset += len;
        Ok(())
    }
}

impl Session {
    /// Waits for the writes in flight; after this the storage holds
    /// `offset` bytes.
    pub async fn settle(&mut self, store: &Store) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.settle().await {
                self.fail(store);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// After a failed write the in-memory offset and hash may be ahead of
    /// storage: forget the session so the next request reloads it from
    /// what is stored.
    fn fail(&mut self, store: &Store) {
        self.writer = None;
        store.forget_session(&self.id);
    }
}

/// An upload session shared by the requests that use it.
pub type SharedSession = Arc<tokio::sync::Mutex<Session>>;

/// The upload sessions held in memory, with their repositories, and how
/// many each repository has open (counting reservations of sessions being
/// created).
#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, (String, SharedSession)>,
    per_repo: HashMap<String, u64>,
}

fn count_up(per_repo: &mut HashMap<String, u64>, repo: &str) {
    *per_repo.entry(repo.to_string()).or_default() += 1;
}

fn count_down(per_repo: &mut HashMap<String, u64>, repo: &str) {
    if let Some(n) = per_repo.get_mut(repo) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_repo.remove(repo);
        }
    }
}

impl Sessions {
    /// Adds `session` as `id` of `repo` unless `id` is held already;
    /// returns the one held. `reserved`: its slot was counted by
    /// [`Store::upload_start`] beforehand.
    fn insert(
        &mut self,
        id: &str,
        repo: &str,
        session: SharedSession,
        reserved: bool,
    ) -> SharedSession {
        use std::collections::hash_map::Entry;
        match self.by_id.entry(id.to_string()) {
            Entry::Occupied(e) => {
                if reserved {
                    count_down(&mut self.per_repo, repo);
                }
                e.get().1.clone()
            }
            Entry::Vacant(e) => {
                if !reserved {
                    count_up(&mut self.per_repo, repo);
                }
                e.insert((repo.to_string(), session.clone()));
                session
            }
        }
    }

    /// Drops `id`, freeing its repository's slot.
    fn remove(&mut self, id: &str) {
        if let Some((repo, _)) = self.by_id.remove(id) {
            count_down(&mut self.per_repo, &repo);
        }
    }

    /// Drops `id` if it is still `session` (not a newer reload).
    fn remove_if(&mut self, id: &str, session: &SharedSession) {
        if self
            .by_id
            .get(id)
            .is_some_and(|(_, s)| Arc::ptr_eq(s, session))
        {
            self.remove(id);
        }
    }
}

/// The repository store shared by all handlers.
pub struct Store {
    /// The storage backend.
    pub driver: Arc<dyn Driver>,
    sessions: Mutex<Sessions>,
    /// Held shared by operations that make a blob referenced, exclusively by
    /// GC while it deletes: a blob GC sees as old cannot gain a reference
    /// between GC's check and its delete.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
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
            sessions: Mutex::new(Sessions::default()),
            gc_lock: tokio::sync::RwLock::new(()),
            max_blob_size: None,
            max_uploads_per_repo: u64::MAX,
            upload_idle_timeout: Duration::from_secs(3600),
            touch_after: Duration::from_secs(10),
        }
    }

    async fn touch_if_stale(&self, key: &str, modified: SystemTime) -> Result<()> {
        let stale = SystemTime::now()
            .duration_since(modified)
            .map(|age| age > self.touch_after)
            .unwrap_or(false);
        if stale {
            self.driver.touch(key).await?;
        }
        Ok(())
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
        // GC must not delete the blob or link between our check and the touch.
        let _g = self.gc_lock.read().await;
        self.linked_size(repo, d).await?.ok_or_else(unknown)
    }

    /// Size of blob `d` if `repo` links it, refreshing the GC clock of both
    /// the link and the blob. Caller holds `gc_lock` shared.
    async fn linked_size(&self, repo: &str, d: &Digest) -> Result<Option<u64>> {
        let link = layer_key(repo, d);
        let Some(link_meta) = self.driver.stat(&link).await? else {
            return Ok(None);
        };
        let key = blob_key(d);
        let Some(meta) = self.driver.stat(&key).await? else {
            return Ok(None);
        };
        self.touch_if_stale(&key, meta.modified).await?;
        self.touch_if_stale(&link, link_meta.modified).await?;
        Ok(Some(meta.size))
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

    /// Links existing blob `d` into `repo`. Caller holds `gc_lock` shared.
    async fn link(&self, repo: &str, d: &Digest) -> Result<()> {
        self.driver.touch(&blob_key(d)).await?;
        self.put_link(repo, d).await
    }

    /// Creates (or refreshes) `repo`'s link to blob `d`, durably.
    async fn put_link(&self, repo: &str, d: &Digest) -> Result<()> {
        let key = layer_key(repo, d);
        if self.driver.stat(&key).await?.is_none() {
            self.driver.put(&key, Bytes::new()).await?;
        } else {
            self.driver.touch(&key).await?;
        }
        Ok(())
    }

    /// Cross-repository mount: links `d` into `repo` if `from` has it (or,
    /// with no `from`, if the registry has it at all). Returns false when
    /// the blob is not available, so the caller starts a normal upload.
    pub async fn mount(&self, repo: &str, d: &Digest, from: Option<&str>) -> Result<bool> {
        let _g = self.gc_lock.read().await;
        if let Some(from) = from {
            if self.driver.stat(&layer_key(from, d)).await?.is_none() {
                return Ok(false);
            }
        }
        if self.driver.stat(&blob_key(d)).await?.is_none() {
            return Ok(false);
        }
        self.link(repo, d).await?;
        Ok(true)
    }

    /// Starts an upload session in `repo` and returns it, or
    /// TOOMANYREQUESTS when `repo` has `max_uploads_per_repo` open.
    pub async fn upload_start(&self, repo: &str) -> Result<SharedSession> {
        let id = crate::storage::random_hex(16);
        let info = serde_json::to_vec(&UploadInfo {
            repo: repo.to_string(),
        })
        .map_err(std::io::Error::other)?;
        {
            let mut sessions = self.lock_sessions();
            let open = sessions.per_repo.get(repo).copied().unwrap_or(0);
            if open >= self.max_uploads_per_repo {
                return Err(Error::new(
                    Code::TooManyRequests,
                    format!(
                        "repository {repo} has {open} upload sessions open, the registry's limit \
                         (limits.max_uploads_per_repo): finish or cancel one (DELETE on its \
                         location), or wait until abandoned ones expire \
                         (limits.upload_idle_timeout_secs)"
                    ),
                ));
            }
            // Reserved now, so concurrent POSTs cannot overshoot the limit.
            count_up(&mut sessions.per_repo, repo);
        }
        // Scratch: a session lost in a machine crash is simply started again.
        // The data file appears with the first chunk.
        let stored = self
            .driver
            .put_scratch(&format!("uploads/{id}/info"), Bytes::from(info))
            .await;
        if let Err(e) = stored {
            count_down(&mut self.lock_sessions().per_repo, repo);
            return Err(e.into());
        }
        let session = Arc::new(tokio::sync::Mutex::new(Session::new(repo, &id)));
        Ok(self.lock_sessions().insert(&id, repo, session, true))
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while `session` is the one held in memory as `id`: false once
    /// it was finished, cancelled, expired or dropped after a failed write.
    pub fn is_current(&self, id: &str, session: &SharedSession) -> bool {
        self.lock_sessions()
            .by_id
            .get(id)
            .is_some_and(|(_, s)| Arc::ptr_eq(s, session))
    }

    /// The session `id` of `repo`, reloading it from storage after a restart.
    pub async fn upload_get(&self, repo: &str, id: &str) -> Result<SharedSession> {
        let unknown = || {
            Error::new(
                Code::BlobUploadUnknown,
                format!("upload {id} in repository {repo} does not exist (finished, cancelled or expired): start a new one"),
            )
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        if let Some((owner, s)) = self.lock_sessions().by_id.get(id) {
            // Another repository's session (or one being expired) is not
            // this repository's to use.
            return if owner == repo {
                Ok(s.clone())
            } else {
                Err(unknown())
            };
        }
        let info = self
            .driver
            .get(&format!("uploads/{id}/info"))
            .await?
            .ok_or_else(unknown)?;
        let info: UploadInfo = serde_json::from_slice(&info).map_err(|_| unknown())?;
        if info.repo != repo {
            return Err(unknown());
        }
        // Restart recovery: hash what was received before the restart, once.
        let data_key = format!("uploads/{id}/data");
        let size = self.driver.stat(&data_key).await?.map_or(0, |m| m.size);
        let mut hasher = Hasher::sha256();
        if size > 0 {
            let mut stream = self.driver.reader(&data_key, 0, size).await?;
            while let Some(chunk) = stream.try_next().await? {
                hasher.update(&chunk);
            }
        }
        let session = Arc::new(tokio::sync::Mutex::new(Session {
            hashing: Hashing::Idle(hasher),
            offset: size,
            ..Session::new(repo, id)
        }));
        Ok(self.lock_sessions().insert(id, repo, session, false))
    }

    /// Removes a session's state from storage, then from memory. In that
    /// order: a request arriving meanwhile finds the session in memory,
    /// waits for its lock and then sees it closed, instead of reloading
    /// it from what storage still held.
    async fn close(&self, session: &mut Session) -> Result<()> {
        session.writer = None;
        let removed = self.driver.delete(&format!("uploads/{}", session.id)).await;
        session.closed = true;
        self.lock_sessions().remove(&session.id);
        Ok(removed?)
    }

    /// Cancels and removes an upload session.
    pub async fn upload_cancel(&self, session: &mut Session) -> Result<()> {
        self.close(session).await
    }

    /// Verifies the upload against `expected` and commits it as a blob of
    /// its repository. On a digest mismatch the session is discarded.
    pub async fn upload_finish(&self, session: &mut Session, expected: &Digest) -> Result<()> {
        let data_key = format!("uploads/{}/data", session.id);
        // The writes in flight land before the data is hashed or moved.
        if let Some(w) = session.writer.as_mut() {
            w.settle().await?;
        }
        let actual = if *expected.algorithm() == DigestAlgorithm::Sha256 {
            match session.hashing.digest().await {
                Ok(d) => d,
                Err(e) => {
                    session.fail(self);
                    return Err(e);
                }
            }
        } else {
            // Uploads are hashed with sha256 as they stream; another
            // algorithm, known only now, needs one pass over the data.
            // An empty upload has no data object to read (it appears with
            // the first chunk).
            let mut h = Hasher::new(expected.algorithm())?;
            if session.offset > 0 {
                let mut stream = self.driver.reader(&data_key, 0, session.offset).await?;
                while let Some(chunk) = stream.try_next().await? {
                    h.update(&chunk);
                }
            }
            h.digest()
        };
        if &actual != expected {
            self.upload_cancel(session).await?;
            return Err(Error::new(
                Code::DigestInvalid,
                format!(
                    "upload {}: content digest is {actual} but the client said {expected}; the upload was discarded, push the blob again",
                    session.id
                ),
            ));
        }
        let writer = session.writer.take();
        let _g = self.gc_lock.read().await;
        let key = blob_key(expected);
        if self.driver.stat(&key).await?.is_some() {
            // Already stored (by another repository or a concurrent push).
            drop(writer);
            self.driver.delete(&data_key).await?;
            self.link(&session.repo, expected).await?;
        } else {
            // The blob is made durable and moved into place while the
            // repository's link is written: a link without its blob reads
            // as "blob unknown", so the order does not matter and the two
            // sets of fsyncs overlap instead of queueing.
            let store_blob = async {
                if session.offset == 0 {
                    return self.driver.put(&key, Bytes::new()).await;
                }
                let mut writer = match writer {
                    Some(w) => w,
                    // Received before a restart: not necessarily on disk yet.
                    None => self.driver.appender(&data_key).await?,
                };
                writer.sync().await?;
                drop(writer);
                self.driver.rename(&data_key, &key).await
            };
            let (stored, linked) = tokio::join!(store_blob, self.put_link(&session.repo, expected));
            stored?;
            linked?;
        }
        self.close(session).await
    }

    /// Ids of the upload sessions known in memory (GC keeps them).
    pub(crate) fn active_sessions(&self) -> BTreeSet<String> {
        self.lock_sessions().by_id.keys().cloned().collect()
    }

    /// Drops a session from memory (GC expiry).
    pub(crate) fn forget_session(&self, id: &str) {
        self.lock_sessions().remove(id);
    }

    /// Removes the upload sessions no request has used for
    /// `upload_idle_timeout`, from storage and memory; later requests to
    /// them get BLOB_UPLOAD_UNKNOWN. Sessions held in memory are judged by
    /// their last request (one a request is using is never idle); with
    /// `stored`, sessions found only in storage (left from before a
    /// restart) by the times of their files. Returns how many went.
    pub async fn expire_uploads(&self, stored: bool) -> Result<u64> {
        let idle = self.upload_idle_timeout;
        let mut expired = 0;
        let held: Vec<(String, SharedSession)> = self
            .lock_sessions()
            .by_id
            .iter()
            .map(|(id, (_, s))| (id.clone(), s.clone()))
            .collect();
        for (id, shared) in held {
            let Ok(mut s) = shared.clone().try_lock_owned() else {
                continue; // a request is using it
            };
            if s.closed || s.touched.elapsed() < idle || !self.is_current(&id, &shared) {
                continue;
            }
            match self.close(&mut s).await {
                Ok(()) => expired += 1,
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "removing an expired upload failed")
                }
            }
        }
        if !stored {
            return Ok(expired);
        }
        let now = SystemTime::now();
        for id in self.driver.list("uploads").await? {
            if self.lock_sessions().by_id.contains_key(&id) {
                continue;
            }
            let dir = format!("uploads/{id}");
            let mut newest = None;
            for key in [dir.clone(), format!("{dir}/data"), format!("{dir}/info")] {
                if let Some(m) = self.driver.stat(&key).await? {
                    newest = newest.max(Some(m.modified));
                }
            }
            let stale = newest.is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= idle));
            if !stale {
                continue;
            }
            // Claim the id while its state is removed: a request for it
            // meanwhile finds the claim (no repository's session) rather
            // than reloading the session from storage.
            let claim = Arc::new(tokio::sync::Mutex::new(Session::new("", &id)));
            let mut s = claim.clone().lock_owned().await;
            {
                let mut sessions = self.lock_sessions();
                if sessions.by_id.contains_key(&id) {
                    continue; // reloaded by a request meanwhile
                }
                sessions.insert(&id, "", claim.clone(), false);
            }
            let removed = self.driver.delete(&dir).await;
            s.closed = true;
            self.lock_sessions().remove_if(&id, &claim);
            match removed {
                Ok(()) => expired += 1,
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "removing an expired upload failed")
                }
            }
        }
        Ok(expired)
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
        let _g = self.gc_lock.read().await;
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
        // Content and revision link are written side by side (their fsyncs
        // overlap); tags and referrers only once both are durable, so a tag
        // never names a manifest a crash could lose.
        let key = blob_key(&digest);
        let store_blob = async {
            if self.driver.stat(&key).await?.is_none() {
                self.driver.put(&key, body.clone()).await
            } else {
                self.driver.touch(&key).await
            }
        };
        let revision = revision_key(repo, &digest);
        let store_revision = self.driver.put(&revision, Bytes::from(media_type.clone()));
        let (stored, revised) = tokio::join!(store_blob, store_revision);
        stored?;
        revised?;
        if let Some(s) = &subject {
            let sd = digest::parse(s)?;
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
                        referrers_dir(repo, &sd),
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
