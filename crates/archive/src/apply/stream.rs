//! The reading side of the applier: readers that count and limit the
//! compressed and inflated bytes, and the inflater thread handing chunks to
//! the parser.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use sha2::{Digest, Sha256};

use crate::BombError;

/// Counts compressed bytes read.
pub(super) struct Counting<R> {
    pub(super) inner: R,
    pub(super) count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Counts the uncompressed stream and enforces the bomb limits.
pub(super) struct Limited<R> {
    pub(super) inner: R,
    pub(super) total: u64,
    pub(super) compressed: Option<Arc<AtomicU64>>,
    pub(super) max_size: u64,
    pub(super) max_ratio: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.max_size {
            return Err(io::Error::other(BombError(format!(
                "uncompressed stream exceeds the {}-byte size limit",
                self.max_size
            ))));
        }
        if let Some(c) = &self.compressed {
            let c = c.load(Ordering::Relaxed).max(1);
            if self.max_ratio > 0 && self.total > 16 << 20 && self.total / c > self.max_ratio {
                return Err(io::Error::other(BombError(format!(
                    "{} compressed bytes inflated to {} (ratio above {})",
                    c, self.total, self.max_ratio
                ))));
            }
        }
        Ok(n)
    }
}

/// Decompressed bytes handed from the inflater to the parser at once.
pub(super) const CHUNK_SIZE: usize = 256 << 10;
/// Chunks queued between two of the threads.
pub(super) const CHUNKS_IN_FLIGHT: usize = 8;

/// Reads the decompressed stream in large chunks and sends them on, reusing
/// the buffers the parser hands back (no allocation or zeroing per chunk).
pub(super) fn inflate<R: Read>(
    mut r: Limited<R>,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    spare: mpsc::Receiver<Vec<u8>>,
) -> Limited<R> {
    loop {
        let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK_SIZE]);
        buf.resize(CHUNK_SIZE, 0);
        let mut got = 0;
        // Fill the chunk (decoders return small reads) to keep channel traffic low.
        while got < buf.len() {
            match r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return r;
                }
            }
        }
        if got == 0 {
            return r;
        }
        buf.truncate(got);
        if tx.send(Ok(buf)).is_err() {
            return r;
        }
    }
}

/// Hashes the inflated chunks in order (the diff_id covers the whole
/// stream) on their way from the inflater to the parser. A thread of its
/// own: the scheduler then shares the work of three threads over the cores
/// instead of loading it on the inflater or the parser, either of which can
/// be the slower one.
pub(super) fn hash_chunks(
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> Sha256 {
    let mut hasher = Sha256::new();
    for chunk in rx {
        if let Ok(c) = &chunk {
            hasher.update(c);
        }
        if tx.send(chunk).is_err() {
            break;
        }
    }
    hasher
}

/// `Read` over the hashed chunks; returns each chunk's buffer for reuse,
/// and tells whether the parser is the slowest stage.
pub(super) struct Chunks<'a> {
    pub(super) rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    pub(super) spare: mpsc::Sender<Vec<u8>>,
    /// Moving average (out of [`READY_SCALE`]) of how often the next chunk
    /// was waiting already when the parser asked for it.
    pub(super) ready: u32,
    /// Set while that average is at least 3/4: the parser is behind.
    pub(super) behind: &'a AtomicBool,
    pub(super) cur: Vec<u8>,
    pub(super) pos: usize,
}

/// Fixed-point scale of [`Chunks::ready`].
const READY_SCALE: u32 = 1024;

impl Chunks<'_> {
    /// Moves on to the next chunk once the current one is used up; `false`
    /// at the end of the stream.
    fn refill(&mut self) -> io::Result<bool> {
        while self.pos == self.cur.len() {
            let (next, was_ready) = match self.rx.try_recv() {
                Ok(next) => (next, true),
                Err(mpsc::TryRecvError::Disconnected) => return Ok(false),
                Err(mpsc::TryRecvError::Empty) => match self.rx.recv() {
                    Ok(next) => (next, false),
                    Err(_) => return Ok(false),
                },
            };
            self.ready = self.ready - self.ready / 8 + if was_ready { READY_SCALE / 8 } else { 0 };
            self.behind
                .store(self.ready >= READY_SCALE * 3 / 4, Ordering::Relaxed);
            match next {
                Ok(chunk) => {
                    let used = std::mem::replace(&mut self.cur, chunk);
                    if used.capacity() == CHUNK_SIZE {
                        // The inflater may be gone already: nothing to reuse then.
                        let _ = self.spare.send(used);
                    }
                    self.pos = 0;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let have = self.fill_buf()?;
            let n = buf.len().min(have.len());
            buf[..n].copy_from_slice(&have[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

/// The parser reads file contents straight out of the chunks.
impl BufRead for Chunks<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.refill()? {
            return Ok(&[]);
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.cur.len());
    }
}
