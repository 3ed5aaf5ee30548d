//! Upload sessions whose state lives in storage, so that every request of
//! one upload may land on a different replica sharing the storage.
//!
//! A session is the directory `uploads/<id>/`:
//!
//! ```text
//! uploads/<id>/info          JSON state: repository, offset, segments, sha256 state, generation
//! uploads/<id>/data-<n>      one segment: the bytes one request appended
//! uploads/<id>/busy-<n>      heartbeat of a request streaming for long (see below)
//! ```
//!
//! A request loads `info` with its version, streams its body into a new
//! segment of its own (hashing it with the sha256 state resumed from
//! `info`), and then replaces `info` *only if it is still the version it
//! loaded* ([`Driver::put_if`]: S3's `If-Match`, a directory lock on the
//! filesystem). Of two requests racing on one session, one wins; the other
//! removes its segment and answers `416` with the winner's `Range`, so
//! nothing is corrupted. A `PUT` claims the session the same way (writing
//! it `closed`) before it assembles the segments into the blob. A state
//! without a usable hash state (a hashing task failed) is re-hashed from
//! the stored segments by the next request, as after a restart.
//!
//! Each process keeps only bookkeeping: which sessions of each repository
//! it opened or served (for `limits.max_uploads_per_repo`, pruned against
//! storage when full) and which it is streaming into right now (never
//! idle). A request streaming for longer than a quarter of the idle
//! timeout writes a `busy-<n>` object every quarter, so the expiry sweep
//! of another replica sees it is in use. Monolithic `POST ?digest=`
//! uploads write no `info` at all: nobody else knows their id.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_core::digest::Hasher;
use bytes::Bytes;
use futures::TryStreamExt;
use oci_spec::image::{Digest, DigestAlgorithm};
use serde::{Deserialize, Serialize};

use super::{blob_key, Store};
use crate::error::{Code, Error, Result};
use crate::sha256_state::Sha256State;
use crate::storage::{random_hex, Appender, Driver, Precondition, Version};

/// An upload session's state as stored in `uploads/<id>/info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UploadState {
    repo: String,
    /// Bytes stored in the segments.
    #[serde(default)]
    offset: u64,
    /// Segment names under `uploads/<id>/`, in order.
    #[serde(default)]
    segments: Vec<String>,
    /// The sha256 state after `offset` bytes ([`Sha256State::save`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// Bumped by every update, so no two stored states are alike (the
    /// filesystem's versions are content hashes).
    #[serde(default)]
    generation: u64,
    /// Taken over by a `PUT` that is committing it.
    #[serde(default)]
    closed: bool,
}

fn dir_key(id: &str) -> String {
    format!("uploads/{id}")
}

fn info_key(id: &str) -> String {
    format!("uploads/{id}/info")
}

