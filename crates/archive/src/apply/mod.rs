//! The layer applier: one thread inflates, one hashes, the parsing thread
//! parses and applies; while creates are slow or the parsing thread is the
//! slowest stage, a pool that grows as it falls behind writes small regular
//! files. Ordering rules: directories, links, devices and
//! whiteouts are done by the parsing thread; an operation on a path (or below
//! a path, or a hardlink to a path) still being written by the pool waits for
//! it; removals of whole trees wait for the pool to drain; directory times are
//! set last.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | `apply_layer`: the pipeline (inflater thread → parser → writer pool) and the diff_id check |
//! | `stream.rs` | the reading side: counting and size/ratio-limited readers, the inflater and hasher threads, the chunks and whether the parser is behind |
//! | `entry.rs` | the parsing thread's `Applier`: one tar entry at a time, parent directories, copy-up, the end pass |
//! | `whiteouts.rs` | `.wh.` whiteouts and opaque directories, in both whiteout modes |
//! | `pool.rs` | the writer pool: jobs, the writer loop, pending paths and who waits for them, the shared error, create latency |
//! | `files.rs` | one file's metadata (`Meta`) and creating and setting it |
//! | `paths.rs` | entry names: normalisation, joining, parents, opening inside the root, error naming |

mod entry;
mod files;
mod paths;
mod pool;
mod stream;
mod whiteouts;

use std::collections::HashSet;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::Digest;

use crate::tarstream::TarStream;
use crate::{Applied, ApplyError, ApplyOptions, Compression, WhiteoutMode};
use entry::Applier;
use pool::{writer, Job, Pending, Shared};
use stream::{hash_chunks, inflate, Chunks, Counting, Limited, CHUNKS_IN_FLIGHT};

/// Files up to this size are handed to the writer pool; larger ones are
/// streamed by the parsing thread.
const POOL_FILE_MAX: u64 = 1 << 20;
/// Batches queued for the writers; a full queue starts one more writer.
const WRITER_QUEUE: usize = 2;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Applies one layer blob to `target` in a single streaming pass and returns
/// its diff_id (the sha256 of the uncompressed tar stream) and size.
///
/// `target` must exist. In [`WhiteoutMode::Overlay`] it should be an empty
/// overlay upper directory; in [`WhiteoutMode::Remove`] it holds the parent
/// layers already. If `options.expected_diff_id` is set and differs, the call
/// fails with [`ApplyError::DiffIdMismatch`] after applying: the caller must
/// then discard `target`, as after any other error.
pub fn apply_layer<R: Read + Send>(
    reader: R,
    compression: Compression,
    target: &Path,
    options: &ApplyOptions,
) -> Result<Applied, ApplyError> {
    let open_dir = |p: &Path| {
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ApplyError::Target {
            path: p.to_path_buf(),
            source: e.into(),
        })
    };
    let root = open_dir(target)?;
    let mut lowers = Vec::new();
    if options.whiteouts == WhiteoutMode::Overlay {
        for l in &options.lowers {
            lowers.push(open_dir(l)?);
        }
    }

    let count = Arc::new(AtomicU64::new(0));
    let counting = BufReader::with_capacity(
        256 << 10,
        Counting {
            inner: reader,
            count: count.clone(),
        },
    );
    let (decoded, compressed): (Box<dyn Read + Send>, _) = match compression {
        Compression::None => (Box::new(counting), None),
        Compression::Gzip => (
            Box::new(flate2::bufread::MultiGzDecoder::new(counting)),
            Some(count),
        ),
        Compression::Zstd => (
            Box::new(
                zstd::stream::read::Decoder::with_buffer(counting).map_err(|e| {
                    ApplyError::Stream {
                        entry: "zstd header".to_string(),
                        source: e,
                    }
                })?,
            ),
            Some(count),
        ),
    };
    let limited = Limited {
        inner: decoded,
        total: 0,
        compressed,
        max_size: options.max_size,
        max_ratio: options.max_ratio,
    };

    let shared = Shared {
        root,
        pending: Mutex::new(Pending::default()),
        cv: Condvar::new(),
        error: Mutex::new(None),
        failed: AtomicBool::new(false),
        create_ns: AtomicU64::new(0),
        parser_behind: AtomicBool::new(false),
    };

    let (tx, rx) = mpsc::sync_channel::<Vec<Job>>(WRITER_QUEUE);
    let rx = &Mutex::new(rx);
    let shared = &shared;
    std::thread::scope(|scope| -> Result<Applied, ApplyError> {
        // One thread inflates, one hashes, this one parses and applies.
        let (inflated_tx, inflated_rx) =
            mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
        let inflater = scope.spawn(move || inflate(limited, inflated_tx, spare_rx));
        let hasher = scope.spawn(move || hash_chunks(inflated_rx, chunk_tx));
        let mut stream = TarStream::new(Chunks {
            rx: chunk_rx,
            spare: spare_tx,
            cur: Vec::new(),
            pos: 0,
            ready: 0,
            behind: &shared.parser_behind,
        });
        // Writers are started by the parsing thread once creates turn out
        // slow, one more each time those running fall behind (see flush_batch).
        let (spare_data_tx, spare_data) = mpsc::channel::<Vec<u8>>();
        let spawn_writer = || {
            let spare = spare_data_tx.clone();
            scope.spawn(move || writer(shared, rx, spare));
        };
        let mut applier = Applier {
            shared,
            opts: options,
            tx: (options.threads > 0).then_some(tx),
            batch: Vec::new(),
            batch_bytes: 0,
            written: HashSet::new(),
            touched_dirs: HashSet::new(),
            dir_times: Vec::new(),
            opaque: Vec::new(),
            lowers,
            spawn_writer: &spawn_writer,
            spare_data,
            writers: 0,
            parent_cache: None,
        };
        let run = (|| {
            while let Some(entry) = stream.next_entry()? {
                applier.check_pool()?;
                applier.apply_entry(&entry, &mut stream)?;
            }
            applier.finish()
        })();
        applier.tx = None;
        let writers = applier.writers;
        shared.drain();
        // Hash whatever follows the end-of-archive marker too: the diff_id covers the whole stream.
        let mut chunks = stream.into_inner();
        let run = run.and_then(|()| {
            io::copy(&mut chunks, &mut io::sink())
                .map(|_| ())
                .map_err(|e| ApplyError::from_stream(e, "end of archive"))
        });
        // On error the receiver is gone, so the hasher and then the inflater
        // stop at their next send.
        drop(chunks.rx);
        let hasher = hasher
            .join()
            .map_err(|_| ApplyError::io("", "hash", io::Error::other("hash thread panicked")))?;
        let limited = inflater.join().map_err(|_| {
            ApplyError::io("", "inflate", io::Error::other("inflate thread panicked"))
        })?;
        run?;
        let diff_id = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(expected) = &options.expected_diff_id {
            if !expected.eq_ignore_ascii_case(&diff_id) {
                return Err(ApplyError::DiffIdMismatch {
                    expected: expected.clone(),
                    actual: diff_id,
                });
            }
        }
        Ok(Applied {
            diff_id,
            size: limited.total,
            writers,
        })
    })
}
