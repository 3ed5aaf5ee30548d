//! The snapshotter and its operations, after containerd's interface:
//! open, prepare, view, commit, mounts, stat, walk, remove, usage and the
//! crash cleanup. Each operation loads, checks and saves the metadata while
//! holding its lock, so concurrent processes see one order of operations.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use berth_core::fs::Durability;

use crate::error::io_err;
use crate::metadata::{self, Db, Record};
use crate::{usage, Driver, Info, Kind, Mount, SnapshotError, Usage};

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
                    let d = asked.unwrap_or_else(|| Driver::detect(root));
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
            let parent_fs = parent.map(|p| self.dir(db.snapshots[p].id).join("fs"));
            let made = self.driver.make_dirs(kind, &dir, parent_fs.as_deref());
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
                unsynced: None,
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

    /// Turns active snapshot `key` into committed snapshot `name`, its
    /// files made durable first (`syncfs`).
    pub fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        self.commit_with(name, key, Durability::Durable)
    }

    /// [`Snapshotter::commit`] with `durability`: `Volatile` skips the
    /// `syncfs` and records the snapshot as unsynced in this boot. Such a
    /// snapshot is what the page cache holds: it survives any process's
    /// death but not a machine crash, so [`Snapshotter::open`] after a later
    /// boot removes it and every snapshot on top of it (a layer is unpacked
    /// again from its blob). [`Snapshotter::sync`] makes it durable, for a
    /// snapshot something durable comes to depend on. Without a readable
    /// boot id the commit is durable.
    pub fn commit_with(
        &self,
        name: &str,
        key: &str,
        durability: Durability,
    ) -> Result<(), SnapshotError> {
        let boot = match durability {
            Durability::Durable => None,
            Durability::Volatile => metadata::boot_id(),
        };
        // A durable commit syncs the layer before it becomes visible under
        // its name, outside the lock: a syncfs can take a while, and other
        // layers of the same pull commit meanwhile. The record is checked
        // again below.
        let synced = match boot {
            Some(_) => None,
            None => {
                let id = {
                    let l = metadata::lock(&self.root)?;
                    l.load()?.snapshots.get(key).map(|r| r.id)
                };
                if let Some(id) = id {
                    syncfs(&self.dir(id).join("fs"))?;
                }
                id
            }
        };
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
        if boot.is_none() && Some(r.id) != synced {
            return Err(SnapshotError::NotFound(key.to_string()));
        }
        db.snapshots.remove(key);
        r.kind = Kind::Committed;
        r.unsynced = boot;
        db.snapshots.insert(name.to_string(), r);
        l.save(&db)
    }

    /// Makes committed snapshot `name` and its ancestors durable: one
    /// `syncfs` if any of them was committed unsynced (which makes every
    /// snapshot committed before it durable too), none otherwise.
    pub fn sync(&self, name: &str) -> Result<(), SnapshotError> {
        let unsynced: Vec<(String, u64)> = {
            let l = metadata::lock(&self.root)?;
            let db = l.load()?;
            if db
                .lineage(name)?
                .iter()
                .all(|(k, _)| db.snapshots[k].unsynced.is_none())
            {
                return Ok(());
            }
            db.snapshots
                .iter()
                .filter(|(_, r)| r.kind == Kind::Committed && r.unsynced.is_some())
                .map(|(k, r)| (k.clone(), r.id))
                .collect()
        };
        // Outside the lock: other operations go on while the disk catches
        // up. What was committed before this point is on disk after it.
        syncfs(&self.root.join("snapshots"))?;
        let l = metadata::lock(&self.root)?;
        let mut db = l.load()?;
        for (k, id) in &unsynced {
            if let Some(r) = db.snapshots.get_mut(k).filter(|r| r.id == *id) {
                r.unsynced = None;
            }
        }
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
        Ok(vec![self.driver.mount(r.kind, &own, parents)])
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
        usage::measure(&self.dir(info.id).join("fs"))
    }

    /// Removes unreferenced snapshot directories (a crash between creating
    /// and recording them), active snapshots of unpacks whose process died,
    /// and snapshots committed unsynced in an earlier boot with every
    /// snapshot on top of them (their files may not have reached the disk).
    pub fn cleanup(&self) -> Result<(), SnapshotError> {
        let boot = metadata::boot_id();
        let l = metadata::lock(&self.root)?;
        let mut db = l.load()?;
        let mut dead: std::collections::BTreeSet<String> = db
            .snapshots
            .iter()
            .filter(|(k, r)| {
                (r.kind == Kind::Active && crate::chain::owner_is_dead(k))
                    // Without this boot's id there is no telling: keep it.
                    || matches!((&r.unsynced, &boot), (Some(then), Some(now)) if then != now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        // Snapshots on top of a lost one go with it.
        loop {
            let above: Vec<String> = db
                .snapshots
                .iter()
                .filter(|(k, r)| {
                    !dead.contains(*k) && r.parent.as_ref().is_some_and(|p| dead.contains(p))
                })
                .map(|(k, _)| k.clone())
                .collect();
            if above.is_empty() {
                break;
            }
            dead.extend(above);
        }
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
        // A database write cut short by a crash leaves its temp file.
        for e in fs::read_dir(&self.root)
            .map_err(io_err(&self.root, "read"))?
            .flatten()
        {
            if e.file_name()
                .to_str()
                .is_some_and(berth_core::fs::is_temp_name)
            {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// `syncfs` of the file system holding `dir`.
fn syncfs(dir: &Path) -> Result<(), SnapshotError> {
    let f = File::open(dir).map_err(io_err(dir, "open"))?;
    nix::unistd::syncfs(&f).map_err(|e| io_err(dir, "syncfs")(e.into()))
}

fn remove_tree(dir: &Path) -> Result<(), SnapshotError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir, "remove")(e)),
    }
}
