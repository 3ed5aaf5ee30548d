//! Confined OCI layer application (whiteouts, hardlinks, xattrs, devices) and layer creation.
