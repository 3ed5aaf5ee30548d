//! The metadata database: every snapshot's parent, kind and directory id in
//! one JSON file, `<root>/metadata.json`. It is read and replaced only while
//! the exclusive `flock` on `<root>/lock` is held ([`Locked`]), and replaced
//! atomically (temp file, fsync, rename, fsync of the directory), so a crash
//! leaves either the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use berth_core::fs::{atomic_write, Durability};
use serde::{Deserialize, Serialize};

use crate::error::io_err;
use crate::{Driver, SnapshotError};

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only, mountable, not committable.
    View,
    /// Writable, committable.
    Active,
    /// Immutable; can be a parent.
    Committed,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::View => "a view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// One snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Key (active/view) or name (committed).
    pub name: String,
    /// Parent name, if any.
    pub parent: Option<String>,
    /// Kind.
    pub kind: Kind,
    /// Directory number under `snapshots/`.
    pub id: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

/// The whole metadata file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Db {
    /// The driver the store was created with (a store never changes driver).
    #[serde(default)]
    pub driver: Option<Driver>,
    pub next_id: u64,
    pub snapshots: BTreeMap<String, Record>,
}

/// One snapshot in the metadata file, keyed by its key or name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: u64,
    pub kind: Kind,
    pub parent: Option<String>,
    pub created: u64,
    /// Set on a snapshot committed without a sync: the boot id of the
    /// machine then (its files may be lost if that boot ended in a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<String>,
}

impl Db {
    /// `name` and its ancestors with their directory ids, topmost first.
    pub fn lineage(&self, name: &str) -> Result<Vec<(String, u64)>, SnapshotError> {
        let mut out = Vec::new();
        let mut cur = Some(name.to_string());
        while let Some(n) = cur {
            let r = self
                .snapshots
                .get(&n)
                .ok_or_else(|| SnapshotError::NotFound(n.clone()))?;
            out.push((n, r.id));
            cur = r.parent.clone();
        }
        Ok(out)
    }
}

impl Record {
    /// The public view of this record, named `name`.
    pub fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_string(),
            parent: self.parent.clone(),
            kind: self.kind,
            id: self.id,
            created: self.created,
        }
    }
}

/// The metadata lock of the store at `root`, held for one operation: the
/// only way to load or save the database.
pub(crate) struct Locked {
    _lock: nix::fcntl::Flock<File>,
    root: PathBuf,
}

/// Takes the exclusive metadata lock of the store at `root`, waiting for
/// other processes' operations to finish.
pub(crate) fn lock(root: &Path) -> Result<Locked, SnapshotError> {
    let p = root.join("lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io_err(&p, "open lock"))?;
    let lock =
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            SnapshotError::Io {
                path: p.clone(),
                op: "flock",
                source: e.into(),
            }
        })?;
    Ok(Locked {
        _lock: lock,
        root: root.to_path_buf(),
    })
}

impl Locked {
    fn db_path(&self) -> PathBuf {
        self.root.join("metadata.json")
    }

    /// Reads the database; a store without one is empty.
    pub fn load(&self) -> Result<Db, SnapshotError> {
        let p = self.db_path();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| SnapshotError::Corrupt {
                path: p,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(io_err(&p, "read")(e)),
        }
    }

    /// Replaces the database atomically and durably.
    pub fn save(&self, db: &Db) -> Result<(), SnapshotError> {
        let p = self.db_path();
        let data = serde_json::to_vec_pretty(db).map_err(|e| SnapshotError::Corrupt {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        atomic_write(&p, &data, Durability::Durable).map_err(io_err(&p, "replace"))
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or None when it
/// cannot be read.
pub(crate) fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Seconds since the epoch (0 if the clock is before it).
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
