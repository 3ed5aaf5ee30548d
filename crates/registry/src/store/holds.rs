//! How references and online GC exclude each other, also between
//! replicas sharing the storage (no process-local lock can do that).
//!
//! Every key GC may delete (blobs, repository links, manifest revisions)
//! has a GC clock: its modification time. GC deletes an unreferenced key
//! only when its clock is older than the grace period, and only inside a
//! *deletion mark*:
//!
//! 1. GC creates `gc/<key>` with a conditional create (S3
//!    `If-None-Match: *`; on the filesystem under a directory lock). If it
//!    exists, another GC (on any replica) is deleting the key: skip it.
//! 2. GC reads the key's clock again and deletes the key only if it is
//!    still older than the grace period, and only if less than half of
//!    [`MARK_LEASE`] passed since step 1.
//! 3. GC removes the mark.
//!
//! An operation that makes a key referenced (blob `HEAD`/`GET`, mount,
//! upload commit, manifest `PUT` and the blobs it names) *holds* it
//! ([`Store::hold`]): it refreshes the clock (a touch), then checks that no
//! deletion mark exists. If none does, every GC that marks the key later
//! reads the fresh clock in its step 2 and keeps the key. If one does, the
//! operation waits until the mark is gone and starts over; the key is
//! then either kept (fresh) or gone (the operation sees it absent and
//! uploads, answers 404, or re-creates a link).
//!
//! A clock younger than `touch_after` (at most a quarter of the grace
//! period) is not touched again: GC cannot find it old for another three
//! quarters of the grace period, far longer than any one operation.
//!
//! Marks of a GC that died are taken as abandoned after [`MARK_LEASE`]
//! and removed by whoever finds them; the marking GC gives up on a key
//! after half the lease, so it never deletes once its mark may be gone.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::Store;
use crate::error::Result;
use crate::storage::{Meta, Precondition};

/// How long a deletion mark is honoured.
pub(crate) const MARK_LEASE: Duration = Duration::from_secs(30);

fn mark_key(key: &str) -> String {
    format!("gc/{key}")
}

fn age(t: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or(Duration::ZERO)
}

impl Store {
    /// Holds `key` for an operation that references it (see the module
    /// docs): its metadata once no GC can delete it any more, or `None`
    /// if it does not exist (or a GC deleted it while we waited).
    pub(super) async fn hold(&self, key: &str) -> Result<Option<Meta>> {
        let give_up = Instant::now() + 2 * MARK_LEASE;
        loop {
            let Some(meta) = self.driver.stat(key).await? else {
                return Ok(None);
            };
            if age(meta.modified, SystemTime::now()) <= self.touch_after {
                return Ok(Some(meta));
            }
            match self.driver.touch(key).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
            let mark = mark_key(key);
            match self.driver.stat(&mark).await? {
                None => return Ok(Some(meta)),
                Some(m) if age(m.modified, SystemTime::now()) > MARK_LEASE => {
                    tracing::warn!(key, "removing an abandoned GC deletion mark");
                    self.driver.delete(&mark).await?;
                }
                Some(_) => {
                    if Instant::now() > give_up {
                        return Err(std::io::Error::other(format!(
                            "{key} is held by a garbage collection for longer than its lease; retry"
                        ))
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Deletes `key` with `remove` if its GC clock is older than `grace`
    /// at `now`, inside a deletion mark (see the module docs). Returns
    /// whether it was removed.
    pub(crate) async fn gc_remove<F>(
        &self,
        key: &str,
        grace: Duration,
        now: SystemTime,
        remove: impl FnOnce() -> F,
    ) -> Result<bool>
    where
        F: std::future::Future<Output = Result<()>>,
    {
        let mark = mark_key(key);
        let stamp = Bytes::from(format!("{:?}", SystemTime::now()));
        if self
            .driver
            .put_if(&mark, stamp, &Precondition::Absent)
            .await?
            .is_none()
        {
            // Another GC is deleting it, or one died: clear its mark once
            // abandoned; the key is looked at again next run.
            if let Some(m) = self.driver.stat(&mark).await? {
                if age(m.modified, SystemTime::now()) > MARK_LEASE {
                    self.driver.delete(&mark).await?;
                }
            }
            return Ok(false);
        }
        let started = Instant::now();
        let removed = async {
            let Some(meta) = self.driver.stat(key).await? else {
                return Ok(false);
            };
            if age(meta.modified, now) < grace || started.elapsed() > MARK_LEASE / 2 {
                return Ok(false);
            }
            remove().await?;
            Ok::<bool, crate::error::Error>(true)
        }
        .await;
        let unmarked = self.driver.delete(&mark).await;
        let removed = removed?;
        unmarked?;
        Ok(removed)
    }
}
