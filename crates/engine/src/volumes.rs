//! Volumes and the mounts a container asks for.
//!
//! A volume is a directory under the data root that outlives containers:
//! `<root>/volumes/<name>/_data`, beside a small `volume.json` record
//! ([`Volume`]). A named one is made by `berth volume create` or on its
//! first use; an anonymous one (64 hex digits) for each image Volume and
//! each `-v /path` or `--mount type=volume` without a source. Anonymous
//! volumes go with their container on `rm -v`, `--rm`, `container prune`
//! and `berth gc`; `volume prune` removes every volume no container uses.
//! An empty volume is filled from the image's content at its mount path
//! when a container is created with it, as docker and podman do (owners,
//! modes, xattrs, hardlinks and times kept; `nocopy` turns it off).
//!
//! [`parse_volume`], [`parse_mount`] and [`parse_tmpfs`] read `-v`,
//! `--mount` and `--tmpfs` into [`MountRequest`]s; `Engine::create` claims
//! them (making missing volumes) and hands the runtime plain bind and tmpfs
//! mounts, whose targets the runtime resolves inside the rootfs.
//!
//! Locking: `<root>/volumes/.lock` serialises creation, claims, copy-up
//! and removal. A new container claims its volumes and writes its record
//! (which lists them) while it holds the containers lock and then this one,
//! so `volume rm` and `volume prune`, which look for users under this lock,
//! never miss a container being made. The order is always: containers lock,
//! then volumes lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_archive::fsops::{list_dir, open_dir_in};
use berth_content::{FileLock, LockMode};
use berth_core::fs::{atomic_write, fsync_dir, Durability};
use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Mount;
use serde::{Deserialize, Serialize};

use crate::container::{self, ContainerRecord};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::spec::clean_path;
use crate::Engine;

/// The longest volume name: it is a directory name, and a temporary one
/// (`.new-NAME`) must fit in NAME_MAX too.
pub const MAX_NAME_LEN: usize = 250;

/// The most Volumes an image may ask for (each is a directory on the host).
pub const MAX_IMAGE_VOLUMES: usize = 256;

/// The longest mount target, in bytes (PATH_MAX).
const MAX_TARGET_LEN: usize = 4096;

/// Where the kernel's filesystems are mounted: no image Volume there.
const KERNEL_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Options a user may give a bind, volume or tmpfs mount that set a mount
/// flag, with the opposite that clears it.
const TOGGLES: [(&str, &str); 7] = [
    ("nosuid", "suid"),
    ("nodev", "dev"),
    ("noexec", "exec"),
    ("noatime", "atime"),
    ("nodiratime", "diratime"),
    ("relatime", "norelatime"),
    ("strictatime", "nostrictatime"),
];

/// What berth keeps about a volume (`volume.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its name (podman's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// `--label` entries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (an image Volume, `-v /path`); removed with
    /// it by `rm -v`, `--rm`, `container prune` and `gc`.
    #[serde(default)]
    pub anonymous: bool,
}

/// Where a requested mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A volume by name, or a new anonymous one (None).
    Volume(Option<String>),
    /// A host path (absolute).
    Bind(PathBuf),
    /// A new, empty tmpfs.
    Tmpfs,
}

/// One mount a container asks for: `-v`, `--mount`, `--tmpfs`, or an
/// image Volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// What is mounted.
    pub source: MountSource,
    /// Where, in the container: absolute, clean, not `/`.
    pub target: String,
    /// Mounted read-only.
    pub readonly: bool,
    /// The mount options besides `ro`: `rbind`/`bind` and a propagation for
    /// binds and volumes, flags (nosuid, nodev, noexec, ...), tmpfs's
    /// `size=` (bytes), `mode=`, `uid=`, `gid=`, `nr_inodes=`.
    pub options: Vec<String>,
    /// For a volume: fill it from the image's content at `target` when it
    /// is empty (`nocopy` clears it).
    pub copy_up: bool,
}

impl MountRequest {
    /// A request with the defaults of its kind: binds and volumes
    /// `rbind,rprivate`; tmpfs `nosuid,nodev,noexec` (podman's).
    pub fn new(source: MountSource, target: String) -> MountRequest {
        let options = match source {
            MountSource::Tmpfs => vec!["nosuid".into(), "nodev".into(), "noexec".into()],
            _ => vec!["rbind".into(), "rprivate".into()],
        };
        MountRequest {
            copy_up: matches!(source, MountSource::Volume(_)),
            source,
            target,
            readonly: false,
            options,
        }
    }

