//! Snapshotter behaviour with both drivers: the lifecycle (prepare, commit,
//! view, mounts, usage, walk, remove), driver detection and the crash
//! cleanup in `open`. Unpacking layers into snapshots (and `kill -9` during
//! an unpack) is tested with the unpacker, in berth-engine's tests/unpack.rs.

use std::fs;
use std::path::{Path, PathBuf};

use berth_core::fs::Durability;
use berth_snapshot::{
    mount_all, unmount, Driver, Kind, SnapshotError, Snapshotter, EXTRACT_PREFIX,
};

fn store(driver: Driver) -> (tempfile::TempDir, Snapshotter) {
    berth_testutil::require_root();
    let dir = tempfile::Builder::new()
        .prefix("berth-snap-")
        .tempdir()
        .unwrap();
    let s = Snapshotter::open(&dir.path().join("store"), Some(driver)).unwrap();
    (dir, s)
}

/// Unmounts on drop so a failing assertion does not leak a mount.
struct Mounted(PathBuf);
impl Mounted {
    fn new(s: &Snapshotter, key: &str, target: &Path) -> Mounted {
        fs::create_dir_all(target).unwrap();
        mount_all(&s.mounts(key).unwrap(), target).unwrap();
        Mounted(target.to_path_buf())
    }
}
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = unmount(&self.0);
    }
}

fn lifecycle(driver: Driver) {
    let (tmp, s) = store(driver);
    assert_eq!(s.driver(), driver);
    s.prepare("base-active", None).unwrap();
    fs::write(s.fs_dir("base-active").unwrap().join("a"), b"base").unwrap();
    s.commit("base", "base-active").unwrap();
    assert_eq!(s.stat("base").unwrap().kind, Kind::Committed);
    assert!(matches!(
        s.stat("base-active"),
        Err(SnapshotError::NotFound(_))
    ));

    s.prepare("c1", Some("base")).unwrap();
    let mnt = tmp.path().join("mnt");
    {
        let _m = Mounted::new(&s, "c1", &mnt);
        assert_eq!(fs::read(mnt.join("a")).unwrap(), b"base");
        fs::write(mnt.join("a"), b"changed").unwrap();
        fs::write(mnt.join("b"), b"new").unwrap();
    }
    // The committed parent is untouched by the container's writes.
    let view_mnt = tmp.path().join("view");
    s.view("v", Some("base")).unwrap();
    {
        let _m = Mounted::new(&s, "v", &view_mnt);
        assert_eq!(fs::read(view_mnt.join("a")).unwrap(), b"base");
        assert!(!view_mnt.join("b").exists());
        assert!(
            fs::write(view_mnt.join("x"), b"x").is_err(),
            "views are read-only"
        );
    }
    let u = s.usage("c1").unwrap();
    assert!(u.inodes >= 3, "{u:?}");

    let e = s.remove("base").unwrap_err();
    assert!(
        e.to_string().contains("c1") && e.to_string().contains("remove those first"),
        "{e}"
    );
    assert!(matches!(
        s.prepare("c1", Some("base")),
        Err(SnapshotError::AlreadyExists(_))
    ));
    let e = s.prepare("c2", Some("c1")).unwrap_err();
    assert!(e.to_string().contains("committed"), "{e}");

    let mut names = Vec::new();
    s.walk(|i| names.push((i.name.clone(), i.kind))).unwrap();
    assert_eq!(
        names,
        vec![
            ("base".into(), Kind::Committed),
            ("c1".into(), Kind::Active),
            ("v".into(), Kind::View)
        ]
    );
    s.remove("c1").unwrap();
    s.remove("v").unwrap();
    s.remove("base").unwrap();
    assert_eq!(fs::read_dir(s.root().join("snapshots")).unwrap().count(), 0);
}

#[test]
fn overlay_lifecycle_prepare_commit_view_remove() {
    lifecycle(Driver::Overlay);
}

#[test]
fn copy_lifecycle_prepare_commit_view_remove() {
    lifecycle(Driver::Copy);
}

#[test]
fn open_detects_overlay_here_and_a_store_keeps_its_driver() {
    berth_testutil::require_root();
    let dir = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(dir.path(), None).unwrap();
    assert_eq!(
        s.driver(),
        Driver::Overlay,
        "this VM's filesystem supports overlay"
    );
    let copy = tempfile::tempdir().unwrap();
    Snapshotter::open(copy.path(), Some(Driver::Copy)).unwrap();
    assert_eq!(
        Snapshotter::open(copy.path(), None).unwrap().driver(),
        Driver::Copy
    );
    let e = Snapshotter::open(copy.path(), Some(Driver::Overlay)).unwrap_err();
    assert!(e.to_string().contains("Copy driver"), "{e}");
}

