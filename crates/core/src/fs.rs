//! Crash-safe file replacement: nothing half-written is ever visible under
//! a file's final name.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a write must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and its directory after: after a
    /// crash the file is the old or the new one, whole.
    Durable,
    /// No fsync: atomic for readers while the machine runs, but a crash may
    /// leave the old content, or (on some file systems) an empty file. For
    /// state that dies with the machine anyway (a `--rm` container's record).
    Volatile,
}

/// Fsyncs a directory, so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The marker in the names of temporary files made here.
const TEMP_MARK: &str = ".tmp-";

/// A temporary name beside `path`, unique on this machine: hidden, with
/// the final name, this process's id and a per-process counter.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TEMP_MARK}{}-{n}", std::process::id()))
}

/// Whether `name` is one of the temporary names [`atomic_write`] makes
/// (left behind only by a crash; safe to delete when its writer is gone).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARK)
}

/// Replaces `path` with what `fill` writes into a new temporary file beside
/// it, then renames it into place (with `Durable`, fsyncing file and
/// directory). On any error the temporary file is removed and `path` is
/// untouched. The parent directory must exist.
pub fn write_atomically(
    path: &Path,
    durability: Durability,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        fill(&mut file)?;
        if durability == Durability::Durable {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, path)?;
        if durability == Durability::Durable {
            fsync_dir(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `data` (see [`write_atomically`]).
pub fn atomic_write(path: &Path, data: &[u8], durability: Durability) -> io::Result<()> {
    write_atomically(path, durability, |f| f.write_all(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for (data, d) in [
            (&b"first"[..], Durability::Durable),
            (b"second", Durability::Volatile),
        ] {
            atomic_write(&path, data, d).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        atomic_write(&path, b"old", Durability::Durable).unwrap();
        let err = write_atomically(&path, Durability::Durable, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("source failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "source failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_names_are_recognised() {
        let t = temp_path(Path::new("/x/blob"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(name), "{name}");
        assert!(!is_temp_name("blob") && !is_temp_name("data"));
        assert_ne!(temp_path(Path::new("/x/blob")), t, "unique per call");
    }
}
