//! The filesystem driver's [`Appender`]: how upload data reaches the disk.
//!
//! Bodies arrive in pieces of ~512 KiB. A piece is copied once into a
//! 4 KiB-aligned buffer and its aligned part written with `O_DIRECT`
//! straight to the device: no page cache pages, buffer heads or later
//! writeback, which on ext4 took two thirds as much CPU as hashing the data.
//! What does not fill a 4 KiB block (the carry) waits in the buffer for
//! the next piece; [`Appender::settle`] (every request end) writes it with
//! an ordinary buffered write, and a request starting at an unaligned
//! offset writes its first bytes buffered up to the next block boundary.
//! The `fdatasync` at commit makes both kinds durable.
//!
//! Where `O_DIRECT` is refused (a filesystem without it, or a write it
//! rejects) the appender falls back to buffered writes, starting their
//! writeback every [`WRITEBACK_EVERY`] bytes (`sync_file_range`) so the
//! final `fdatasync` only waits for the tail.
//!
//! One write is in flight at a time, on the blocking pool at batch
//! priority (see [`crate::batch`]), so receiving and hashing the next
//! piece overlaps with writing this one.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::Appender;

/// Alignment of direct writes (offset, length and memory).
const ALIGN: usize = 4096;
/// Size of the aligned buffer.
const CAPACITY: usize = 1024 * 1024;
/// Bytes written buffered before their writeback is started.
const WRITEBACK_EVERY: u64 = 2 * 1024 * 1024;

/// Appends to one file (see the module docs).
pub(super) struct FsAppender {
    /// `None` while a write is in flight (it owns the state) or after a
    /// write failed.
    state: Option<State>,
    pending: Option<tokio::task::JoinHandle<io::Result<State>>>,
}

struct State {
    path: PathBuf,
    /// Opened without `O_DIRECT`: unaligned bits, fallback, `fdatasync`.
    buffered: File,
    /// False once `O_DIRECT` was refused for this file.
    direct_ok: bool,
    /// Opened with `O_DIRECT` while a request streams in (released with
    /// the buffer at every settle, so idle sessions hold neither).
    direct: Option<File>,
    /// Bytes in the file.
    stored: u64,
    /// Backing memory; the aligned buffer is `buf[start..start + CAPACITY]`.
    buf: Vec<u8>,
    start: usize,
    /// Bytes at the front of the aligned buffer that belong at `stored`.
    carry: usize,
    writeback: Writeback,
}

impl FsAppender {
    /// Opens (creating) `path` for appending.
    pub(super) fn open(path: &Path) -> io::Result<FsAppender> {
        let buffered = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let stored = buffered.metadata()?.len();
        Ok(FsAppender {
            state: Some(State {
                path: path.to_path_buf(),
                buffered,
                direct_ok: true,
                direct: None,
                stored,
                buf: Vec::new(),
                start: 0,
                carry: 0,
                writeback: Writeback::at(stored),
            }),
            pending: None,
        })
    }

    /// Waits for the write in flight and takes the state back.
    async fn idle(&mut self) -> io::Result<&mut State> {
        if let Some(w) = self.pending.take() {
            self.state = Some(w.await.map_err(io::Error::other)??);
        }
        self.state
            .as_mut()
            .ok_or_else(|| io::Error::other("an earlier write of this upload failed"))
    }

    /// Runs `f` on the state on the blocking pool and waits for it.
    async fn blocking(
        &mut self,
        f: impl FnOnce(&mut State) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        self.idle().await?;
        let Some(mut state) = self.state.take() else {
            return Err(io::Error::other("an earlier write of this upload failed"));
        };
        let state = tokio::task::spawn_blocking(move || f(&mut state).map(|()| state))
            .await
            .map_err(io::Error::other)??;
        self.state = Some(state);
        Ok(())
    }
}

