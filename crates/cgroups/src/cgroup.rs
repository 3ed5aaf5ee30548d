//! Where one container's cgroup lives: its directory in every mounted
//! hierarchy, found from a cgroupsPath or from paths recorded earlier, and
//! which of those directories holds a given controller's files. Knows
//! nothing of what is written there (resources, stats and fs do that).

use std::path::{Path, PathBuf};

use crate::files::read;
use crate::mounts::{self, Hierarchy, Mounts};
use crate::Error;

/// The container's directory in one v1 hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Dir1 {
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
    pub path: PathBuf,
}

/// The container's directory in the cgroup2 hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Dir2 {
    pub mountpoint: PathBuf,
    pub path: PathBuf,
    /// Controllers available at the root of the cgroup2 mount.
    pub controllers: Vec<String>,
}

/// Where a controller's files live for this container.
pub(crate) enum Loc<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

/// One container's cgroup on cgroupfs (v1, v2 or hybrid); the
/// [`Manager`](crate::Manager) operations on it are in `fs.rs`.
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub hierarchy: Hierarchy,
    pub v1: Vec<Dir1>,
    pub v2: Option<Dir2>,
}

impl Cgroup {
    /// Resolves `cgroups_path` in every mounted hierarchy.
    pub fn new(cgroups_path: &str, container_id: &str) -> Result<Cgroup, Error> {
        Self::with_mounts(Mounts::detect()?, cgroups_path, container_id)
    }

    /// Like [`Cgroup::new`] over the given hierarchies (tests use it to
    /// drive the cgroup2 code on a hybrid machine's unified mount).
    pub(crate) fn with_mounts(
        mounts: Mounts,
        cgroups_path: &str,
        container_id: &str,
    ) -> Result<Cgroup, Error> {
        let inner = mounts::inner_path(cgroups_path, container_id)?;
        let own = match inner {
            mounts::Inner::Relative(_) => mounts::own_cgroups()?,
            mounts::Inner::Absolute(_) => Default::default(),
        };
        let v1 = mounts
            .v1
            .iter()
            .map(|m| Dir1 {
                controllers: m.controllers.clone(),
                mountpoint: m.mountpoint.clone(),
                path: mounts::v1_dir(m, &inner, &own),
            })
            .collect();
        let v2 = match &mounts.v2 {
            Some(m) => {
                let file = m.mountpoint.join("cgroup.controllers");
                let controllers = read(&file)?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                Some(Dir2 {
                    mountpoint: m.mountpoint.clone(),
                    path: mounts::v2_dir(m, &inner, &own),
                    controllers,
                })
            }
            None => None,
        };
        Ok(Cgroup {
            hierarchy: mounts.hierarchy(),
            v1,
            v2,
        })
    }

    /// A manager for cgroup directories recorded earlier with
    /// [`Manager::paths`](crate::Manager::paths), so a later call (delete, kill, exec) finds the
    /// same cgroup even if the caller now lives in a different cgroup.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Cgroup, Error> {
        let mounts = Mounts::detect()?;
        let mut v1 = Vec::new();
        let mut v2 = None;
        for path in paths {
            let clean = path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
            let in_v1 = mounts
                .v1
                .iter()
                .filter(|m| path.starts_with(&m.mountpoint) && path != &m.mountpoint)
                .max_by_key(|m| m.mountpoint.as_os_str().len());
            let in_v2 = mounts
                .v2
                .as_ref()
                .filter(|m| path.starts_with(&m.mountpoint) && path != &m.mountpoint);
            let longer_v2 = match (in_v1, in_v2) {
                (Some(a), Some(b)) => {
                    b.mountpoint.as_os_str().len() > a.mountpoint.as_os_str().len()
                }
                (None, Some(_)) => true,
                _ => false,
            };
            match (clean, in_v1, in_v2) {
                (true, _, Some(m)) if longer_v2 => {
                    let controllers = read(&m.mountpoint.join("cgroup.controllers"))?
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    v2 = Some(Dir2 {
                        mountpoint: m.mountpoint.clone(),
                        path: path.clone(),
                        controllers,
                    });
                }
                (true, Some(m), _) => v1.push(Dir1 {
                    controllers: m.controllers.clone(),
                    mountpoint: m.mountpoint.clone(),
                    path: path.clone(),
                }),
                _ => {
                    return Err(Error::InvalidPath {
                        path: path.display().to_string(),
                        reason: "it is not a cgroup directory below a mounted cgroup hierarchy: \
                                 pass the paths Manager::paths returned"
                            .into(),
                    })
                }
            }
        }
        Ok(Cgroup {
            hierarchy: mounts.hierarchy(),
            v1,
            v2,
        })
    }

    /// The directory holding `controller`'s files: its v1 hierarchy if it has
    /// one, else the cgroup2 hierarchy if that offers it.
    pub fn locate(&self, controller: &str) -> Option<Loc<'_>> {
        if let Some(d) = self
            .v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
        {
            return Some(Loc::V1(&d.path));
        }
        match &self.v2 {
            Some(d) if d.controllers.iter().any(|c| c == controller) => Some(Loc::V2(&d.path)),
            _ => None,
        }
    }

    /// The directory whose cgroup.procs lists the container's processes.
    pub fn procs_dir(&self) -> Option<&Path> {
        for c in ["pids", "freezer", "memory", "devices", "cpu"] {
            if let Some(Loc::V1(p)) = self.locate(c) {
                return Some(p);
            }
        }
        if let Some(d) = self.v1.first() {
            return Some(&d.path);
        }
        self.v2.as_ref().map(|d| d.path.as_path())
    }

    /// The directory of the freezer: the v1 freezer hierarchy, or on a pure
    /// v2 machine the cgroup itself (cgroup.freeze).
    pub fn freezer(&self) -> Result<Loc<'_>, Error> {
        if let Some(Loc::V1(p)) = self.locate("freezer") {
            return Ok(Loc::V1(p));
        }
        if self.hierarchy == Hierarchy::V2 {
            if let Some(d) = &self.v2 {
                return Ok(Loc::V2(&d.path));
            }
        }
        Err(Error::Unsupported {
            resource: "freezer".into(),
            reason: "the v1 freezer controller is not mounted: mount it on /sys/fs/cgroup/freezer"
                .into(),
        })
    }
}
