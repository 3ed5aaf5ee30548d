//! A writer adapter that, while a blob streams into the content store,
//! recognises layer compression and hashes the uncompressed stream (the
//! layer's diff_id) in the same pass.

use std::io::Write;

use berth_core::digest::Hasher;
use oci_spec::image::Digest;

use crate::media::Compression;

/// What was learned about a blob while it was written.
#[derive(Debug, Clone)]
pub struct Sniffed {
    /// The compression its first bytes show.
    pub compression: Compression,
    /// The digest of the uncompressed stream (for an uncompressed blob:
    /// `None`, meaning the diff_id is the blob digest), or why the stream
    /// could not be decompressed.
    pub diff_id: std::result::Result<Option<Digest>, String>,
}

type Worker = std::thread::JoinHandle<std::result::Result<Digest, String>>;

/// The longest magic number [`Compression::detect`] reads (zstd's).
const MAGIC_LEN: usize = 4;

enum Decoder {
    /// The first bytes, kept until there are enough to recognise the
    /// compression (a writer may hand them over a few at a time).
    Undecided(Vec<u8>),
    Plain,
    /// Decompression and hashing run on their own thread, fed through a
    /// bounded channel, so they overlap with hashing and writing the blob.
    Worker(std::sync::mpsc::SyncSender<Vec<u8>>, Worker),
    /// The worker stopped early (its error comes from joining it).
    Stopped(Worker),
}

