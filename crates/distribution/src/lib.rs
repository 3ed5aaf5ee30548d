//! Registry client: token auth, pull, push, cross-repo mount, referrers, retries, progress.
