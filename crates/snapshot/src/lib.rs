//! Snapshotters keyed by chain IDs: overlay and a plain-copy fallback.
