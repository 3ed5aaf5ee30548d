//! berth's engine: the data root and the path from an image to a container.
//!
//! [`Engine`] owns one data root ([`Layout`]): the image store, the
//! snapshotter and the container records. It unpacks an image's layers
//! from a [`BlobProvider`] into snapshots ([`unpack`]), turns the image's
//! config into a runtime spec ([`spec_from_config`]), creates, records and
//! runs containers with the runtime linked in ([`Engine::create`],
//! [`Engine::run`]), keeps the volumes they mount ([`volumes`]), reaps
//! containers whose owner was killed and collects garbage ([`Engine::gc`]). `berth` maps its arguments onto this API; the
//! monitor and the containerd shim are meant to build on it too.
//!
//! A reference goes down through the crates and never back up: engine →
//! image (records, content) / snapshot / archive / runtime.

pub mod attach;
mod container;
mod error;
mod gc;
mod layout;
mod lifecycle;
pub mod limits;
pub mod logs;
pub mod network;
mod run;
pub mod seccomp;
pub mod security;
pub mod spec;
mod unpack;
pub mod user;
pub mod volumes;

use berth_image::Images;
use berth_snapshot::Snapshotter;

pub use container::{
    this_process, valid_id, valid_name, ContainerRecord, RestartPolicy, Status, SNAPSHOT_PREFIX,
};
pub use error::{command_failure_code, Error, Result};
pub use gc::GcReport;
pub use layout::{bundle_dir, Layout};
pub use limits::Limits;
pub use network::{NetworkMode, NetworkOptions};
pub use run::{create_in_runtime, Attach, ContainerOptions, NewContainer};
pub use security::Security;
pub use spec::{spec_from_config, Overrides};
pub use unpack::{unpack, BlobProvider};
pub use volumes::{MountRequest, MountSource, Volume};

/// One data root, opened.
pub struct Engine {
    layout: Layout,
    images: Images,
}

impl Engine {
    /// Opens (creating if needed) the data root `root`.
    pub fn open(root: &std::path::Path) -> Result<Engine> {
        Ok(Engine {
            layout: Layout::new(root),
            images: Images::open(root)?,
        })
    }

    /// Where everything lives.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The image store.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Opens the snapshotter (choosing its driver on first use).
    pub fn snapshotter(&self) -> Result<Snapshotter> {
        Ok(Snapshotter::open(&self.layout.snapshotter(), None)?)
    }

    /// Every container record of the data root.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        container::list(&self.layout)
    }

    /// Unpacks the local image `name` (name, ID or digest prefix; the
    /// host's platform) into committed snapshots and returns the top chain
    /// ID, the parent of its containers' snapshots.
    pub fn unpack(&self, name: &str) -> Result<Option<String>> {
        let _lease = self.images.content().lease()?;
        let image = self
            .images
            .image(name, &berth_image::PlatformSpec::host())?;
        self.unpack_image(&self.snapshotter()?, &image)
    }

    /// Unpacks `image`'s layers from the content store into `snapshotter`
    /// (the caller holds a lease on the store).
    pub(crate) fn unpack_image(
        &self,
        snapshotter: &Snapshotter,
        image: &berth_image::Image,
    ) -> Result<Option<String>> {
        unpack(
            snapshotter,
            self.images.content(),
            image.manifest.layers(),
            image.config.rootfs().diff_ids(),
            &berth_archive::ApplyOptions::default(),
        )
        .map_err(|e| match e {
            Error::Blob { .. } | Error::Apply { .. } | Error::Invalid { .. } => Error::invalid(
                format!("unpacking image {}", image.record.name),
                e.to_string(),
            ),
            e => e,
        })
    }
}
