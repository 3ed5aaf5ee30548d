//! Image references, media types, platform selection, image records, and
//! the operations on them: load (OCI layout / OCI archive / docker save),
//! save (OCI archive), import (rootfs tarball), garbage collection, and the
//! image config → runtime spec conversion.

mod error;
pub mod gc;
pub mod import;
pub mod load;
pub mod media;
mod records;
pub mod reference;
pub mod save;
mod sniff;
pub mod spec;
pub mod user;

pub use error::{Error, Result};
pub use media::PlatformSpec;
pub use records::{descriptor, Image, Images, Record};
pub use reference::Reference;
pub use spec::{spec_from_config, BindMount, Overrides};
