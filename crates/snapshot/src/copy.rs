//! A faithful recursive copy used by the plain-copy driver: types, contents,
//! owners, modes (setuid included), xattrs, hardlinks, device nodes and times.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_archive::fsops;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::{io_err, io_err as e};
use crate::SnapshotError;

fn en<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(nix::errno::Errno) -> SnapshotError + 'a {
    move |x| io_err(path, op)(x.into())
}

/// Copies the tree at `src` into the existing directory `dst` (its contents
/// and the root directory's own metadata). Symlinks are copied, never followed.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let mut links = HashMap::new();
    let mut dirs = Vec::new();
    copy_children(src, dst, &mut links, &mut dirs)?;
    let m = fs::symlink_metadata(src).map_err(e(src, "stat"))?;
    set_meta(src, dst, &m, false)?;
    dirs.push((dst.to_path_buf(), m));
    // Directory times last: creating children changes them.
    for (d, m) in dirs.iter().rev() {
        set_times(d, m)?;
    }
    Ok(())
}

fn copy_children(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut Vec<(PathBuf, fs::Metadata)>,
) -> Result<(), SnapshotError> {
    for ent in fs::read_dir(src).map_err(e(src, "list"))? {
        let ent = ent.map_err(e(src, "list"))?;
        let s = ent.path();
        let d = dst.join(ent.file_name());
        let m = fs::symlink_metadata(&s).map_err(e(&s, "stat"))?;
        let ft = m.file_type();
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &d).map_err(e(&d, "link"))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), d.clone());
        }
        if ft.is_dir() {
            fs::create_dir(&d).map_err(e(&d, "mkdir"))?;
            copy_children(&s, &d, links, dirs)?;
            set_meta(&s, &d, &m, false)?;
            dirs.push((d, m));
            continue;
        }
        if ft.is_symlink() {
            let t = fs::read_link(&s).map_err(e(&s, "readlink"))?;
            std::os::unix::fs::symlink(&t, &d).map_err(e(&d, "symlink"))?;
            set_meta(&s, &d, &m, true)?;
        } else if ft.is_file() {
            fs::copy(&s, &d).map_err(e(&d, "copy"))?;
            set_meta(&s, &d, &m, false)?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            mknod(&d, kind, Mode::from_bits_truncate(0o600), m.rdev()).map_err(en(&d, "mknod"))?;
            set_meta(&s, &d, &m, false)?;
        }
        set_times(&d, &m)?;
    }
    Ok(())
}

fn set_meta(src: &Path, dst: &Path, m: &fs::Metadata, symlink: bool) -> Result<(), SnapshotError> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(e(dst, "chown"))?;
    if !symlink {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(e(dst, "chmod"))?;
    }
    for (k, v) in fsops::read_xattrs(src).map_err(e(src, "read xattrs"))? {
        fsops::lset_xattr(dst, &k, &v).map_err(e(dst, "setxattr"))?;
    }
    Ok(())
}

fn set_times(dst: &Path, m: &fs::Metadata) -> Result<(), SnapshotError> {
    let a = TimeSpec::new(m.atime(), m.atime_nsec());
    let t = TimeSpec::new(m.mtime(), m.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &a,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(en(dst, "set times"))
}
