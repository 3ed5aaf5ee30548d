//! Entry points for the fuzz targets of `berth-fuzz` (crates/fuzz). Not a
//! stable API: it re-exports the private blob sniffer (compression
//! detection and diff_id hashing of gzip/zstd layers during `load`).

pub use crate::sniff::{Sniffed, Sniffer};
