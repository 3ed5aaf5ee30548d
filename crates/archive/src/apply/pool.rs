//! The writer pool: regular files handed over in batches, the paths still
//! being written and who waits for them, the first error, and how long
//! creating a file takes (which decides whether files go to the pool).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use super::files::{create_file, set_meta_fd, Meta};
use super::paths::split_parent;
use crate::ApplyError;

/// A regular file for the writer pool.
pub(super) struct Job {
    /// Its parent directory, opened inside the root by the parsing thread.
    pub(super) parent: Arc<OwnedFd>,
    pub(super) path: Vec<u8>,
    pub(super) display: String,
    pub(super) data: Vec<u8>,
    pub(super) meta: Meta,
}

/// Paths handed to the pool and not yet written, and who waits for them.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) paths: HashMap<Vec<u8>, usize>,
    pub(super) waiters: usize,
}

/// Files handed to a writer at once (fewer wakeups than one by one).
pub(super) const BATCH_FILES: usize = 32;
pub(super) const BATCH_BYTES: usize = 1 << 20;

/// State shared between the parsing thread and the writers.
pub(super) struct Shared {
    pub(super) root: OwnedFd,
    pub(super) pending: Mutex<Pending>,
    pub(super) cv: Condvar,
    pub(super) error: Mutex<Option<ApplyError>>,
    pub(super) failed: AtomicBool,
    /// Moving average of how long creating a file takes, in nanoseconds.
    pub(super) create_ns: AtomicU64,
    /// The parser is the slowest stage: inflated chunks wait for it.
    pub(super) parser_behind: AtomicBool,
}

impl Shared {
    /// Creates a file, folding the time it took into the moving average.
    pub(super) fn timed_create(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        mode: u32,
        entry: &str,
    ) -> Result<File, ApplyError> {
        let t = std::time::Instant::now();
        let f = create_file(parent, name, mode, entry)?;
        let ns = t.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let avg = self.create_ns.load(Ordering::Relaxed);
        let next = if avg == 0 {
            ns
        } else {
            avg - avg / 16 + ns / 16
        };
        self.create_ns.store(next, Ordering::Relaxed);
        Ok(f)
    }

    pub(super) fn fail(&self, e: ApplyError) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    pub(super) fn take_error(&self) -> Option<ApplyError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(super) fn add_pending<'a>(&self, paths: impl Iterator<Item = &'a [u8]>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for path in paths {
            *p.paths.entry(path.to_vec()).or_insert(0) += 1;
        }
    }

    pub(super) fn done_pending<'a>(&self, paths: impl Iterator<Item = &'a [u8]>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for path in paths {
            if let Some(n) = p.paths.get_mut(path) {
                *n -= 1;
                if *n == 0 {
                    p.paths.remove(path);
                }
            }
        }
        if p.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Waits until none of `paths` is being written by the pool.
    pub(super) fn wait_paths(&self, paths: &[&[u8]]) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while !p.paths.is_empty() && paths.iter().any(|x| p.paths.contains_key(*x)) {
            p.waiters += 1;
            p = self.cv.wait(p).unwrap_or_else(|p| p.into_inner());
            p.waiters -= 1;
        }
    }

    /// Waits until the pool has written everything handed to it.
    pub(super) fn drain(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while !p.paths.is_empty() {
            p.waiters += 1;
            p = self.cv.wait(p).unwrap_or_else(|p| p.into_inner());
            p.waiters -= 1;
        }
    }
}

pub(super) fn write_job(shared: &Shared, job: &Job) -> Result<(), ApplyError> {
    let (_, name) = split_parent(&job.path);
    let mut f = shared.timed_create(job.parent.as_fd(), name, job.meta.mode, &job.display)?;
    f.write_all(&job.data)
        .map_err(|e| ApplyError::io(&job.display, "write", e))?;
    set_meta_fd(f.as_fd(), &job.meta, &job.display, true)
}

/// Files' data buffers up to this capacity go back to the parsing thread
/// for reuse (fewer allocations and page faults; bounded memory).
pub(super) const SPARE_DATA_MAX: usize = 64 << 10;

/// A writer: takes batches until the parsing thread closes the channel, and
/// hands the small data buffers back through `spare`.
pub(super) fn writer(
    shared: &Shared,
    rx: &Mutex<mpsc::Receiver<Vec<Job>>>,
    spare: mpsc::Sender<Vec<u8>>,
) {
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(batch) = job else { break };
        for job in &batch {
            if shared.failed.load(Ordering::SeqCst) {
                break;
            }
            if let Err(e) = write_job(shared, job) {
                shared.fail(e);
            }
        }
        shared.done_pending(batch.iter().map(|j| j.path.as_slice()));
        for job in batch {
            if job.data.capacity() <= SPARE_DATA_MAX {
                // The parsing thread may be gone already: nothing to reuse then.
                let _ = spare.send(job.data);
            }
        }
    }
}
