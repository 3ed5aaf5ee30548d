//! Scratch directories for targets that need a file system, and a
//! comparable snapshot of a directory tree.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where scratch directories are made: `$BERTH_FUZZ_TMP`, else `/dev/shm`
/// (tmpfs: the content store's fsyncs cost nothing there, and it takes
/// `trusted.*` xattrs), else the system temporary directory.
pub(crate) fn base() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_FUZZ_TMP") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// A fresh directory, removed when dropped.
pub(crate) fn dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-fuzz-")
        .tempdir_in(base())
        .expect("cannot create a scratch directory (set BERTH_FUZZ_TMP to a writable directory)")
}

/// Writes `data` to `path`, panicking on failure (the environment, not the
/// input, is broken then).
pub(crate) fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Creates a symlink, panicking on failure.
pub(crate) fn symlink(target: &str, path: &Path) {
    std::os::unix::fs::symlink(target, path)
        .unwrap_or_else(|e| panic!("cannot create symlink {}: {e}", path.display()));
}

/// Everything observable about the tree under `dir` that a layer could
/// change: type, mode, owner, link count, content and link target of every
/// entry, by relative path.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
            let ft = md.file_type();
            let what = if ft.is_symlink() {
                format!("symlink -> {:?}", std::fs::read_link(&path).ok())
            } else if ft.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if ft.is_file() {
                let data = std::fs::read(&path).unwrap_or_default();
                format!("file {:?}", String::from_utf8_lossy(&data))
            } else {
                format!("special rdev={}", md.rdev())
            };
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} owner={}:{} nlink={} mtime={}",
                    md.permissions().mode(),
                    md.uid(),
                    md.gid(),
                    if ft.is_dir() { 0 } else { md.nlink() },
                    if ft.is_dir() { 0 } else { md.mtime() },
                ),
            );
        }
    }
    out
}

/// A directory that every process shares and creates the same way (so it
/// is never left behind once per process): `base()/<name>`, filled by
/// `fill` when `<name>/.complete` is missing.
pub(crate) fn shared_dir(name: &str, fill: impl FnOnce(&Path)) -> PathBuf {
    let dir = base().join(name);
    if dir.join(".complete").exists() {
        return dir;
    }
    // Build under a private name, then rename into place (another process
    // may win the race; its copy is identical).
    let tmp = base().join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
    fill(&tmp);
    write(&tmp.join(".complete"), b"");
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(
        dir.join(".complete").exists(),
        "cannot create {}",
        dir.display()
    );
    dir
}
