//! Progress events of a pull or push, for a terminal display or a log.

use oci_spec::image::Digest;

/// Where a blob is in a pull or push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Already in the local store (pull) or in the registry (push).
    Exists,
    /// Waiting for a download or upload slot.
    Waiting,
    /// Bytes are flowing.
    Transferring,
    /// The connection dropped; resumed at this offset.
    Resumed(u64),
    /// Downloaded and verified into the content store, or uploaded.
    Done,
    /// Being applied into its snapshot.
    Extracting,
    /// Mounted from another repository of the registry (push).
    Mounted,
}

impl State {
    /// A word for one-line-per-event output.
    pub fn word(&self) -> String {
        match self {
            State::Exists => "exists".into(),
            State::Waiting => "waiting".into(),
            State::Transferring => "transferring".into(),
            State::Resumed(at) => format!("resumed at byte {at}"),
            State::Done => "done".into(),
            State::Extracting => "extracting".into(),
            State::Mounted => "mounted".into(),
        }
    }
}

/// A progress event.
#[derive(Debug, Clone)]
pub enum Event {
    /// A blob changed state.
    Blob {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Its new state.
        state: State,
    },
    /// More bytes of a blob moved; `done` counts from the blob's start.
    Bytes {
        /// The blob.
        digest: Digest,
        /// Bytes transferred so far.
        done: u64,
    },
}

/// Receives progress events (from several tasks at once).
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: Event);
}

/// Progress nobody watches.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}