/// The uncompressed side of a layer: hashes it and refuses bombs with
/// berth-archive's limits (total size, and inflation ratio once 16 MiB
/// have come out).
struct Limited {
    hasher: Hasher,
    written: u64,
    compressed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    max_size: u64,
    max_ratio: u64,
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        let compressed = self
            .compressed
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1);
        if self.written > self.max_size {
            return Err(std::io::Error::other(format!(
                "it inflates to more than {} bytes",
                self.max_size
            )));
        }
        if self.max_ratio > 0
            && self.written > 16 << 20
            && self.written / compressed > self.max_ratio
        {
            return Err(std::io::Error::other(format!(
                "it inflates more than {}-fold (a decompression bomb?)",
                self.max_ratio
            )));
        }
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompresses chunks from `rx` into a sha256 hasher.
fn decode(
    compression: Compression,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    compressed: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::result::Result<Digest, String> {
    fn run<D: Write>(
        mut decoder: D,
        rx: std::sync::mpsc::Receiver<Vec<u8>>,
    ) -> std::result::Result<D, String> {
        for chunk in rx {
            decoder.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        Ok(decoder)
    }
    let limits = berth_archive::ApplyOptions::default();
    let sink = Limited {
        hasher: Hasher::sha256(),
        written: 0,
        compressed,
        max_size: limits.max_size,
        max_ratio: limits.max_ratio,
    };
    match compression {
        Compression::Gzip => {
            let d = run(flate2::write::MultiGzDecoder::new(sink), rx)?;
            d.finish()
                .map(|l| l.hasher.digest())
                .map_err(|e| e.to_string())
        }
        Compression::Zstd => {
            let d = zstd::stream::write::Decoder::new(sink).map_err(|e| e.to_string())?;
            // finish, not flush: only finish fails on a stream that stops
            // inside a frame (which the unpacker's reader refuses).
            run(d, rx)?
                .finish()
                .map(|l| l.hasher.digest())
                .map_err(|e| e.to_string())
        }
        Compression::None => Err("not compressed".into()),
    }
}

/// Forwards every byte to `inner` and feeds a decompressor + hasher on the
/// side. Decompression failures never fail the write (the blob may not be a
/// layer at all); they are reported by [`Sniffer::finish`].
pub struct Sniffer<W: Write> {
    inner: W,
    decoder: Decoder,
    compression: Compression,
    compressed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<W: Write> Sniffer<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Sniffer<W> {
        Sniffer {
            inner,
            decoder: Decoder::Undecided(Vec::new()),
            compression: Compression::None,
            compressed: Default::default(),
        }
    }

    /// Picks the compression from the blob's first bytes and starts the
    /// decompressor, if any, with them.
    fn start(&mut self, head: Vec<u8>) {
        self.compression = Compression::detect(&head);
        self.decoder = match self.compression {
            Compression::None => Decoder::Plain,
            c => {
                let (tx, rx) = std::sync::mpsc::sync_channel(16);
                let compressed = self.compressed.clone();
                Decoder::Worker(tx, std::thread::spawn(move || decode(c, rx, compressed)))
            }
        };
        self.send(head);
    }

    fn feed(&mut self, buf: &[u8]) {
        self.compressed
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Decoder::Undecided(head) = &mut self.decoder {
            head.extend_from_slice(buf);
            if head.len() >= MAGIC_LEN {
                let head = std::mem::take(head);
                self.start(head);
            }
            return;
        }
        self.send(buf.to_vec());
    }

    /// Hands a chunk to the decompressor, if one runs.
    fn send(&mut self, chunk: Vec<u8>) {
        if let Decoder::Worker(tx, _) = &self.decoder {
            if tx.send(chunk).is_err() {
                let old = std::mem::replace(&mut self.decoder, Decoder::Plain);
                if let Decoder::Worker(_, handle) = old {
                    self.decoder = Decoder::Stopped(handle);
                }
            }
        }
    }

    /// Ends the stream: returns the inner writer and what was learned.
    pub fn finish(mut self) -> (W, Sniffed) {
        // A blob shorter than the longest magic number.
        if let Decoder::Undecided(head) = &mut self.decoder {
            let head = std::mem::take(head);
            if !head.is_empty() {
                self.start(head);
            }
        }
        let join = |handle: Worker| {
            handle
                .join()
                .unwrap_or_else(|_| Err("the decompressor panicked".into()))
                .map(Some)
        };
        let diff_id = match self.decoder {
            Decoder::Undecided(_) | Decoder::Plain => Ok(None),
            Decoder::Worker(tx, handle) => {
                drop(tx);
                join(handle)
            }
            Decoder::Stopped(handle) => join(handle),
        };
        (
            self.inner,
            Sniffed {
                compression: self.compression,
                diff_id,
            },
        )
    }
}

impl<W: Write> Write for Sniffer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.feed(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_diff_id_is_the_uncompressed_digest() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"layer bytes").unwrap();
        let gz = enc.finish().unwrap();
        let mut s = Sniffer::new(Vec::new());
        for chunk in gz.chunks(3) {
            s.write_all(chunk).unwrap();
        }
        let (out, sniffed) = s.finish();
        assert_eq!(out, gz);
        assert_eq!(sniffed.compression, Compression::Gzip);
        assert_eq!(
            sniffed.diff_id.unwrap(),
            Some(berth_core::digest::sha256_of(b"layer bytes"))
        );
    }

    #[test]
    fn zstd_and_plain_and_broken_streams() {
        let z = zstd::encode_all(&b"zz"[..], 1).unwrap();
        let mut s = Sniffer::new(Vec::new());
        s.write_all(&z).unwrap();
        assert_eq!(
            s.finish().1.diff_id.unwrap(),
            Some(berth_core::digest::sha256_of(b"zz"))
        );
        let mut s = Sniffer::new(Vec::new());
        s.write_all(b"plain tar").unwrap();
        assert_eq!(s.finish().1.diff_id.unwrap(), None);
        let mut s = Sniffer::new(Vec::new());
        s.write_all(&[0x1f, 0x8b, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3])
            .unwrap();
        assert!(s.finish().1.diff_id.is_err());
    }

    #[test]
    fn compression_is_recognised_in_writes_of_one_byte() {
        // Found by fuzzing (layer_sniff): the compression was picked from
        // the first write alone, so a gzip or zstd layer whose first write
        // was shorter than its magic number counted as uncompressed.
        let z = zstd::encode_all(&b"zz"[..], 1).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"zz").unwrap();
        for (blob, compression) in [
            (z, Compression::Zstd),
            (enc.finish().unwrap(), Compression::Gzip),
            (b"zz".to_vec(), Compression::None),
            (vec![0x1f, 0x8b], Compression::Gzip),
        ] {
            let mut s = Sniffer::new(Vec::new());
            for b in &blob {
                s.write_all(std::slice::from_ref(b)).unwrap();
            }
            let (out, sniffed) = s.finish();
            assert_eq!(out, blob);
            assert_eq!(sniffed.compression, compression);
            match compression {
                Compression::None => assert_eq!(sniffed.diff_id.unwrap(), None),
                _ if blob.len() > 2 => assert_eq!(
                    sniffed.diff_id.unwrap(),
                    Some(berth_core::digest::sha256_of(b"zz"))
                ),
                _ => assert!(sniffed.diff_id.is_err()),
            }
        }
    }

    #[test]
    fn truncated_zstd_is_an_error() {
        // Found by fuzzing (berth-fuzz's layer_sniff): a zstd stream cut
        // inside its frame hashed as whatever had been inflated so far.
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let z = zstd::encode_all(&data[..], 1).unwrap();
        let mut s = Sniffer::new(Vec::new());
        s.write_all(&z[..z.len() / 2]).unwrap();
        let err = s.finish().1.diff_id.unwrap_err();
        assert!(err.contains("incomplete frame"), "{err}");
    }

    #[test]
    fn decompression_bombs_are_reported() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let gz = enc.finish().unwrap();
        assert!(
            gz.len() < (64 << 20) / 1000,
            "the test needs a ratio above 1000"
        );
        let mut s = Sniffer::new(std::io::sink());
        s.write_all(&gz).unwrap();
        let err = s.finish().1.diff_id.unwrap_err();
        assert!(err.contains("decompression bomb"), "{err}");
    }
}
