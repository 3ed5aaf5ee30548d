//! Errors of the engine. Each names the thing involved (image, layer,
//! container, path) and says each cause once: a wrapped error is either
//! shown (transparent) or summarised, never both.

use std::path::PathBuf;

/// Result with the engine's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong between an image and a running container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the image store.
    #[error(transparent)]
    Image(Box<berth_image::Error>),
    /// From the content store.
    #[error(transparent)]
    Content(Box<berth_content::Error>),
    /// From the snapshotter.
    #[error(transparent)]
    Snapshot(Box<berth_snapshot::SnapshotError>),
    /// From the runtime.
    #[error(transparent)]
    Runtime(Box<berth_runtime::Error>),
    /// From networking (CNI, networks, namespaces).
    #[error(transparent)]
    Network(Box<berth_network::Error>),
    /// A layer blob could not be opened.
    #[error("layer {index} ({digest}): cannot open its blob: {cause}")]
    Blob {
        /// Position of the layer in the image (0 = base).
        index: usize,
        /// The blob's digest.
        digest: String,
        /// Why.
        cause: String,
    },
    /// A layer could not be applied into its snapshot.
    #[error("layer {index} (diff_id {diff_id}): {cause}")]
    Apply {
        /// Position of the layer in the image (0 = base).
        index: usize,
        /// The layer's diff_id from the image config.
        diff_id: String,
        /// What went wrong (boxed: it is large, and rare).
        cause: Box<berth_archive::ApplyError>,
    },
    /// The container name is taken.
    #[error("the container name {name:?} is already in use by container {id} (choose another --name, or remove that container)")]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// No container has this name, id or id prefix.
    #[error("no container with name or ID {query:?} found (see `berth ps -a`)")]
    NoSuchContainer {
        /// The name, id or prefix asked for.
        query: String,
    },
    /// An id prefix matches more than one container.
    #[error("more than one container matches {query:?}: {ids} (give more digits or the name)")]
    Ambiguous {
        /// The prefix asked for.
        query: String,
        /// The ids it matches, comma-separated.
        ids: String,
    },
    /// No volume has this name.
    #[error("no volume with name {name:?} found (see `berth volume ls`)")]
    NoSuchVolume {
        /// The name asked for.
        name: String,
    },
    /// `berth volume create NAME` of a name in use.
    #[error("volume with name {name:?} already exists (choose another name, or add --ignore)")]
    VolumeExists {
        /// The name asked for.
        name: String,
    },
    /// A volume that containers use cannot be removed.
    #[error("volume {name:?} is being used by container(s) {containers} (remove them first, or use `volume rm -f`, which removes them too)")]
    VolumeInUse {
        /// The volume.
        name: String,
        /// The names of the containers using it, comma-separated.
        containers: String,
    },
    /// The container is not in a state that allows the operation.
    #[error("container {name}: {reason}")]
    State {
        /// The container's name.
        name: String,
        /// Why the operation is refused, and what to do.
        reason: String,
    },
    /// An input that is not valid: a name, a path, a config field.
    #[error("{what}: {reason}")]
    Invalid {
        /// The input, named as the user gave it.
        what: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A file system operation on a named path failed.
    #[error("{path}: {cause}")]
    Io {
        /// The path involved, or what was being done to it.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {cause}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        cause: nix::errno::Errno,
    },
}

/// The wrapped errors are boxed: `Error` stays small on every `Result`.
macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),*) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Error {
                Error::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(
    Image(berth_image::Error),
    Content(berth_content::Error),
    Snapshot(berth_snapshot::SnapshotError),
    Runtime(berth_runtime::Error),
    Network(berth_network::Error)
);

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// An invalid input.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A failed system call.
    pub fn sys(what: impl Into<String>, cause: nix::errno::Errno) -> Error {
        Error::Sys {
            what: what.into(),
            cause,
        }
    }
}

/// The exit code podman gives when a container's command could not be
/// started, from the runtime's message: 127 when it is not found, 126
/// when it is found but cannot be executed; None for any other error
/// (berth's own: 125).
pub fn command_failure_code(message: &str) -> Option<i32> {
    if message.contains("no such executable file") || message.contains("executable file not found")
    {
        Some(127)
    } else if message.contains("exec") && message.contains("Permission denied") {
        Some(126)
    } else {
        None
    }
}