#[test]
fn open_removes_extract_snapshots_of_dead_processes_and_stray_dirs() {
    let (_tmp, s) = store(Driver::Overlay);
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    let dead = format!("{EXTRACT_PREFIX}{}-0-layer", exited.id());
    let alive = format!("{EXTRACT_PREFIX}{}-0-layer", std::process::id());
    for key in [&dead, &alive, &"ctr".to_string()] {
        s.prepare(key, None).unwrap();
    }
    // A directory no record names: a crash between creating and recording it.
    fs::create_dir(s.root().join("snapshots/999999")).unwrap();

    let s = Snapshotter::open(s.root(), None).unwrap();
    let mut left = Vec::new();
    s.walk(|i| left.push(i.name.clone())).unwrap();
    assert_eq!(left, vec!["ctr".to_string(), alive], "{dead} removed");
    assert_eq!(fs::read_dir(s.root().join("snapshots")).unwrap().count(), 2);
}

/// Rewrites the store's metadata as a later boot would find it: every
/// unsynced snapshot recorded under this boot's id is from an earlier boot.
/// Returns how many there were.
fn as_after_a_reboot(s: &Snapshotter) -> usize {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let path = s.root().join("metadata.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace(boot.trim(), "an-earlier-boot")).unwrap();
    text.matches(boot.trim()).count()
}

/// Commits snapshot `name` on `parent` holding one file, `name`.
fn commit(s: &Snapshotter, name: &str, parent: Option<&str>, durability: Durability) {
    let key = format!("{name}-key");
    s.prepare(&key, parent).unwrap();
    fs::write(s.fs_dir(&key).unwrap().join(name), name).unwrap();
    s.commit_with(name, &key, durability).unwrap();
}

#[test]
fn layers_beyond_a_page_of_options_mount_and_beyond_overlays_limit_are_named() {
    let (tmp, s) = store(Driver::Overlay);
    let mut parent: Option<String> = None;
    for i in 0..501 {
        let name = format!("layer-{i:03}");
        commit(&s, &name, parent.as_deref(), Durability::Volatile);
        parent = Some(name);
    }
    // 120 lowers are ~10 KB of options, more than mount(2) takes in one
    // page: each lower goes to the new mount API on its own.
    s.prepare("c120", Some("layer-119")).unwrap();
    let mnt = tmp.path().join("mnt");
    {
        let _m = Mounted::new(&s, "c120", &mnt);
        for seen in ["layer-000", "layer-059", "layer-119"] {
            assert_eq!(fs::read_to_string(mnt.join(seen)).unwrap(), seen);
        }
    }
    // 501 lowers: more than overlayfs stacks, said as such.
    s.prepare("c501", parent.as_deref()).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let err = mount_all(&s.mounts("c501").unwrap(), &mnt)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("501 layers") && err.contains("at most 500"),
        "{err}"
    );
}

fn names(s: &Snapshotter) -> Vec<String> {
    let mut names = Vec::new();
    s.walk(|i| names.push(i.name.clone())).unwrap();
    names
}

#[test]
fn unsynced_commits_survive_in_this_boot_and_go_after_a_crash_with_what_is_on_them() {
    let (_tmp, s) = store(Driver::Overlay);
    commit(&s, "base", None, Durability::Durable);
    commit(&s, "lost", Some("base"), Durability::Volatile);
    commit(&s, "lost-child", Some("lost"), Durability::Volatile);
    s.prepare("ctr-on-lost", Some("lost-child")).unwrap();
    s.prepare("ctr-on-base", Some("base")).unwrap();
    // The same boot: the page cache has every file.
    let s = Snapshotter::open(s.root(), None).unwrap();
    let all = ["base", "ctr-on-base", "ctr-on-lost", "lost", "lost-child"];
    assert_eq!(names(&s), all);
    let file = s.fs_dir("lost-child").unwrap().join("lost-child");
    assert_eq!(fs::read_to_string(file).unwrap(), "lost-child");

    assert_eq!(as_after_a_reboot(&s), 2, "the two unsynced commits");
    let s = Snapshotter::open(s.root(), None).unwrap();
    assert_eq!(
        names(&s),
        ["base", "ctr-on-base"],
        "lost and all above it gone"
    );
    assert_eq!(fs::read_dir(s.root().join("snapshots")).unwrap().count(), 2);
}

#[test]
fn sync_makes_a_snapshot_and_its_ancestors_survive_a_crash() {
    let (_tmp, s) = store(Driver::Copy);
    commit(&s, "lower", None, Durability::Volatile);
    commit(&s, "upper", Some("lower"), Durability::Volatile);
    s.sync("upper").unwrap();
    assert_eq!(as_after_a_reboot(&s), 0, "nothing unsynced is left");
    let s = Snapshotter::open(s.root(), None).unwrap();
    assert_eq!(names(&s), ["lower", "upper"]);
    let file = s.fs_dir("upper").unwrap().join("upper");
    assert_eq!(fs::read_to_string(file).unwrap(), "upper");
    // Durable already: nothing to do.
    s.sync("lower").unwrap();
}
