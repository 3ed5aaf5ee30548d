//! The storage drivers: how a snapshot's directories are laid out and
//! mounted, and which driver a new store gets.
//!
//! - Overlay: a committed layer holds only its diff and is a lower
//!   directory; an active snapshot gets its own upper (`fs`) and `work`
//!   directory on top of its parents.
//! - Copy (for filesystems that cannot hold an overlay upper directory): an
//!   active snapshot starts as a full copy of its parent and is bind-mounted.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::{copy_tree, mount_all, unmount, Kind, Mount, SnapshotError};

/// How snapshots are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    /// Layers are overlay lower directories; actives get an upper and work dir.
    Overlay,
    /// Each snapshot is a full copy of its parent (for filesystems without overlay).
    Copy,
}

impl Driver {
    /// The driver for a new store at `root`: overlay if a trial overlay
    /// mount under `root` works, otherwise copy.
    pub(crate) fn detect(root: &Path) -> Driver {
        if overlay_works(root) {
            Driver::Overlay
        } else {
            Driver::Copy
        }
    }

    /// Creates the files of a new snapshot of `kind` in its directory `dir`:
    /// `fs` (plus `work` for overlay). With the copy driver an active
    /// snapshot's `fs` starts as a copy of `parent_fs`, its parent's files.
    pub(crate) fn make_dirs(
        self,
        kind: Kind,
        dir: &Path,
        parent_fs: Option<&Path>,
    ) -> Result<(), SnapshotError> {
        let fsdir = dir.join("fs");
        fs::create_dir_all(&fsdir).map_err(io_err(&fsdir, "create"))?;
        if self == Driver::Overlay {
            let w = dir.join("work");
            fs::create_dir(&w).map_err(io_err(&w, "create"))?;
        } else if let (Some(p), Kind::Active) = (parent_fs, kind) {
            copy_tree(p, &fsdir)?;
        }
        Ok(())
    }

    /// How to mount a snapshot of `kind` whose directory is `own`, given
    /// the `fs` directories of its parent and the parent's ancestors,
    /// topmost first.
    pub(crate) fn mount(self, kind: Kind, own: &Path, parents: Vec<PathBuf>) -> Mount {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let bind = |src: &Path, ro: bool| Mount {
            kind: "bind".into(),
            source: s(src),
            options: vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()],
        };
        let read_only = |layers: &[PathBuf]| match layers {
            [] => bind(&own.join("fs"), true),
            [one] => bind(one, true),
            many => Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "ro".into(),
                    format!(
                        "lowerdir={}",
                        many.iter().map(|p| s(p)).collect::<Vec<_>>().join(":")
                    ),
                ],
            },
        };
        match (kind, self) {
            // A copy-driver snapshot holds the whole tree.
            (Kind::Committed, Driver::Copy) => bind(&own.join("fs"), true),
            (Kind::Active, Driver::Copy) => bind(&own.join("fs"), false),
            (Kind::View, Driver::Copy) => read_only(&parents[..parents.len().min(1)]),
            // An overlay layer holds only its diff: stack it on its parents.
            (Kind::Committed, Driver::Overlay) => {
                let mut layers = vec![own.join("fs")];
                layers.extend(parents);
                read_only(&layers)
            }
            (Kind::Active, Driver::Overlay) if parents.is_empty() => bind(&own.join("fs"), false),
            (Kind::Active, Driver::Overlay) => Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    "index=off".into(),
                    format!("workdir={}", s(&own.join("work"))),
                    format!("upperdir={}", s(&own.join("fs"))),
                    format!(
                        "lowerdir={}",
                        parents.iter().map(|p| s(p)).collect::<Vec<_>>().join(":")
                    ),
                ],
            },
            (Kind::View, Driver::Overlay) => read_only(&parents),
        }
    }
}

/// Tries a tiny overlay mount under `root`.
fn overlay_works(root: &Path) -> bool {
    let t = root.join(format!("overlay-check-{}", std::process::id()));
    let dirs = ["l", "u", "w", "m"].map(|d| t.join(d));
    let ok = dirs.iter().all(|d| fs::create_dir_all(d).is_ok()) && {
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", dirs[0].display()),
                format!("upperdir={}", dirs[1].display()),
                format!("workdir={}", dirs[2].display()),
            ],
        };
        let mounted = mount_all(&[m], &dirs[3]).is_ok();
        if mounted {
            let _ = unmount(&dirs[3]);
        }
        mounted
    };
    let _ = fs::remove_dir_all(&t);
    ok
}
