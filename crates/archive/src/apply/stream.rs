//! The reading side of the applier: readers that count and limit the
//! compressed and inflated bytes, and the inflater thread handing chunks to
//! the parser.

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
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
/// Chunks queued between the two threads.
pub(super) const CHUNKS_IN_FLIGHT: usize = 16;

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

/// `Read` over the inflater's chunks; hashes each chunk as it arrives (the
/// diff_id covers the whole stream) and returns its buffer for reuse.
pub(super) struct Chunks {
    pub(super) rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    pub(super) spare: mpsc::Sender<Vec<u8>>,
    pub(super) hasher: Sha256,
    pub(super) cur: Vec<u8>,
    pub(super) pos: usize,
}

impl Chunks {
    /// Moves on to the next chunk once the current one is used up; `false`
    /// at the end of the stream.
    fn refill(&mut self) -> io::Result<bool> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    let used = std::mem::replace(&mut self.cur, chunk);
                    if used.capacity() == CHUNK_SIZE {
                        // The inflater may be gone already: nothing to reuse then.
                        let _ = self.spare.send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl Read for Chunks {
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
impl BufRead for Chunks {
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
