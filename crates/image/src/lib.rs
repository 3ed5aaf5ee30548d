//! Image references, media types, platform selection, image records, and
//! the operations on them: load (OCI layout / OCI archive / docker save),
//! save (OCI archive), import (rootfs tarball) and garbage collection of
//! blobs. Turning an image into a container (unpack, runtime spec) is
//! berth-engine's job.

mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod import;
pub mod load;
pub mod media;
mod records;
pub mod reference;
pub mod referrers;
pub mod save;
mod sniff;

pub use error::{Error, Result};
pub use media::PlatformSpec;
pub use records::{descriptor, Image, Images, Record};
pub use reference::Reference;
