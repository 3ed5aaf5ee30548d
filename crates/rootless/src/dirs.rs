//! The user's runtime directory, where rootless runtime state lives.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::Error;

/// `$XDG_RUNTIME_DIR`, or `/run/user/UID` when that is unset and the
/// directory exists and belongs to the caller; an error naming the fix
/// otherwise (never a shared directory such as /tmp).
pub fn runtime_dir() -> Result<PathBuf, Error> {
    let uid = nix::unistd::Uid::effective().as_raw();
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir);
        if !path.is_absolute() {
            return Err(Error::BadRuntimeDir {
                path,
                reason: "not an absolute path".into(),
            });
        }
        return Ok(path);
    }
    let fallback = PathBuf::from(format!("/run/user/{uid}"));
    match std::fs::metadata(&fallback) {
        Ok(m) if m.is_dir() && m.uid() == uid => Ok(fallback),
        _ => Err(Error::NoRuntimeDir { uid }),
    }
}
