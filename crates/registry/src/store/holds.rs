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
//! operation waits until the mark is gone and starts over. Last, it reads
//! the key once more: a GC that read the clock before the refresh and
//! deleted the key before its mark went shows as the key being gone (the
//! operation then uploads, answers 404, or re-creates a link); if the key
//! is there, no GC can take it any more.
//!
//! A clock younger than `touch_after` (at most a quarter of the grace
//! period) is not touched again (the mark check and the second read still
//! happen): GC cannot find it old for another three quarters of the grace
//! period, far longer than any one operation.
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
            if age(meta.modified, SystemTime::now()) > self.touch_after {
                match self.driver.touch(key).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            match self.mark_age(key).await? {
                None => {}
                Some(a) if a > MARK_LEASE => {
                    tracing::warn!(key, "removing an abandoned GC deletion mark");
                    self.driver.delete(&mark_key(key)).await?;
                    continue;
                }
                Some(_) if Instant::now() > give_up => {
                    return Err(std::io::Error::other(format!(
                        "{key} is held by a garbage collection for longer than its lease; retry"
                    ))
                    .into());
                }
                Some(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            // No GC is deleting the key now, and any GC that marks it
            // later reads a fresh clock; one that deleted it before its
            // mark went shows here as the key being gone.
            return Ok(self.driver.stat(key).await?);
        }
    }

    /// How long ago the deletion mark of `key` was made, if there is one
    /// (one GET; the mark holds its creation time in Unix seconds).
    async fn mark_age(&self, key: &str) -> Result<Option<Duration>> {
        let Some(body) = self.driver.get(&mark_key(key)).await? else {
            return Ok(None);
        };
        let made = std::str::from_utf8(&body)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        // An unreadable mark counts as abandoned.
        Ok(Some(
            made.map_or(MARK_LEASE * 2, |t| age(t, SystemTime::now())),
        ))
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
        let made = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let stamp = Bytes::from(made.as_secs().to_string());
        if self
            .driver
            .put_if(&mark, stamp, &Precondition::Absent)
            .await?
            .is_none()
        {
            // Another GC is deleting it, or one died: clear its mark once
            // abandoned; the key is looked at again next run.
            if self.mark_age(key).await?.is_some_and(|a| a > MARK_LEASE) {
                self.driver.delete(&mark).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;

    use super::*;
    use crate::storage::FsDriver;

    /// Two stores on one directory stand for two replicas.
    fn replicas(dir: &std::path::Path) -> (Store, Store) {
        let driver = || Arc::new(FsDriver::new(dir).unwrap()) as Arc<dyn crate::storage::Driver>;
        (Store::new(driver()), Store::new(driver()))
    }

    /// The body of a deletion mark made now.
    fn fresh_mark() -> Bytes {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        Bytes::from(now.unwrap().as_secs().to_string())
    }

    /// Stores `key` with a GC clock an hour old.
    async fn old_object(dir: &std::path::Path, store: &Store, key: &str) {
        store
            .driver
            .put(key, Bytes::from_static(b"x"))
            .await
            .unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let f = std::fs::File::options()
            .append(true)
            .open(dir.join(key))
            .unwrap();
        f.set_modified(hour_ago).unwrap();
    }

    /// A hold that meets another replica's deletion mark waits until the
    /// mark is gone and then reports what GC left: here, that the key
    /// was deleted, so the caller will not promise it to a client.
    #[tokio::test]
    async fn a_hold_waits_out_a_gc_deleting_the_key_and_sees_it_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(dir.path());
        old_object(dir.path(), &a, "blobs/sha256/aa").await;
        // Replica B's GC is between its mark and its delete.
        b.driver
            .put_if("gc/blobs/sha256/aa", fresh_mark(), &Precondition::Absent)
            .await
            .unwrap()
            .unwrap();
        let held = tokio::spawn(async move { a.hold("blobs/sha256/aa").await.unwrap() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        if held.is_finished() {
            panic!("the hold did not wait for the mark: {:?}", held.await);
        }
        b.driver.delete("blobs/sha256/aa").await.unwrap();
        b.driver.delete("gc/blobs/sha256/aa").await.unwrap();
        assert!(held.await.unwrap().is_none(), "the key is reported gone");
    }

    /// A key held (its clock refreshed) before any GC marks it is kept by
    /// every GC that comes later, however old it was; a key nobody holds
    /// goes, once, and a second GC racing for it skips it.
    #[tokio::test]
    async fn gc_keeps_what_another_replica_held_and_only_one_gc_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = replicas(dir.path());
        let grace = Duration::from_secs(600);
        old_object(dir.path(), &a, "blobs/sha256/held").await;
        old_object(dir.path(), &a, "blobs/sha256/unused").await;
        assert!(a.hold("blobs/sha256/held").await.unwrap().is_some());
        let now = SystemTime::now();
        let b = &b;
        let gc = |key: &'static str| {
            b.gc_remove(key, grace, now, move || async move {
                Ok(b.driver.delete(key).await?)
            })
        };
        assert!(!gc("blobs/sha256/held").await.unwrap());
        // Another GC holds the mark of "unused": this one skips it.
        a.driver
            .put_if(
                "gc/blobs/sha256/unused",
                fresh_mark(),
                &Precondition::Absent,
            )
            .await
            .unwrap()
            .unwrap();
        assert!(!gc("blobs/sha256/unused").await.unwrap());
        assert!(a
            .driver
            .stat("blobs/sha256/unused")
            .await
            .unwrap()
            .is_some());
        a.driver.delete("gc/blobs/sha256/unused").await.unwrap();
        assert!(gc("blobs/sha256/unused").await.unwrap());
        assert!(a.driver.stat("blobs/sha256/held").await.unwrap().is_some());
        assert!(a
            .driver
            .stat("blobs/sha256/unused")
            .await
            .unwrap()
            .is_none());
        assert!(a
            .driver
            .stat("gc/blobs/sha256/unused")
            .await
            .unwrap()
            .is_none());
    }
}
