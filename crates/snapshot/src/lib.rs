//! Snapshotters keyed by chain IDs: overlay and a plain-copy fallback.
//!
//! The API follows containerd's: [`Snapshotter::prepare`] makes a writable
//! *active* snapshot on top of a committed parent, [`Snapshotter::view`] a
//! read-only one, [`Snapshotter::commit`] freezes an active snapshot under a
//! name (for image layers: its chain ID), and [`Snapshotter::mounts`] says how
//! to mount any of them. Metadata (parent, kind, directory id) lives in one
//! JSON file replaced atomically under an exclusive `flock`; snapshot
//! contents live in `<root>/snapshots/<id>/{fs,work}`.
//!
//! [`unpack_chain`] applies an image's layers, skipping those already
//! committed, so layers shared by images are unpacked once.

mod copy;
mod error;
mod metadata;
mod mount;
mod unpack;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use copy::copy_tree;
use error::io_err;
pub use error::SnapshotError;
use metadata::{Db, Record};
pub use metadata::{Info, Kind};
pub use mount::{mount_all, unmount, Mount};
pub use unpack::{chain_ids, unpack_chain, LayerOpener, EXTRACT_PREFIX};

/// How snapshots are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    /// Layers are overlay lower directories; actives get an upper and work dir.
    Overlay,
    /// Each snapshot is a full copy of its parent (for filesystems without overlay).
    Copy,
}

/// Disk use of a snapshot's own directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes allocated (each inode counted once).
    pub size: u64,
    /// Number of inodes.
    pub inodes: u64,
}

/// A snapshotter rooted at a directory.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    driver: Driver,
}

impl Snapshotter {
    /// Opens (creating if needed) a snapshotter at `root`. With `driver` unset,
    /// overlay is used if a trial overlay mount under `root` works, otherwise
    /// plain copy. Leftovers of crashed unpacks are removed.
    pub fn open(root: &Path, driver: Option<Driver>) -> Result<Snapshotter, SnapshotError> {
        fs::create_dir_all(root.join("snapshots")).map_err(io_err(root, "create"))?;
        let mut s = Snapshotter {
            root: root.to_path_buf(),
            driver: driver.unwrap_or(Driver::Copy),
        };
        {
            let l = metadata::lock(&s.root)?;
            let mut db = l.load()?;
            s.driver = match (db.driver, driver) {
                (Some(stored), Some(asked)) if stored != asked => {
                    return Err(SnapshotError::DriverMismatch {
                        root: root.to_path_buf(),
                        stored,
                        asked,
                    })
                }
                (Some(stored), _) => stored,
                (None, asked) => {
                    let d = asked.unwrap_or_else(|| {
                        if overlay_works(root) {
                            Driver::Overlay
                        } else {
                            Driver::Copy
                        }
                    });
                    db.driver = Some(d);
                    l.save(&db)?;
                    d
                }
            };
        }
        s.cleanup()?;
        Ok(s)
    }

    /// The storage driver in use.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// The directory holding a snapshot's files: the upper directory of an
    /// overlay active snapshot, or the full tree with the copy driver. Layers
    /// are applied here.
    pub fn fs_dir(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        let info = self.stat(key)?;
        if info.kind == Kind::View {
            return Err(SnapshotError::WrongKind {
                key: key.to_string(),
                actual: info.kind.name(),
                expected: "active or committed",
            });
        }
        Ok(self.dir(info.id).join("fs"))
    }

