//! Image references, media types, platform selection, image records and image config to runtime spec.