    /// Applies one option of `-v`/`--tmpfs` (`what` names the flag for errors).
    fn option(&mut self, what: &str, opt: &str) -> Result<()> {
        let tmpfs = self.source == MountSource::Tmpfs;
        let bind = matches!(self.source, MountSource::Bind(_));
        let volume = matches!(self.source, MountSource::Volume(_));
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        let toggle = TOGGLES.iter().find(|(a, b)| key == *a || key == *b);
        match (key, opt.contains('=')) {
            ("ro" | "readonly", false) => self.readonly = true,
            ("rw", false) => self.readonly = false,
            ("nocopy", false) if volume => self.copy_up = false,
            // SELinux relabelling: this host runs no SELinux, as podman
            // ignores the options there.
            ("z" | "Z", false) if !tmpfs => {}
            ("bind" | "rbind", false) if bind => self.options[0] = key.to_string(),
            (p, false) if !tmpfs && berth_runtime::mounts::propagation_flag(p).is_some() => {
                if !bind {
                    return Err(Error::invalid(
                        what,
                        format!("the propagation {p:?} applies to bind mounts only"),
                    ));
                }
                self.options[1] = p.to_string();
            }
            (t, false) if toggle.is_some() => {
                let (set, clear) = toggle.copied().unwrap_or_default();
                self.options.retain(|o| o != set && o != clear);
                self.options.push(t.to_string());
            }
            ("size" | "mode" | "uid" | "gid" | "nr_inodes", true) if tmpfs => {
                let value = tmpfs_value(what, key, value)?;
                let prefix = format!("{key}=");
                self.options.retain(|o| !o.starts_with(&prefix));
                self.options.push(format!("{prefix}{value}"));
            }
            _ => {
                let valid = if tmpfs {
                    "ro, rw, size=SIZE, mode=OCTAL, uid=N, gid=N, nr_inodes=N, and [no]exec, [no]suid, [no]dev, [no]atime"
                } else if bind {
                    "ro, rw, z, Z, bind, rbind, [r]private, [r]shared, [r]slave, and [no]exec, [no]suid, [no]dev"
                } else {
                    "ro, rw, nocopy, z, Z, and [no]exec, [no]suid, [no]dev"
                };
                return Err(Error::invalid(
                    what,
                    format!("unknown option {opt:?} (valid here: {valid})"),
                ));
            }
        }
        Ok(())
    }

    /// The runtime mount of this request, its source resolved to `source`
    /// (a volume's `_data`; ignored for a tmpfs).
    fn runtime_mount(&self, source: &Path) -> Mount {
        let mut options = self.options.clone();
        if self.readonly {
            options.push("ro".into());
        }
        let (typ, source) = match self.source {
            MountSource::Tmpfs => ("tmpfs", PathBuf::from("tmpfs")),
            _ => ("bind", source.to_path_buf()),
        };
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(&self.target));
        m.set_typ(Some(typ.to_string()));
        m.set_source(Some(source));
        m.set_options(Some(options));
        m
    }
}

/// A tmpfs option's value checked and normalised: sizes in bytes, the
/// mode in octal, ids within the runtime's range.
fn tmpfs_value(what: &str, key: &str, value: &str) -> Result<String> {
    let bad = |reason: String| Error::invalid(what, format!("{key}={value:?}: {reason}"));
    Ok(match key {
        "size" | "nr_inodes" => crate::limits::parse_size(what, value)?.to_string(),
        "mode" => match u32::from_str_radix(value, 8) {
            Ok(m) if m <= 0o7777 => format!("{m:o}"),
            _ => return Err(bad("expected an octal mode up to 7777 (e.g. 1777)".into())),
        },
        _ => match value.parse::<u32>() {
            Ok(id) if id <= berth_runtime::spec::MAX_ID => id.to_string(),
            _ => {
                return Err(bad(format!(
                    "expected an id from 0 to {}",
                    berth_runtime::spec::MAX_ID
                )))
            }
        },
    })
}

/// Checks a volume name given by `what`: podman's rule, at most
/// [`MAX_NAME_LEN`] bytes.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if !container::valid_name(name) || name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            format!("{what}: volume name {name:?}"),
            format!(
                "use letters, digits, '_', '.' and '-', starting with a letter or digit, at most {MAX_NAME_LEN} of them (a host path must start with /)"
            ),
        ));
    }
    Ok(())
}

/// A mount target given by `what` checked: absolute, no `..`, not `/`;
/// returned clean.
pub fn check_target(what: &str, target: &str) -> Result<String> {
    if target.len() > MAX_TARGET_LEN {
        return Err(Error::invalid(
            what,
            format!(
                "the target is {} bytes long, more than {MAX_TARGET_LEN}",
                target.len()
            ),
        ));
    }
    if target.split('/').any(|p| p == "..") {
        return Err(Error::invalid(
            what,
            format!(
                "the target {target:?} must not contain `..`: give the plain path in the container"
            ),
        ));
    }
    let clean = clean_path(&format!("{what}: target"), target)?;
    if clean == "/" {
        return Err(Error::invalid(
            what,
            "cannot mount over the container's root `/`: choose a directory in it",
        ));
    }
    Ok(clean)
}

/// The source of `-v SOURCE:…` or `--mount …,source=SOURCE`: an absolute
/// host path, else a volume name.
fn source_of(what: &str, source: &str, bind: Option<bool>) -> Result<MountSource> {
    if source.starts_with('/') && bind != Some(false) {
        return Ok(MountSource::Bind(PathBuf::from(source)));
    }
    if bind == Some(true) {
        return Err(Error::invalid(
            what,
            format!("the bind source {source:?} must be an absolute host path"),
        ));
    }
    check_name(what, source)?;
    Ok(MountSource::Volume(Some(source.to_string())))
}