impl State {
    /// Opens the direct descriptor and the aligned buffer if needed; false
    /// when this file is written buffered.
    fn direct_ready(&mut self) -> bool {
        if self.direct.is_none() && self.direct_ok {
            self.direct = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
                .ok();
            self.direct_ok = self.direct.is_some();
        }
        if self.direct_ok && self.buf.is_empty() {
            self.buf = vec![0u8; CAPACITY + ALIGN];
            self.start = self.buf.as_ptr().align_offset(ALIGN);
        }
        self.direct_ok
    }

    /// Writes the carry and frees the buffer and the direct descriptor.
    fn settle(&mut self) -> io::Result<()> {
        self.flush_carry()?;
        self.direct = None;
        self.buf = Vec::new();
        Ok(())
    }

    fn aligned(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + CAPACITY]
    }

    /// Buffered write of `data` at the end of the file.
    fn write_buffered(&mut self, data: &[u8]) -> io::Result<()> {
        self.buffered.write_all_at(data, self.stored)?;
        self.stored += data.len() as u64;
        if let Some((offset, len)) = self.writeback.append(data.len() as u64) {
            start_writeback(&self.buffered, offset, len);
        }
        Ok(())
    }

    /// Appends `parts`, leaving less than one block in the carry.
    fn append(&mut self, parts: &[Bytes]) -> io::Result<()> {
        for part in parts {
            let mut data = &part[..];
            while !data.is_empty() {
                if !self.direct_ready() {
                    self.write_buffered(data)?;
                    break;
                }
                let misaligned = (self.stored % ALIGN as u64) as usize;
                if self.carry == 0 && misaligned != 0 {
                    let head = data.len().min(ALIGN - misaligned);
                    self.write_buffered(&data[..head])?;
                    data = &data[head..];
                    continue;
                }
                let carry = self.carry;
                let n = data.len().min(CAPACITY - carry);
                self.aligned()[carry..carry + n].copy_from_slice(&data[..n]);
                self.carry += n;
                data = &data[n..];
                if self.carry == CAPACITY {
                    self.write_direct()?;
                }
            }
        }
        self.write_direct()
    }

    /// Writes the whole blocks of the carry with `O_DIRECT`; on a refusal,
    /// writes the carry buffered and stays buffered.
    fn write_direct(&mut self) -> io::Result<()> {
        let whole = self.carry / ALIGN * ALIGN;
        let Some(direct) = &self.direct else {
            return self.flush_carry();
        };
        if whole == 0 {
            return Ok(());
        }
        let at = self.stored;
        let block = &self.buf[self.start..self.start + whole];
        match direct.write_all_at(block, at) {
            Ok(()) => {
                self.stored += whole as u64;
                let (start, carry) = (self.start, self.carry);
                self.buf.copy_within(start + whole..start + carry, start);
                self.carry -= whole;
                self.writeback = Writeback::at(self.stored);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Not for this file after all; the bytes a partial write
                // may have stored are rewritten at the same offset.
                self.direct = None;
                self.direct_ok = false;
                self.writeback = Writeback::at(self.stored);
                self.flush_carry()
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the carry buffered, so the file holds everything appended.
    fn flush_carry(&mut self) -> io::Result<()> {
        if self.carry == 0 {
            return Ok(());
        }
        let (start, carry) = (self.start, self.carry);
        let data = self.buf[start..start + carry].to_vec();
        self.carry = 0;
        self.write_buffered(&data)
    }
}

#[async_trait]
impl Appender for FsAppender {
    async fn write(&mut self, parts: Vec<Bytes>) -> io::Result<()> {
        self.idle().await?;
        if parts.iter().all(|p| p.is_empty()) {
            return Ok(());
        }
        let Some(mut state) = self.state.take() else {
            return Err(io::Error::other("an earlier write of this upload failed"));
        };
        self.pending = Some(tokio::task::spawn_blocking(move || {
            crate::batch::run(|| state.append(&parts)).map(|()| state)
        }));
        Ok(())
    }

    async fn settle(&mut self) -> io::Result<()> {
        let state = self.idle().await?;
        if state.carry == 0 {
            state.direct = None;
            state.buf = Vec::new();
            return Ok(());
        }
        self.blocking(State::settle).await
    }

    async fn sync(&mut self) -> io::Result<()> {
        self.blocking(|s| {
            s.settle()?;
            s.buffered.sync_data()
        })
        .await
    }
}

/// Which buffered bytes still need their writeback started.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Writeback {
    /// File size once every write so far has finished.
    end: u64,
    /// Where the data whose writeback has not been started begins.
    unstarted: u64,
}

impl Writeback {
    /// Bookkeeping for a file that already holds `size` bytes.
    fn at(size: u64) -> Writeback {
        Writeback {
            end: size,
            unstarted: size,
        }
    }

    /// Records an append of `len` bytes; returns the range (offset, length)
    /// whose writeback to start after it once [`WRITEBACK_EVERY`] bytes
    /// have gathered.
    fn append(&mut self, len: u64) -> Option<(u64, u64)> {
        self.end += len;
        (self.end - self.unstarted >= WRITEBACK_EVERY).then(|| {
            let range = (self.unstarted, self.end - self.unstarted);
            self.unstarted = self.end;
            range
        })
    }
}

/// Starts writeback of `len` bytes of `file` from `offset` without waiting
/// for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: no cache flush). Only
/// a hint: the final `fdatasync` syncs whatever it did not, so failures
/// are ignored.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // open for as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_is_started_for_every_appended_byte_once_per_two_mib() {
        const MIB: u64 = 1024 * 1024;
        // A resumed upload: 100 bytes were stored before.
        let mut w = Writeback::at(100);
        assert_eq!(w.append(MIB), None);
        assert_eq!(w.append(MIB), Some((100, 2 * MIB)));
        assert_eq!(w.append(3 * MIB), Some((100 + 2 * MIB, 3 * MIB)));
        assert_eq!(w.append(512 * 1024), None);
        assert_eq!(w.append(0), None);
        assert_eq!(w.end, 100 + 5 * MIB + 512 * 1024);
        assert_eq!(w.unstarted, 100 + 5 * MIB);
    }

    /// Pieces of awkward sizes, settled at awkward offsets (each settle is
    /// a request end), in several sessions: the file is exactly the bytes
    /// appended, whether written directly or buffered.
    #[tokio::test]
    async fn unaligned_pieces_and_settles_store_exactly_what_was_appended() {
        appends_store_exactly_what_was_appended(false).await;
    }

    /// The same through the buffered fallback (a filesystem refusing
    /// `O_DIRECT`).
    #[tokio::test]
    async fn the_buffered_fallback_stores_exactly_what_was_appended() {
        appends_store_exactly_what_was_appended(true).await;
    }

    async fn appends_store_exactly_what_was_appended(buffered: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut at = 0;
        let mut used_direct = false;
        for (request, sizes) in [
            vec![1, 4095, 700_000, 3],
            vec![4096 * 3],
            vec![1_500_000, 2_000_001],
            vec![10, 20],
        ]
        .into_iter()
        .enumerate()
        {
            // A new appender per two requests, like a session reloaded.
            let mut w = FsAppender::open(&path).unwrap();
            if buffered {
                w.idle().await.unwrap().direct_ok = false;
            }
            for n in sizes {
                let piece = Bytes::copy_from_slice(&data[at..at + n]);
                let (a, b) = piece.split_at(n / 3);
                w.write(vec![
                    Bytes::copy_from_slice(a),
                    Bytes::new(),
                    Bytes::copy_from_slice(b),
                ])
                .await
                .unwrap();
                at += n;
            }
            used_direct |= w.idle().await.unwrap().direct.is_some();
            w.settle().await.unwrap();
            let state = w.idle().await.unwrap();
            assert!(
                state.direct.is_none() && state.buf.is_empty(),
                "released at settle"
            );
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                at as u64,
                "request {request}"
            );
            if request % 2 == 1 {
                w.sync().await.unwrap();
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), &data[..at]);
        match buffered {
            true => assert!(!used_direct, "the fallback must not write directly"),
            false => assert!(
                used_direct,
                "O_DIRECT is expected to work on the test directory's filesystem \
                 (ext4, XFS, or tmpfs on Linux 6.6+); set TMPDIR to a directory on one"
            ),
        }
    }
}
