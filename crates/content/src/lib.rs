//! Content-addressable blob store and OCI image-layout reading and writing.