/// Parses `-v [SOURCE:]TARGET[:OPTIONS]`: SOURCE an absolute host path (a
/// bind) or a volume name, none for a new anonymous volume; OPTIONS
/// comma-separated (`ro`, `rw`, `nocopy`, propagation, flags).
pub fn parse_volume(text: &str) -> Result<MountRequest> {
    let what = format!("-v {text:?}");
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, o] => (Some(*s), *t, Some(*o)),
        _ => {
            return Err(Error::invalid(
                what,
                "expected [SOURCE:]TARGET[:OPTIONS], SOURCE an absolute host path or a volume name (/host/path:/container/path[:ro], NAME:/path[:ro])",
            ))
        }
    };
    let target = check_target(&what, target)?;
    let source = match source {
        None => MountSource::Volume(None),
        Some(s) => source_of(&what, s, None)?,
    };
    let mut req = MountRequest::new(source, target);
    for opt in options.into_iter().flat_map(|o| o.split(',')) {
        req.option(&what, opt)?;
    }
    Ok(req)
}

/// Parses `--tmpfs TARGET[:OPTIONS]` (podman's: `nosuid,nodev,noexec`
/// unless the options say otherwise; `size=` takes units).
pub fn parse_tmpfs(text: &str) -> Result<MountRequest> {
    let what = format!("--tmpfs {text:?}");
    let (target, options) = text.split_once(':').unwrap_or((text, ""));
    let mut req = MountRequest::new(MountSource::Tmpfs, check_target(&what, target)?);
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        req.option(&what, opt)?;
    }
    Ok(req)
}

/// Parses `--mount type=volume|bind|tmpfs,source=…,target=…[,readonly]…`
/// (docker's keys: `src`, `dst`/`destination`, `ro`, `volume-nocopy`,
/// `bind-propagation`, `bind-nonrecursive`, `tmpfs-size`, `tmpfs-mode`).
pub fn parse_mount(text: &str) -> Result<MountRequest> {
    let what = format!("--mount {text:?}");
    let mut fields: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for field in text.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field.trim(), None),
        };
        let key = match key {
            "src" => "source",
            "dst" | "destination" => "target",
            "ro" => "readonly",
            k => k,
        };
        if fields.insert(key, value).is_some() {
            return Err(Error::invalid(&what, format!("{key} is given twice")));
        }
    }
    let value = |key: &str| -> Result<Option<&str>> {
        match fields.get(key) {
            None => Ok(None),
            Some(Some(v)) => Ok(Some(*v)),
            Some(None) => Err(Error::invalid(
                &what,
                format!("{key} needs a value ({key}=…)"),
            )),
        }
    };
    let flag = |key: &str| -> Result<bool> {
        match fields.get(key) {
            None => Ok(false),
            Some(None | Some("true" | "1")) => Ok(true),
            Some(Some("false" | "0")) => Ok(false),
            Some(Some(v)) => Err(Error::invalid(
                &what,
                format!("{key}={v:?}: expected true or false"),
            )),
        }
    };
    let kind = value("type")?.unwrap_or("volume");
    let allowed: &[&str] = match kind {
        "volume" => &["volume-nocopy"],
        "bind" => &["bind-propagation", "bind-nonrecursive"],
        "tmpfs" => &["tmpfs-size", "tmpfs-mode"],
        other => {
            return Err(Error::invalid(
                &what,
                format!("type={other:?}: use volume, bind or tmpfs"),
            ))
        }
    };
    const COMMON: [&str; 4] = ["type", "source", "target", "readonly"];
    if let Some(key) = fields
        .keys()
        .find(|k| !COMMON.contains(k) && !allowed.contains(k))
    {
        return Err(Error::invalid(
            &what,
            format!(
                "{key} is not an option of type={kind} (valid: source, target, readonly{})",
                allowed.iter().map(|a| format!(", {a}")).collect::<String>()
            ),
        ));
    }
    let target = value("target")?
        .ok_or_else(|| Error::invalid(&what, "give the path in the container: target=/path"))?;
    let target = check_target(&what, target)?;
    let source = match (kind, value("source")?.filter(|s| !s.is_empty())) {
        ("volume", None) => MountSource::Volume(None),
        ("volume", Some(s)) => source_of(&what, s, Some(false))?,
        ("bind", Some(s)) => source_of(&what, s, Some(true))?,
        ("bind", None) => {
            return Err(Error::invalid(
                &what,
                "a bind mount needs source=/host/path",
            ))
        }
        (_, None) => MountSource::Tmpfs,
        (_, Some(_)) => {
            return Err(Error::invalid(
                &what,
                "a tmpfs has no source: leave source out",
            ))
        }
    };
    let mut req = MountRequest::new(source, target);
    req.readonly = flag("readonly")?;
    req.copy_up &= !flag("volume-nocopy")?;
    if let Some(p) = value("bind-propagation")? {
        req.option(&what, p)?;
    }
    if flag("bind-nonrecursive")? {
        req.option(&what, "bind")?;
    }
    if let Some(size) = value("tmpfs-size")? {
        req.option(&what, &format!("size={size}"))?;
    }
    if let Some(mode) = value("tmpfs-mode")? {
        req.option(&what, &format!("mode={mode}"))?;
    }
    Ok(req)
}

