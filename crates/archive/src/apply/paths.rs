//! Entry names: normalisation (no `..` out of the root, no absolute
//! names), joining, parents, opening directories inside the root, and the
//! error that names a symlinked parent.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

use crate::fsops::open_dir_in;
use crate::ApplyError;

/// The error for an entry whose parent directory `rel` could not be
/// opened. When a component of `rel` is a symlink, the usual cause is that
/// its target, resolved inside the layer's root as every path here is,
/// leads nowhere or not to a directory: say so, naming the link.
pub(super) fn parent_error(root: BorrowedFd<'_>, rel: &[u8], entry: &str, e: Errno) -> ApplyError {
    if matches!(e, Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) {
        let mut prefix: &[u8] = b"";
        for comp in rel.split(|&b| b == b'/') {
            let Ok(dir) = open_dir_in(root, prefix) else {
                break;
            };
            let here = &rel[..prefix.len() + usize::from(!prefix.is_empty()) + comp.len()];
            if let Ok(target) = nix::fcntl::readlinkat(dir.as_fd(), os(comp)) {
                return ApplyError::Refused {
                    entry: entry.to_string(),
                    reason: format!(
                        "its parent {:?} is a symlink to {:?}, which is resolved inside the image's root and leads to no directory there ({e}); the layer expects a directory the lower layers do not have",
                        String::from_utf8_lossy(here),
                        target
                    ),
                };
            }
            prefix = here;
        }
    }
    ApplyError::io(entry, "open parent directory", e)
}

pub(super) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// `parent/name`, or `name` at the root.
pub(super) fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(parent.len() + name.len() + 1);
    full.extend_from_slice(parent);
    if !full.is_empty() {
        full.push(b'/');
    }
    full.extend_from_slice(name);
    full
}

/// Every proper ancestor of `path` plus `path` itself.
pub(super) fn self_and_ancestors(path: &[u8]) -> Vec<&[u8]> {
    let mut v = vec![path];
    for (i, &b) in path.iter().enumerate() {
        if b == b'/' {
            v.push(&path[..i]);
        }
    }
    v
}

/// Turns an archive name into a clean relative path, refusing escapes. A
/// leading `/` is dropped, as GNU tar, containerd and podman do (umoci
/// writes the layer root as `/`): every path is resolved inside the layer
/// root anyway, so an absolute name cannot reach outside it.
pub(super) fn normalize(raw: &[u8], entry: &str, what: &str) -> Result<Vec<u8>, ApplyError> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            return Err(ApplyError::Refused {
                entry: entry.to_string(),
                reason: format!(
                    "{what} {:?} contains '..', which could climb out of the layer root",
                    String::from_utf8_lossy(raw)
                ),
            });
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    Ok(out)
}

pub(super) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Opens the directory `rel` inside the root for reading, not following a
/// final symlink.
pub(super) fn open_dir_rw(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let p = if rel.is_empty() { os(b".") } else { os(rel) };
    openat2(root, p, how)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn normalize_refuses_escapes_and_cleans_dots() {
        assert_eq!(normalize(b"./a//b/./c", "e", "name").unwrap(), b"a/b/c");
        assert!(normalize(b"a/../../etc", "e", "name").is_err());
        assert_eq!(
            normalize(b"/etc/passwd", "e", "name").unwrap(),
            b"etc/passwd"
        );
        assert_eq!(normalize(b"./", "e", "name").unwrap(), b"");
        assert_eq!(normalize(b"/", "e", "name").unwrap(), b"");
    }
}
