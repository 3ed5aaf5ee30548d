//! Whiteouts (`.wh.NAME`) and opaque directories (`.wh..wh..opq`): removed
//! from the lower content, or written as overlay whiteouts.

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::stat::{mknodat, Mode, SFlag};

use super::entry::Applier;
use super::paths::{open_dir_rw, os};
use crate::fsops::{self, is_dir, lstat_at, open_dir_in, remove_all_at};
use crate::{ApplyError, WhiteoutMode};

impl Applier<'_> {
    /// Before replacing a directory, let the pool finish writing into it.
    pub(super) fn drain_if_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<(), ApplyError> {
        if matches!(lstat_at(parent, name), Ok(st) if is_dir(&st)) {
            self.drain()?;
        }
        Ok(())
    }

    pub(super) fn whiteout(
        &mut self,
        parent_rel: &[u8],
        target: &[u8],
        full: &[u8],
        entry: &str,
    ) -> Result<(), ApplyError> {
        if self.written.contains(full) {
            // Whiteouts only hide lower layers, never this layer's own files.
            return Ok(());
        }
        match self.opts.whiteouts {
            WhiteoutMode::Remove => {
                let parent = match open_dir_in(self.root(), parent_rel) {
                    Ok(p) => p,
                    Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(()),
                    Err(x) => return Err(ApplyError::io(entry, "open parent directory", x)),
                };
                self.drain()?;
                remove_all_at(parent.as_fd(), target)
                    .map_err(|x| ApplyError::io(entry, "remove whited-out file", x))
            }
            WhiteoutMode::Overlay => {
                let parent = self.ensure_dir(parent_rel, entry)?;
                let dev = nix::sys::stat::makedev(0, 0);
                match mknodat(
                    parent.as_fd(),
                    os(target),
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    dev,
                ) {
                    Ok(()) | Err(Errno::EEXIST) => Ok(()),
                    Err(x) => Err(ApplyError::io(entry, "create overlay whiteout", x)),
                }
            }
        }
    }

    pub(super) fn opaque_dir(&mut self, dir: &[u8], entry: &str) -> Result<(), ApplyError> {
        match self.opts.whiteouts {
            WhiteoutMode::Remove => {
                self.opaque.push((dir.to_vec(), entry.to_string()));
                Ok(())
            }
            WhiteoutMode::Overlay => {
                self.ensure_dir(dir, entry)?;
                let d = open_dir_rw(self.root(), dir)
                    .map_err(|x| ApplyError::io(entry, "open opaque directory", x))?;
                fsops::fset_xattr(d.as_fd(), b"trusted.overlay.opaque", b"y")
                    .map_err(|x| ApplyError::io(entry, "set trusted.overlay.opaque", x))
            }
        }
    }
}