/// The image's Volumes, cleaned, sorted and deduplicated; `..` above `/`
/// and `/` itself are refused (a hostile image's "/.." once reached the
/// container's record directory).
pub fn image_volumes(config: &ImageConfiguration) -> Result<Vec<String>> {
    let entries = config
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default();
    if entries.len() > MAX_IMAGE_VOLUMES {
        return Err(Error::invalid(
            "the image's Volumes",
            format!(
                "{} entries, more than berth's limit of {MAX_IMAGE_VOLUMES}; rebuild the image with fewer",
                entries.len()
            ),
        ));
    }
    let mut volumes = entries
        .iter()
        .map(|v| match v.len() {
            n if n > MAX_TARGET_LEN => Err(Error::invalid(
                "the image's Volumes entry",
                format!("{n} bytes long, more than {MAX_TARGET_LEN}"),
            )),
            _ => clean_path("the image's Volumes entry", v),
        })
        .collect::<Result<Vec<_>>>()?;
    volumes.sort();
    volumes.dedup();
    if volumes.iter().any(|v| v == "/") {
        return Err(Error::invalid(
            "the image's Volumes entry \"/\"",
            "a volume cannot replace the container's root; rebuild the image without it",
        ));
    }
    Ok(volumes)
}

/// A new container's mounts once claimed: what the runtime mounts and the
/// volumes behind them.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// The runtime mounts, parents before children.
    pub mounts: Vec<Mount>,
    /// The volumes mounted, for the container's record.
    pub volumes: Vec<String>,
    /// (target, volume) pairs to fill from the image when empty.
    copy_ups: Vec<(String, String)>,
}

/// A new random volume name: 64 hex digits, as docker's.
fn anonymous_name() -> Result<String> {
    Ok(format!("{}{}", container::new_id()?, container::new_id()?))
}

/// Takes the volumes lock. The volumes directory is root's alone (0700):
/// a container may leave a setuid binary in a volume, which no other user
/// of the host may reach.
fn lock(layout: &Layout) -> Result<FileLock> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = layout.volumes();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    Ok(FileLock::acquire(
        &layout.volumes_lock(),
        LockMode::Exclusive,
    )?)
}