fn unknown(repo: &str, id: &str) -> Error {
    Error::new(
        Code::BlobUploadUnknown,
        format!("upload {id} in repository {repo} does not exist (finished, cancelled or expired): start a new one"),
    )
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

/// The running hash of an upload. Each piece is hashed on the blocking
/// pool at batch priority (see [`crate::batch`]) while the next one is
/// received.
enum Hashing {
    /// Nothing in flight.
    Idle(Box<Sha256State>),
    /// A piece is being hashed; the task hands the state back.
    Busy(tokio::task::JoinHandle<Box<Sha256State>>),
    /// The hashing task failed (it panicked).
    Lost,
}

impl Hashing {
    /// Waits for the piece being hashed and takes the state; `Lost` until
    /// it is put back.
    async fn take(&mut self) -> Result<Box<Sha256State>> {
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
        let mut state = self.take().await?;
        *self = Hashing::Busy(tokio::task::spawn_blocking(move || {
            crate::batch::run(|| parts.iter().for_each(|p| state.update(p)));
            state
        }));
        Ok(())
    }

    /// The state after everything fed so far (kept running).
    async fn state(&mut self) -> Result<Sha256State> {
        let state = self.take().await?;
        let copy = (*state).clone();
        *self = Hashing::Idle(state);
        Ok(copy)
    }
}

/// What this process knows of upload sessions: per repository, the ones
/// it opened or served and has not seen end (for the per-repository
/// limit), and how many of its requests use each session right now.
#[derive(Default)]
pub(super) struct Sessions {
    per_repo: HashMap<String, HashSet<String>>,
    busy: HashMap<String, usize>,
}

impl Sessions {
    fn forget(&mut self, repo: &str, id: &str) {
        if let Some(ids) = self.per_repo.get_mut(repo) {
            ids.remove(id);
            if ids.is_empty() {
                self.per_repo.remove(repo);
            }
        }
    }

    fn known(&self) -> Vec<String> {
        self.per_repo.values().flatten().cloned().collect()
    }
}

/// Marks a session as used by a request of this process while it lives,
/// and, for a request streaming for long, keeps a `busy-<n>` object fresh
/// in storage so that other replicas do not expire the session.
struct Busy {
    sessions: Arc<Mutex<Sessions>>,
    id: String,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Set once the heartbeat wrote its marker.
    beaten: Arc<AtomicBool>,
    driver: Arc<dyn Driver>,
    marker: String,
}

impl Busy {
    fn new(store: &Store, id: &str) -> Busy {
        *store
            .lock_sessions()
            .busy
            .entry(id.to_string())
            .or_default() += 1;
        let marker = format!("uploads/{id}/busy-{}", random_hex(8));
        let every = (store.upload_idle_timeout / 4).max(Duration::from_millis(250));
        let beaten = Arc::new(AtomicBool::new(false));
        let (driver, key, flag) = (store.driver.clone(), marker.clone(), beaten.clone());
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                flag.store(true, Ordering::Relaxed);
                if let Err(e) = driver.put_scratch(&key, Bytes::new()).await {
                    tracing::warn!(key, error = %e, "upload heartbeat failed");
                }
            }
        });
        Busy {
            sessions: store.sessions.clone(),
            id: id.to_string(),
            heartbeat,
            beaten,
            driver: store.driver.clone(),
            marker,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = s.busy.get_mut(&self.id) {
                *n -= 1;
                if *n == 0 {
                    s.busy.remove(&self.id);
                }
            }
        }
        self.heartbeat.abort();
        if self.beaten.load(Ordering::Relaxed) {
            let (driver, key) = (self.driver.clone(), self.marker.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = driver.delete(&key).await;
                });
            }
        }
    }
}

/// One request's hold on an upload session: the state it loaded, the
/// running hash, and the segment it appends to.
pub struct Session {
    /// Repository the upload belongs to.
    pub repo: String,
    /// Session id.
    pub id: String,
    /// Bytes stored, with what this request appended.
    pub offset: u64,
    /// The state as loaded, and its version (`None`: a monolithic upload,
    /// which has no stored state).
    state: UploadState,
    version: Option<Version>,
    hashing: Hashing,
    /// The segment this request appends to, once it has data.
    segment: Option<(String, Box<dyn Appender>)>,
    /// A write or the hashing failed: what this request appended is
    /// discarded rather than recorded.
    failed: bool,
    closed: bool,
    _busy: Busy,
}