    /// Parent layer directories for overlay application onto `key`, topmost first.
    pub fn parent_dirs(&self, key: &str) -> Result<Vec<PathBuf>, SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let db = l.load()?;
        let r = db
            .snapshots
            .get(key)
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        match &r.parent {
            None => Ok(Vec::new()),
            Some(p) => Ok(db
                .lineage(p)?
                .into_iter()
                .map(|(_, id)| self.dir(id).join("fs"))
                .collect()),
        }
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let mut db = l.load()?;
        if db.snapshots.contains_key(key) {
            return Err(SnapshotError::AlreadyExists(key.to_string()));
        }
        if let Some(p) = parent {
            let r = db
                .snapshots
                .get(p)
                .ok_or_else(|| SnapshotError::NotFound(p.to_string()))?;
            if r.kind != Kind::Committed {
                return Err(SnapshotError::WrongKind {
                    key: p.to_string(),
                    actual: r.kind.name(),
                    expected: "committed (only committed snapshots can be parents)",
                });
            }
        }
        db.next_id += 1;
        let id = db.next_id;
        let dir = self.dir(id);
        let needs_dirs = !(kind == Kind::View && parent.is_some());
        if needs_dirs {
            let fsdir = dir.join("fs");
            let made = (|| -> Result<(), SnapshotError> {
                fs::create_dir_all(&fsdir).map_err(io_err(&fsdir, "create"))?;
                if self.driver == Driver::Overlay {
                    let w = dir.join("work");
                    fs::create_dir(&w).map_err(io_err(&w, "create"))?;
                } else if let (Some(p), Kind::Active) = (parent, kind) {
                    let pid = db.snapshots[p].id;
                    copy_tree(&self.dir(pid).join("fs"), &fsdir)?;
                }
                Ok(())
            })();
            if let Err(e) = made {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        } else {
            fs::create_dir_all(&dir).map_err(io_err(&dir, "create"))?;
        }
        db.snapshots.insert(
            key.to_string(),
            Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                created: metadata::now(),
            },
        );
        if let Err(e) = l.save(&db) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.mounts_locked(&db, key)
    }

    /// Creates a writable snapshot `key` on top of committed `parent`.
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError> {
        self.create(key, parent, Kind::Active)
    }

    /// Creates a read-only snapshot `key` of committed `parent`.
    pub fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError> {
        self.create(key, parent, Kind::View)
    }

    /// Turns active snapshot `key` into committed snapshot `name`.
    pub fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let mut db = l.load()?;
        if db.snapshots.contains_key(name) {
            return Err(SnapshotError::AlreadyExists(name.to_string()));
        }
        let mut r = db
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        if r.kind != Kind::Active {
            return Err(SnapshotError::WrongKind {
                key: key.to_string(),
                actual: r.kind.name(),
                expected: "active",
            });
        }
        // Make the layer durable before it becomes visible under its name.
        let fsdir = self.dir(r.id).join("fs");
        if let Ok(f) = File::open(&fsdir) {
            nix::unistd::syncfs(&f).map_err(|e| io_err(&fsdir, "syncfs")(e.into()))?;
        }
        db.snapshots.remove(key);
        r.kind = Kind::Committed;
        db.snapshots.insert(name.to_string(), r);
        l.save(&db)
    }

    fn mounts_locked(&self, db: &Db, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let r = db
            .snapshots
            .get(key)
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        let own = self.dir(r.id);
        let parents: Vec<PathBuf> = match &r.parent {
            Some(p) => db
                .lineage(p)?
                .into_iter()
                .map(|(_, id)| self.dir(id).join("fs"))
                .collect(),
            None => Vec::new(),
        };
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
        let m = match (r.kind, self.driver) {
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
        };
        Ok(vec![m])
    }

    /// How to mount snapshot `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let db = l.load()?;
        self.mounts_locked(&db, key)
    }

    /// Metadata of one snapshot.
    pub fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let db = l.load()?;
        db.snapshots
            .get(key)
            .map(|r| r.info(key))
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    /// Calls `f` for every snapshot, in name order.
    pub fn walk(&self, mut f: impl FnMut(&Info)) -> Result<(), SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let db = l.load()?;
        drop(l);
        for (k, r) in &db.snapshots {
            f(&r.info(k));
        }
        Ok(())
    }

    /// Removes snapshot `key` (unmount it first). Parents of others cannot be removed.
    pub fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let mut db = l.load()?;
        let r = db
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        let children: Vec<String> = db
            .snapshots
            .iter()
            .filter(|(_, c)| c.parent.as_deref() == Some(key))
            .map(|(k, _)| k.clone())
            .collect();
        if !children.is_empty() {
            return Err(SnapshotError::HasChildren {
                key: key.to_string(),
                children,
            });
        }
        db.snapshots.remove(key);
        l.save(&db)?;
        // A crash here leaves an unreferenced directory that `open` removes.
        let dir = self.dir(r.id);
        remove_tree(&dir)
    }

    /// Disk use of the snapshot's own directory (the upper layer for overlay).
    pub fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let info = self.stat(key)?;
        let mut seen = std::collections::HashSet::new();
        let mut u = Usage::default();
        let dir = self.dir(info.id).join("fs");
        if dir.exists() {
            du(&dir, &mut seen, &mut u)?;
        }
        Ok(u)
    }

    /// Removes unreferenced snapshot directories (a crash between creating
    /// and recording them) and active snapshots of unpacks whose process died.
    pub fn cleanup(&self) -> Result<(), SnapshotError> {
        let l = metadata::lock(&self.root)?;
        let mut db = l.load()?;
        let dead: Vec<String> = db
            .snapshots
            .iter()
            .filter(|(k, r)| r.kind == Kind::Active && unpack::owner_is_dead(k))
            .map(|(k, _)| k.clone())
            .collect();
        if !dead.is_empty() {
            for k in &dead {
                db.snapshots.remove(k);
            }
            l.save(&db)?;
        }
        let live: std::collections::HashSet<u64> = db.snapshots.values().map(|r| r.id).collect();
        let snaps = self.root.join("snapshots");
        for e in fs::read_dir(&snaps).map_err(io_err(&snaps, "list"))? {
            let e = e.map_err(io_err(&snaps, "list"))?;
            let keep = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| live.contains(&id));
            if !keep {
                remove_tree(&e.path())?;
            }
        }
        let _ = fs::remove_file(self.root.join(metadata::TEMP_NAME));
        Ok(())
    }
}

fn remove_tree(dir: &Path) -> Result<(), SnapshotError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir, "remove")(e)),
    }
}

fn du(
    dir: &Path,
    seen: &mut std::collections::HashSet<(u64, u64)>,
    u: &mut Usage,
) -> Result<(), SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(dir).map_err(io_err(dir, "stat"))?;
    if seen.insert((m.dev(), m.ino())) {
        u.inodes += 1;
        u.size += m.blocks() * 512;
    }
    if m.is_dir() {
        for e in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
            let e = e.map_err(io_err(dir, "list"))?;
            du(&e.path(), seen, u)?;
        }
    }
    Ok(())
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