/// Reads volume `name`'s record; None when there is no such volume.
fn read(layout: &Layout, name: &str) -> Result<Option<Volume>> {
    let path = layout.volume_record(name);
    match std::fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            Error::invalid(
                format!("volume record {}", path.display()),
                format!("{e}; remove the volume's directory if it is left over"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Makes volume `name` (lock held): its directory appears whole, record
/// and empty `_data`, or not at all.
fn make(
    layout: &Layout,
    name: &str,
    labels: BTreeMap<String, String>,
    anonymous: bool,
) -> Result<Volume> {
    let dir = layout.volume(name);
    if dir.symlink_metadata().is_ok() {
        return Err(Error::VolumeExists { name: name.into() });
    }
    let volume = Volume {
        name: name.to_string(),
        created: chrono::Utc::now().to_rfc3339(),
        labels,
        anonymous,
    };
    let tmp = layout.volumes().join(format!(".new-{name}"));
    container::remove_dir(&tmp)?;
    let data = tmp.join("_data");
    std::fs::create_dir_all(&data)
        .and_then(|()| std::fs::set_permissions(&data, PermissionsExt::from_mode(0o755)))
        .map_err(|e| Error::io(&data, e))?;
    let record = serde_json::to_vec_pretty(&volume)
        .map_err(|e| Error::invalid("volume record", e.to_string()))?;
    let path = tmp.join("volume.json");
    atomic_write(&path, &record, Durability::Durable).map_err(|e| Error::io(&path, e))?;
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    fsync_dir(&layout.volumes()).map_err(|e| Error::io(layout.volumes(), e))?;
    Ok(volume)
}

/// Removes volume `name`'s directory (lock held): renamed away first, so
/// it is gone at once even if deleting its content fails half-way.
fn delete(layout: &Layout, name: &str) -> Result<()> {
    let gone = layout.volumes().join(format!(".rm-{name}"));
    container::remove_dir(&gone)?;
    let dir = layout.volume(name);
    std::fs::rename(&dir, &gone).map_err(|e| Error::io(&dir, e))?;
    container::remove_dir(&gone)
}

/// Removes what a crash left of making or removing a volume (lock held).
fn remove_leftovers(layout: &Layout) -> Result<()> {
    for entry in dir_entries(layout)? {
        if entry.starts_with(".new-") || entry.starts_with(".rm-") {
            container::remove_dir(&layout.volumes().join(entry))?;
        }
    }
    Ok(())
}

/// Names in the volumes directory.
fn dir_entries(layout: &Layout) -> Result<Vec<String>> {
    let dir = layout.volumes();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Every volume's record, by name.
fn list(layout: &Layout) -> Result<Vec<Volume>> {
    let mut out = Vec::new();
    for name in dir_entries(layout)? {
        if !name.starts_with('.') {
            out.extend(read(layout, &name)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes `record`'s anonymous volumes that no other container uses
/// (takes the volumes lock); returns their names.
pub(crate) fn remove_anonymous(layout: &Layout, record: &ContainerRecord) -> Result<Vec<String>> {
    if record.volumes.is_empty() {
        return Ok(Vec::new());
    }
    let _lock = lock(layout)?;
    let others: Vec<ContainerRecord> = container::list(layout)?
        .into_iter()
        .filter(|r| r.id != record.id)
        .collect();
    let mut removed = Vec::new();
    for name in &record.volumes {
        if check_name("container record", name).is_err() {
            continue;
        }
        let anonymous = read(layout, name)?.is_some_and(|v| v.anonymous);
        if anonymous && !others.iter().any(|r| r.volumes.contains(name)) {
            delete(layout, name)?;
            removed.push(name.clone());
        }
    }
    Ok(removed)
}

impl Engine {
    /// `berth volume create`: a new named volume; with `name` None one
    /// with a random name (64 hex digits; not anonymous, as docker's: only
    /// `volume rm` and `prune` remove it). A name in use is refused unless
    /// `ignore`, which returns the existing volume.
    pub fn create_volume(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        ignore: bool,
    ) -> Result<Volume> {
        let layout = self.layout();
        if let Some(n) = name {
            check_name("volume create", n)?;
        }
        let _lock = lock(layout)?;
        match name {
            Some(n) => match make(layout, n, labels, false) {
                Err(Error::VolumeExists { .. }) if ignore => self.volume(n),
                other => other,
            },
            None => make(layout, &anonymous_name()?, labels, false),
        }
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> Result<Vec<Volume>> {
        list(self.layout())
    }

    /// Volume `name`.
    pub fn volume(&self, name: &str) -> Result<Volume> {
        check_name("volume", name)?;
        read(self.layout(), name)?.ok_or_else(|| Error::NoSuchVolume { name: name.into() })
    }

    /// Where volume `name`'s content is on the host.
    pub fn volume_mountpoint(&self, name: &str) -> PathBuf {
        self.layout().volume_data(name)
    }

    /// The containers whose record says they mount volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<ContainerRecord>> {
        Ok(container::list(self.layout())?
            .into_iter()
            .filter(|r| r.volumes.iter().any(|v| v == name))
            .collect())
    }

    /// `berth volume rm`: removes volume `name` and its content. A volume
    /// some container uses is refused unless `force`, which removes those
    /// containers first (podman's `volume rm -f`).
    pub fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        self.volume(name)?;
        // A killed `run --rm` must not hold the volume (reaping frees it).
        self.reap_abandoned()?;
        if force {
            for rec in self.volume_users(name)? {
                self.remove_container(&rec, true)?;
            }
        }
        let layout = self.layout();
        let _lock = lock(layout)?;
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(Error::VolumeInUse {
                name: name.into(),
                containers: users
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if read(layout, name)?.is_none() {
            return Err(Error::NoSuchVolume { name: name.into() });
        }
        delete(layout, name)
    }

    /// `berth volume prune`: removes every volume no container uses (as
    /// podman, named ones too); returns their names.
    pub fn prune_volumes(&self) -> Result<Vec<String>> {
        self.reap_abandoned()?;
        self.remove_unused_volumes(false)
    }

    /// `berth rm -v`: removes `record`'s anonymous volumes that no other
    /// container uses; returns their names.
    pub fn remove_anonymous_volumes(&self, record: &ContainerRecord) -> Result<Vec<String>> {
        remove_anonymous(self.layout(), record)
    }

    /// Removes the volumes (only anonymous ones when `anonymous_only`, as
    /// `gc` does) that no container record lists, and what a crash left of
    /// making or removing one.
    pub(crate) fn remove_unused_volumes(&self, anonymous_only: bool) -> Result<Vec<String>> {
        let layout = self.layout();
        if !layout.volumes().is_dir() {
            return Ok(Vec::new());
        }
        let _lock = lock(layout)?;
        remove_leftovers(layout)?;
        let records = container::list(layout)?;
        let mut removed = Vec::new();
        for volume in list(layout)? {
            let used = records.iter().any(|r| r.volumes.contains(&volume.name));
            if !used && (volume.anonymous || !anonymous_only) {
                delete(layout, &volume.name)?;
                removed.push(volume.name);
            }
        }
        Ok(removed)
    }

    /// Claims a new container's mounts: `requests` (checked: one mount per
    /// target, bind sources present) plus an anonymous volume for each
    /// image Volume no request covers; makes the volumes missing. Returns
    /// them with the volumes lock (none without mounts), to be held until
    /// the container's record (listing the volumes) is written. On failure
    /// no volume made here is left.
    pub(crate) fn claim_mounts(
        &self,
        config: &ImageConfiguration,
        requests: &[MountRequest],
    ) -> Result<(Claimed, Option<FileLock>)> {
        let mut all = requests.to_vec();
        for (i, r) in all.iter().enumerate() {
            // Requests made by a library caller rather than the parsers
            // are held to the same rules.
            let what = format!("mount target {}", r.target);
            if check_target(&what, &r.target)? != r.target {
                return Err(Error::invalid(what, "give a clean absolute path"));
            }
            if let MountSource::Volume(Some(name)) = &r.source {
                check_name(&what, name)?;
            }
            if all[..i].iter().any(|o| o.target == r.target) {
                return Err(Error::invalid(
                    format!("mount target {}", r.target),
                    "is given more than once: give each path in the container one mount",
                ));
            }
            if let MountSource::Bind(src) = &r.source {
                if !src.exists() {
                    return Err(Error::invalid(
                        format!("volume {}:{}", src.display(), r.target),
                        format!(
                            "the host path {} does not exist (create it first)",
                            src.display()
                        ),
                    ));
                }
            }
        }
        for target in image_volumes(config)? {
            if KERNEL_DIRS
                .iter()
                .any(|d| target == *d || target.starts_with(&format!("{d}/")))
            {
                // An image may not hide the kernel's filesystems (or put
                // the runtime's device nodes on the host's disk).
                tracing::warn!(
                    "ignoring the image's Volume {target}: it lies in a kernel filesystem"
                );
                continue;
            }
            if !all.iter().any(|r| r.target == target) {
                all.push(MountRequest::new(MountSource::Volume(None), target));
            }
        }
        // Parents before children, as docker orders them.
        all.sort_by_key(|r| r.target.matches('/').count());
        let mut claimed = Claimed {
            mounts: Vec::new(),
            volumes: Vec::new(),
            copy_ups: Vec::new(),
        };
        if all.is_empty() {
            return Ok((claimed, None));
        }
        let layout = self.layout();
        let lock = lock(layout)?;
        let before = dir_entries(layout)?;
        let result = (|| {
            for r in &all {
                let source = match &r.source {
                    MountSource::Volume(name) => {
                        let name = match name {
                            Some(n) if read(layout, n)?.is_some() => n.clone(),
                            Some(n) => make(layout, n, BTreeMap::new(), false)?.name,
                            None => make(layout, &anonymous_name()?, BTreeMap::new(), true)?.name,
                        };
                        if !claimed.volumes.contains(&name) {
                            claimed.volumes.push(name.clone());
                        }
                        if r.copy_up {
                            claimed.copy_ups.push((r.target.clone(), name.clone()));
                        }
                        layout.volume_data(&name)
                    }
                    MountSource::Bind(src) => src.clone(),
                    MountSource::Tmpfs => PathBuf::new(),
                };
                claimed.mounts.push(r.runtime_mount(&source));
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok((claimed, Some(lock))),
            Err(e) => {
                // Volumes this claim made are not in any record yet.
                for name in dir_entries(layout).unwrap_or_default() {
                    if !before.contains(&name) {
                        let _ = container::remove_dir(&layout.volumes().join(name));
                    }
                }
                Err(e)
            }
        }
    }

    /// Fills each of `claimed`'s volumes that is empty from the image's
    /// content at its target in `rootfs` (the container's mounted, not yet
    /// started root: resolved inside it, symlinks cannot lead out), as
    /// docker and podman do. A target that is missing or not a directory
    /// in the image leaves the volume empty.
    ///
    /// A running container may share the volume and write into it
    /// meanwhile (planting symlinks, say): the copy is made in a directory
    /// beside `_data` that no container sees, then each top entry is
    /// renamed into `_data` without replacing anything, and the root's
    /// owner and mode are set through a descriptor. Nothing is ever
    /// written through a path a container could change.
    pub(crate) fn copy_up(&self, claimed: &Claimed, rootfs: &Path) -> Result<()> {
        if claimed.copy_ups.is_empty() {
            return Ok(());
        }
        let layout = self.layout();
        let _lock = lock(layout)?;
        let root = File::open(rootfs).map_err(|e| Error::io(rootfs, e))?;
        for (target, name) in &claimed.copy_ups {
            let what = || format!("volume {name}: filling it from the image's {target}");
            let data_path = layout.volume_data(name);
            let data = File::open(&data_path).map_err(|e| Error::io(&data_path, e))?;
            if !list_dir(data.as_fd())
                .map_err(|e| Error::sys(what(), e))?
                .is_empty()
            {
                continue;
            }
            let src = match open_dir_in(root.as_fd(), target.trim_start_matches('/').as_bytes()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(e) => return Err(Error::sys(what(), e)),
            };
            // The O_PATH descriptor as a path: the resolved directory itself.
            let src_path = PathBuf::from(format!("/proc/self/fd/{}/.", src.as_raw_fd()));
            let staging = layout.volume(name).join(".copy-up");
            container::remove_dir(&staging)?;
            std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
            let moved = berth_snapshot::copy_tree(&src_path, &staging)
                .map_err(|e| Error::invalid(what(), e.to_string()))
                .and_then(|()| move_into(&staging, &data));
            container::remove_dir(&staging)?;
            moved?;
        }
        Ok(())
    }
}

/// Moves every entry of the directory `from` into the open directory
/// `into` (renames that never replace an entry: one a container made
/// meanwhile stays), then gives `into` the owner and mode of `from`.
fn move_into(from: &Path, into: &File) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = File::open(from).map_err(|e| Error::io(from, e))?;
    let names =
        list_dir(dir.as_fd()).map_err(|e| Error::sys(format!("listing {}", from.display()), e))?;
    for name in names {
        let name = std::ffi::OsStr::from_bytes(&name);
        match renameat2(
            dir.as_fd(),
            name,
            into.as_fd(),
            name,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::sys(format!("moving {name:?} into the volume"), e)),
        }
    }
    let meta = dir.metadata().map_err(|e| Error::io(from, e))?;
    std::os::unix::fs::fchown(into, Some(meta.uid()), Some(meta.gid()))
        .and_then(|()| into.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777)))
        .map_err(|e| Error::io(from, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(r: &MountRequest) -> Vec<&str> {
        r.options.iter().map(String::as_str).collect()
    }

    #[test]
    fn dash_v_takes_binds_named_and_anonymous_volumes() {
        let r = parse_volume("/host/dir:/data:ro").unwrap();
        assert_eq!(r.source, MountSource::Bind("/host/dir".into()));
        assert_eq!((r.target.as_str(), r.readonly), ("/data", true));
        assert_eq!(opts(&r), ["rbind", "rprivate"]);
        let r = parse_volume("/h:/x/./y/:rw,bind,rshared,nosuid,z").unwrap();
        assert_eq!(r.target, "/x/y");
        assert_eq!(opts(&r), ["bind", "rshared", "nosuid"]);
        assert!(!r.readonly && !r.copy_up);
        let r = parse_volume("cache:/var/cache:nocopy,noexec,exec").unwrap();
        assert_eq!(r.source, MountSource::Volume(Some("cache".into())));
        assert_eq!(opts(&r), ["rbind", "rprivate", "exec"]);
        assert!(!r.copy_up);
        let r = parse_volume("/scratch").unwrap();
        assert_eq!(r.source, MountSource::Volume(None));
        assert!(r.copy_up);
    }

    #[test]
    fn bad_sources_targets_and_options_name_the_input() {
        for (text, says) in [
            ("./rel:/x", "volume name \"./rel\""),
            ("bad name:/x", "volume name \"bad name\""),
            ("-x:/x", "volume name \"-x\""),
            ("a:relative", "must be an absolute path"),
            ("a:/x/../etc", "must not contain `..`"),
            ("a:/", "root `/`"),
            ("a://", "root `/`"),
            ("a:/x:rw:ro", "expected [SOURCE:]TARGET"),
            ("a:/x:shared", "bind mounts only"),
            ("/h:/x:nocopy", "unknown option \"nocopy\""),
            ("a:/x:size=1m", "unknown option \"size=1m\""),
            ("", "must be an absolute path"),
        ] {
            let err = parse_volume(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
        }
        let long = "v".repeat(MAX_NAME_LEN + 1);
        assert!(parse_volume(&format!("{long}:/x")).is_err());
        assert!(parse_volume(&format!("{}:/x", &long[1..])).is_ok());
    }

    #[test]
    fn tmpfs_gets_podmans_defaults_and_checked_options() {
        let r = parse_tmpfs("/scratch:size=1m,mode=1777,exec,uid=5").unwrap();
        assert_eq!(r.source, MountSource::Tmpfs);
        assert_eq!(
            opts(&r),
            [
                "nosuid",
                "nodev",
                "size=1048576",
                "mode=1777",
                "exec",
                "uid=5"
            ]
        );
        let m = r.runtime_mount(Path::new(""));
        assert_eq!(m.typ().as_deref(), Some("tmpfs"));
        assert_eq!(m.source().as_deref(), Some(Path::new("tmpfs")));
        let r = parse_tmpfs("/t:ro").unwrap();
        assert!(r.readonly);
        for (text, says) in [
            ("/t:size=lots", "expected a size"),
            ("/t:mode=999", "octal"),
            ("/t:uid=-1", "expected an id"),
            ("/t:nocopy", "unknown option"),
            ("/t:rshared", "unknown option"),
            ("/..", "`..`"),
        ] {
            let err = parse_tmpfs(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn dash_dash_mount_follows_dockers_keys() {
        let r = parse_mount("type=bind,src=/h,dst=/c,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(r.source, MountSource::Bind("/h".into()));
        assert_eq!((r.target.as_str(), r.readonly), ("/c", true));
        assert_eq!(opts(&r), ["rbind", "rslave"]);
        let r = parse_mount("source=data,target=/d,volume-nocopy").unwrap();
        assert_eq!(r.source, MountSource::Volume(Some("data".into())));
        assert!(!r.copy_up && !r.readonly);
        let r = parse_mount("type=volume,target=/anon,ro=false").unwrap();
        assert_eq!(r.source, MountSource::Volume(None));
        let r = parse_mount("type=tmpfs,destination=/t,tmpfs-size=64k,tmpfs-mode=700").unwrap();
        assert_eq!(opts(&r)[3..], ["size=65536", "mode=700"]);
        for (text, says) in [
            ("type=bind,target=/c", "needs source=/host/path"),
            ("type=bind,source=rel,target=/c", "absolute host path"),
            ("type=volume,source=/abs,target=/c", "volume name \"/abs\""),
            ("type=tmpfs,source=x,target=/c", "has no source"),
            ("type=nfs,target=/c", "type=\"nfs\""),
            (
                "type=volume,target=/c,tmpfs-size=1m",
                "not an option of type=volume",
            ),
            ("type=bind,source=/h", "target=/path"),
            ("target=/a,dst=/b", "given twice"),
            ("target=/a,readonly=maybe", "expected true or false"),
            ("type=volume,target=/a/../b", "`..`"),
        ] {
            let err = parse_mount(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    /// A container sharing the volume plants a symlink where the copy will
    /// put a file: the copy must not write through it.
    #[test]
    fn copy_up_never_writes_through_what_a_container_planted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (staging, data, outside) = (
            dir.path().join("staging"),
            dir.path().join("data"),
            dir.path().join("outside"),
        );
        std::fs::create_dir_all(staging.join("d")).unwrap();
        std::fs::create_dir(&data).unwrap();
        std::fs::write(staging.join("passwd"), "from the image").unwrap();
        std::fs::write(staging.join("d/f"), "f").unwrap();
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::write(&outside, "host file").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("passwd")).unwrap();
        move_into(&staging, &File::open(&data).unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host file");
        assert!(data.join("passwd").symlink_metadata().unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(data.join("d/f")).unwrap(), "f");
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }

    fn config(volumes: serde_json::Value) -> ImageConfiguration {
        serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Cmd": ["true"], "Volumes": volumes}
        }))
        .unwrap()
    }

    /// A hostile image's Volumes entry of "/.." once bind-mounted the
    /// container's record directory over the container's root; "/" would
    /// have replaced the root.
    #[test]
    fn image_volumes_are_cleaned_and_never_the_root() {
        let v = image_volumes(&config(
            json!({"/a_b": {}, "/a/b": {}, "/a/../c/": {}, "/c": {}}),
        ));
        assert_eq!(v.unwrap(), ["/a/b", "/a_b", "/c"]);
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_IMAGE_VOLUMES)
            .map(|i| (format!("/v{i}"), json!({})))
            .collect();
        let long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
        for bad in [json!(many), json!({ long.clone(): {} })] {
            let err = image_volumes(&config(bad)).unwrap_err().to_string();
            assert!(err.contains("more than"), "{err}");
        }
        assert!(parse_volume(&format!("v:{long}")).is_err());
        for bad in ["/..", "/data/../../x", "/.", "/"] {
            let err = image_volumes(&config(json!({ bad: {} })))
                .unwrap_err()
                .to_string();
            assert!(err.contains("Volumes"), "{bad}: {err}");
        }
    }

    #[test]
    fn volumes_are_made_whole_listed_claimed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let v = engine
            .create_volume(Some("data"), labels.clone(), false)
            .unwrap();
        assert_eq!(
            (v.name.as_str(), v.anonymous, &v.labels),
            ("data", false, &labels)
        );
        assert!(engine.volume_mountpoint("data").is_dir());
        let err = engine
            .create_volume(Some("data"), BTreeMap::new(), false)
            .unwrap_err();
        assert!(matches!(err, Error::VolumeExists { .. }), "{err}");
        assert_eq!(
            engine
                .create_volume(Some("data"), BTreeMap::new(), true)
                .unwrap(),
            v
        );
        assert!(engine
            .create_volume(Some("../x"), BTreeMap::new(), false)
            .is_err());
        assert!(matches!(
            engine.volume("nope"),
            Err(Error::NoSuchVolume { .. })
        ));
        assert!(engine.volume("../../etc").is_err());

        let requests = [
            parse_volume("data:/d/sub").unwrap(),
            parse_volume("new:/n").unwrap(),
            parse_tmpfs("/t").unwrap(),
        ];
        let (claimed, lock) = engine
            .claim_mounts(&config(json!({"/d": {}, "/n": {}})), &requests)
            .unwrap();
        drop(lock);
        let targets: Vec<_> = claimed
            .mounts
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        assert_eq!(targets, ["/n", "/t", "/d", "/d/sub"], "parents first");
        assert_eq!(claimed.volumes.len(), 3);
        let anon = claimed
            .volumes
            .iter()
            .find(|n| n.len() == 64)
            .unwrap()
            .clone();
        assert!(engine.volume(&anon).unwrap().anonymous);
        assert!(!engine.volume("new").unwrap().anonymous);

        // The image cannot hide the kernel's filesystems.
        let (claimed, _) = engine
            .claim_mounts(&config(json!({"/dev": {}, "/proc/x": {}, "/sys": {}})), &[])
            .unwrap();
        assert!(claimed.mounts.is_empty() && claimed.volumes.is_empty());

        // A failed claim leaves nothing it made.
        let before = engine.volumes().unwrap().len();
        let twice = [
            parse_volume("other:/x").unwrap(),
            parse_tmpfs("/x").unwrap(),
        ];
        assert!(engine.claim_mounts(&config(json!({})), &twice).is_err());
        let missing = [parse_volume("/no/such/host/dir:/x").unwrap()];
        let err = engine
            .claim_mounts(&config(json!({"/v": {}})), &missing)
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_eq!(engine.volumes().unwrap().len(), before);

        // No container records: gc takes the anonymous one, prune the rest.
        assert_eq!(engine.remove_unused_volumes(true).unwrap(), [anon]);
        assert_eq!(engine.prune_volumes().unwrap(), ["data", "new"]);
        assert!(engine.volumes().unwrap().is_empty());
        assert!(matches!(
            engine.remove_volume("data", false),
            Err(Error::NoSuchVolume { .. })
        ));
    }
}
