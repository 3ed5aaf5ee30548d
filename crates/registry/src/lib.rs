//! Distribution-spec v1.1 registry server with filesystem and S3 storage, auth and online GC.
