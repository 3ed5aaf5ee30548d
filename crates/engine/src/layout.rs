//! The data root's layout, in one place:
//!
//! ```text
//! <root>/                     the image store (berth-image: OCI layout, records)
//! <root>/snapshotter/         layer and container snapshots (berth-snapshot)
//! <root>/containers/.lock     held while names are claimed and records reaped
//! <root>/containers/<id>/     container.json, config.json, logs
//! <root>/volumes/.lock        held while volumes are made, claimed, filled, removed
//! <root>/volumes/<name>/      volume.json and _data/, the volume's content
//! <root>/networks/            CNI conflists, allocations, attachments (berth-network)
//! <root>/run/                 the runtime's state root (default; --state-root)
//! <root>/run/netns/<id>       a bridge container's pinned network namespace
//! <root>/run/bundles/<id>/    the bundle while the container runs: rootfs/ mount
//! ```

use std::path::{Path, PathBuf};

/// Where each part of berth's state lives under one data root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the data root `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The data root itself (also the image store's root).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshotter's directory.
    pub fn snapshotter(&self) -> PathBuf {
        self.root.join("snapshotter")
    }

    /// The directory holding one directory per container.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The lock serialising name claims and reaping.
    pub fn containers_lock(&self) -> PathBuf {
        self.containers().join(".lock")
    }

    /// Container `id`'s directory.
    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    /// Container `id`'s record.
    pub fn container_record(&self, id: &str) -> PathBuf {
        self.container(id).join("container.json")
    }

    /// Container `id`'s runtime spec, kept between its runs.
    pub fn container_spec(&self, id: &str) -> PathBuf {
        self.container(id).join("config.json")
    }

    /// Container `id`'s output log (JSON lines; the rotated file adds `.1`).
    pub fn container_log(&self, id: &str) -> PathBuf {
        self.container(id).join("ctr.log")
    }

    /// The lock container `id`'s monitor holds while it lives.
    pub fn monitor_lock(&self, id: &str) -> PathBuf {
        self.container(id).join("monitor.lock")
    }

    /// The socket container `id`'s monitor listens on for attach clients.
    pub fn attach_socket(&self, id: &str) -> PathBuf {
        self.container(id).join("attach.sock")
    }

    /// Where container `id`'s monitor writes its own errors.
    pub fn monitor_log(&self, id: &str) -> PathBuf {
        self.container(id).join("monitor.log")
    }

    /// Present while container `id` was stopped on purpose (stop, kill):
    /// its restart policy then does not restart it.
    pub fn stop_marker(&self, id: &str) -> PathBuf {
        self.container(id).join("stopped")
    }

    /// The directory holding one directory per volume.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// The lock serialising volume creation, claims, copy-up and removal.
    pub fn volumes_lock(&self) -> PathBuf {
        self.volumes().join(".lock")
    }

    /// Volume `name`'s directory.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes().join(name)
    }

    /// Volume `name`'s record.
    pub fn volume_record(&self, name: &str) -> PathBuf {
        self.volume(name).join("volume.json")
    }

    /// Volume `name`'s content, what containers mount.
    pub fn volume_data(&self, name: &str) -> PathBuf {
        self.volume(name).join("_data")
    }

    /// The networks: CNI conflists, allocations, attachments (berth-network).
    pub fn networks(&self) -> PathBuf {
        self.root.join("networks")
    }

    /// The runtime state root when none is given.
    pub fn default_state_root(&self) -> PathBuf {
        self.root.join("run")
    }
}

/// Container `id`'s bundle under the runtime state root `state_root`: it
/// only lives while the container runs, like containerd's.
pub fn bundle_dir(state_root: &Path, id: &str) -> PathBuf {
    state_root.join("bundles").join(id)
}