impl Session {
    /// True once the session was finished or cancelled.
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
        if self.segment.is_none() {
            let name = format!("data-{}", random_hex(8));
            let w = store
                .driver
                .appender(&format!("uploads/{}/{name}", self.id))
                .await?;
            self.segment = Some((name, w));
        }
        // Both proceed on the blocking pool while the next piece arrives.
        if let Err(e) = self.hashing.feed(parts.clone()).await {
            self.failed = true;
            return Err(e);
        }
        if let Some((_, w)) = self.segment.as_mut() {
            if let Err(e) = w.write(parts).await {
                self.failed = true;
                return Err(e.into());
            }
        }
        self.offset += len;
        Ok(())
    }

    /// Waits for the writes in flight; after this the storage holds
    /// what this request appended.
    pub async fn settle(&mut self) -> Result<()> {
        if let Some((_, w)) = self.segment.as_mut() {
            if let Err(e) = w.settle().await {
                self.failed = true;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Keys of every segment, this request's last.
    fn segment_keys(&self) -> Vec<String> {
        self.state
            .segments
            .iter()
            .chain(self.segment.as_ref().map(|(n, _)| n))
            .map(|n| format!("uploads/{}/{n}", self.id))
            .collect()
    }
}

impl Store {
    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session of `repo` with nothing received yet.
    fn session(
        &self,
        repo: &str,
        id: &str,
        state: UploadState,
        version: Option<Version>,
    ) -> Session {
        Session {
            repo: repo.to_string(),
            id: id.to_string(),
            offset: state.offset,
            state,
            version,
            hashing: Hashing::Idle(Box::default()),
            segment: None,
            failed: false,
            closed: false,
            _busy: Busy::new(self, id),
        }
    }

    /// Counts a new session of `repo` against `max_uploads_per_repo`, or
    /// refuses with TOOMANYREQUESTS. When the count is full, sessions that
    /// ended elsewhere (another replica finished them) are dropped first.
    async fn reserve(&self, repo: &str, id: &str) -> Result<()> {
        let full = |sessions: &Sessions| {
            sessions.per_repo.get(repo).map_or(0, |s| s.len() as u64) >= self.max_uploads_per_repo
        };
        if full(&self.lock_sessions()) {
            let ids: Vec<String> = self
                .lock_sessions()
                .per_repo
                .get(repo)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for other in ids {
                let busy = self.lock_sessions().busy.contains_key(&other);
                if !busy && self.driver.stat(&info_key(&other)).await?.is_none() {
                    self.lock_sessions().forget(repo, &other);
                }
            }
        }
        let mut sessions = self.lock_sessions();
        if full(&sessions) {
            let open = sessions.per_repo.get(repo).map_or(0, |s| s.len());
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
        sessions
            .per_repo
            .entry(repo.to_string())
            .or_default()
            .insert(id.to_string());
        Ok(())
    }

    /// Starts an upload session in `repo`, or TOOMANYREQUESTS when `repo`
    /// has `max_uploads_per_repo` open. `stored`: other requests will use
    /// it (its state is written); a monolithic upload is not stored.
    pub async fn upload_start(&self, repo: &str, stored: bool) -> Result<Session> {
        let id = random_hex(16);
        self.reserve(repo, &id).await?;
        let state = UploadState {
            repo: repo.to_string(),
            sha256: Some(Sha256State::default().save()),
            ..Default::default()
        };
        if !stored {
            return Ok(self.session(repo, &id, state, None));
        }
        let created = async {
            let data = Bytes::from(serde_json::to_vec(&state).map_err(std::io::Error::other)?);
            self.driver
                .put_if(&info_key(&id), data, &Precondition::Absent)
                .await?
                .ok_or_else(|| {
                    std::io::Error::other(format!(
                        "upload id {id} exists already in storage (random ids collided?): retry"
                    ))
                })
        }
        .await;
        match created {
            Ok(version) => Ok(self.session(repo, &id, state, Some(version))),
            Err(e) => {
                self.lock_sessions().forget(repo, &id);
                Err(e.into())
            }
        }
    }

    /// Loads session `id` of `repo` from storage for one request.
    pub async fn upload_get(&self, repo: &str, id: &str) -> Result<Session> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown(repo, id));
        }
        let (raw, version) = self
            .driver
            .get_versioned(&info_key(id))
            .await?
            .ok_or_else(|| unknown(repo, id))?;
        let state: UploadState = serde_json::from_slice(&raw).map_err(|_| unknown(repo, id))?;
        if state.repo != repo || state.closed {
            return Err(unknown(repo, id));
        }
        self.lock_sessions()
            .per_repo
            .entry(repo.to_string())
            .or_default()
            .insert(id.to_string());
        let resumed = state
            .sha256
            .as_deref()
            .and_then(Sha256State::restore)
            .filter(|h| h.hashed() == state.offset);
        let mut session = self.session(repo, id, state, Some(version));
        session.hashing = Hashing::Idle(Box::new(match resumed {
            Some(h) => h,
            // No usable hash state: hash what is stored, once.
            None => {
                let mut h = Sha256State::default();
                self.read_segments(&session.segment_keys(), |c| h.update(c))
                    .await?;
                h
            }
        }));
        Ok(session)
    }

    /// Feeds every byte of the segments `keys`, in order, to `f`.
    async fn read_segments(&self, keys: &[String], mut f: impl FnMut(&[u8])) -> Result<()> {
        for key in keys {
            let size = self.driver.stat(key).await?.map_or(0, |m| m.size);
            if size == 0 {
                continue;
            }
            let mut stream = self.driver.reader(key, 0, size).await?;
            while let Some(chunk) = stream.try_next().await? {
                f(&chunk);
            }
        }
        Ok(())
    }

    /// Removes what `s` appended in this request (a lost race, a failure).
    async fn discard_segment(&self, s: &mut Session) {
        if let Some((name, w)) = s.segment.take() {
            drop(w);
            let key = format!("uploads/{}/{name}", s.id);
            if let Err(e) = self.driver.delete(&key).await {
                tracing::warn!(key, error = %e, "removing an upload segment failed");
            }
        }
        s.offset = s.state.offset;
    }

    /// Replaces the stored state of `s` with `next` if nobody changed it
    /// since `s` loaded it. When somebody did, this request's segment is
    /// discarded and the answer is 416 with the stored offset in
    /// `s.offset` (or BLOB_UPLOAD_UNKNOWN when the session ended).
    async fn replace_state(&self, s: &mut Session, next: UploadState) -> Result<()> {
        let Some(version) = s.version.clone() else {
            s.state = next;
            return Ok(()); // a monolithic upload: no stored state
        };
        let data = Bytes::from(serde_json::to_vec(&next).map_err(std::io::Error::other)?);
        let stored = self
            .driver
            .put_if(&info_key(&s.id), data, &Precondition::Matches(version))
            .await?;
        if let Some(version) = stored {
            s.state = next;
            s.version = Some(version);
            return Ok(());
        }
        self.discard_segment(s).await;
        let current = self.upload_get(&s.repo, &s.id).await?;
        s.offset = current.offset;
        Err(Error::Range(format!(
            "upload {} was changed by another request meanwhile (on this or another replica); \
             the next chunk must start at {}",
            s.id, current.offset
        )))
    }

    /// Records what this request appended (or, with nothing appended, that
    /// the session was used: its idle clock restarts).
    pub async fn upload_save(&self, s: &mut Session) -> Result<()> {
        let settled = s.settle().await;
        if s.failed || settled.is_err() {
            self.discard_segment(s).await;
            return settled.and(Err(std::io::Error::other(
                "storing the upload's data failed; resume from the offset GET on the upload reports",
            )
            .into()));
        }
        let mut next = s.state.clone();
        next.generation += 1;
        if let Some((name, _)) = &s.segment {
            next.segments.push(name.clone());
            next.offset = s.offset;
            next.sha256 = match s.hashing.state().await {
                Ok(h) => Some(h.save()),
                Err(_) => None, // the next request re-hashes
            };
        }
        self.replace_state(s, next).await?;
        s.segment = None;
        Ok(())
    }

    /// Ends session `s`: its storage goes, and this process stops counting it.
    async fn close(&self, s: &mut Session) -> Result<()> {
        s.segment = None;
        s.closed = true;
        self.lock_sessions().forget(&s.repo, &s.id);
        Ok(self.driver.delete(&dir_key(&s.id)).await?)
    }

    /// Cancels and removes an upload session. A request of another replica
    /// racing with it finds the session gone (BLOB_UPLOAD_UNKNOWN).
    pub async fn upload_cancel(&self, s: &mut Session) -> Result<()> {
        self.close(s).await
    }

    /// Verifies the upload against `expected` and commits it as a blob of
    /// its repository. On a digest mismatch the session is discarded. A
    /// request that changed the session meanwhile wins (416 here).
    pub async fn upload_finish(&self, s: &mut Session, expected: &Digest) -> Result<()> {
        let settled = s.settle().await;
        if s.failed || settled.is_err() {
            self.discard_segment(s).await;
            settled?;
            return Err(std::io::Error::other("storing the upload's data failed").into());
        }
        let actual = if *expected.algorithm() == DigestAlgorithm::Sha256 {
            s.hashing.state().await?.digest()
        } else {
            // Uploads are hashed with sha256 as they stream; another
            // algorithm, known only now, needs one pass over the data.
            let mut h = Hasher::new(expected.algorithm())?;
            self.read_segments(&s.segment_keys(), |c| h.update(c))
                .await?;
            h.digest()
        };
        if &actual != expected {
            self.upload_cancel(s).await?;
            return Err(Error::new(
                Code::DigestInvalid,
                format!(
                    "upload {}: content digest is {actual} but the client said {expected}; the upload was discarded, push the blob again",
                    s.id
                ),
            ));
        }
        // Claim the session: from here on no other request may change it.
        let mut claimed = s.state.clone();
        claimed.closed = true;
        claimed.generation += 1;
        self.replace_state(s, claimed).await?;
        let segments = s.segment_keys();
        let writer = s.segment.take().map(|(_, w)| w);
        let key = blob_key(expected);
        if self.hold(&key).await?.is_some() {
            // Already stored (by another repository or a concurrent push).
            drop(writer);
            self.put_link(&s.repo, expected).await?;
        } else {
            // The blob is made durable and moved into place while the
            // repository's link is written: a link without its blob reads
            // as "blob unknown", so the order does not matter and the two
            // sets of fsyncs overlap instead of queueing.
            let store_blob = async {
                if s.offset == 0 {
                    return self.driver.put(&key, Bytes::new()).await;
                }
                if let Some(mut w) = writer {
                    w.sync().await?;
                }
                self.driver.concat(&segments, &key).await
            };
            let (stored, linked) = tokio::join!(store_blob, self.put_link(&s.repo, expected));
            stored?;
            linked?;
        }
        self.close(s).await
    }

    /// Removes the upload sessions no request has used for `idle` as of
    /// `now`, judged by the newest time of anything in their directory
    /// (state, segments, heartbeats); sessions a request of this process
    /// is using are skipped. `all`: every session in storage, else only
    /// those this process knows. A request of another replica using a
    /// removed session gets BLOB_UPLOAD_UNKNOWN. Returns how many went.
    pub(crate) async fn sweep_uploads(
        &self,
        all: bool,
        idle: Duration,
        now: SystemTime,
    ) -> Result<u64> {
        let ids = match all {
            true => self.driver.list("uploads").await?,
            false => self.lock_sessions().known(),
        };
        let mut removed = 0;
        for id in ids {
            if self.lock_sessions().busy.contains_key(&id) {
                continue;
            }
            let dir = dir_key(&id);
            let mut newest = self.driver.stat(&dir).await?.map(|m| m.modified);
            for name in self.driver.list(&dir).await? {
                if let Some(m) = self.driver.stat(&format!("{dir}/{name}")).await? {
                    newest = newest.max(Some(m.modified));
                }
            }
            let stale = newest.is_none_or(|t| now.duration_since(t).is_ok_and(|age| age >= idle));
            if !stale || self.lock_sessions().busy.contains_key(&id) {
                continue;
            }
            match self.driver.delete(&dir).await {
                Ok(()) => {
                    removed += 1;
                    let mut sessions = self.lock_sessions();
                    for ids in sessions.per_repo.values_mut() {
                        ids.remove(&id);
                    }
                    sessions.per_repo.retain(|_, ids| !ids.is_empty());
                }
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "removing an expired upload failed")
                }
            }
        }
        Ok(removed)
    }

    /// Removes the upload sessions no request has used for
    /// `upload_idle_timeout`; with `stored`, every session in storage,
    /// else those this process opened or served. Returns how many went.
    pub async fn expire_uploads(&self, stored: bool) -> Result<u64> {
        self.sweep_uploads(stored, self.upload_idle_timeout, SystemTime::now())
            .await
    }
}
