//! Snapshotter behaviour with both drivers, layer sharing, crash recovery and
//! long overlay lower chains.

use std::cell::RefCell;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_archive::{ApplyOptions, Compression};
use berth_snapshot::{
    chain_ids, mount_all, unmount, unpack_chain, Driver, Kind, SnapshotError, Snapshotter,
};
use sha2::{Digest, Sha256};

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn diff_id(tar: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(tar)))
}

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

fn opts() -> ApplyOptions {
    ApplyOptions {
        skip_devices: false,
        ..ApplyOptions::default()
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
fn shared_layers_are_unpacked_once() {
    for driver in [Driver::Overlay, Driver::Copy] {
        let (tmp, s) = store(driver);
        let base = tar_of(&[("etc/os", b"debian")]);
        let app1 = tar_of(&[("app/one", b"1")]);
        let app2 = tar_of(&[("app/two", b"2"), (".wh.etc", b"")]);
        let opened = RefCell::new(Vec::new());
        let unpack = |layers: Vec<&Vec<u8>>| {
            let ids: Vec<String> = layers.iter().map(|l| diff_id(l)).collect();
            let mut open = |i: usize| -> Result<(Box<dyn Read + Send + '_>, Compression), String> {
                opened.borrow_mut().push(ids[i].clone());
                Ok((Box::new(&layers[i][..]), Compression::None))
            };
            unpack_chain(&s, &ids, &mut open, &opts()).unwrap().unwrap()
        };
        let top1 = unpack(vec![&base, &app1]);
        let top2 = unpack(vec![&base, &app2]);
        assert_eq!(
            opened.borrow().len(),
            3,
            "base opened once: {:?}",
            opened.borrow()
        );
        assert_eq!(top1, chain_ids(&[diff_id(&base), diff_id(&app1)])[1]);
        s.prepare("ctr", Some(&top2)).unwrap();
        let mnt = tmp.path().join("m");
        let _m = Mounted::new(&s, "ctr", &mnt);
        assert_eq!(fs::read(mnt.join("app/two")).unwrap(), b"2");
        assert!(
            !mnt.join("etc").exists(),
            "{driver:?}: whiteout hides the base layer's dir"
        );
        assert!(!mnt.join("app/one").exists());
        // A committed layer mounts with everything below it.
        let top_mnt = tmp.path().join("top");
        let _t = Mounted::new(&s, &top2, &top_mnt);
        assert_eq!(fs::read(top_mnt.join("app/two")).unwrap(), b"2");
        assert!(!top_mnt.join("etc").exists(), "{driver:?}");
    }
}

#[test]
fn wrong_diff_id_leaves_no_snapshot_behind() {
    let (_tmp, s) = store(Driver::Overlay);
    let layer = tar_of(&[("f", b"x")]);
    let wrong = format!("sha256:{}", "1".repeat(64));
    let mut open = |_i: usize| -> Result<(Box<dyn Read + Send + '_>, Compression), String> {
        Ok((Box::new(&layer[..]), Compression::None))
    };
    let e = unpack_chain(&s, std::slice::from_ref(&wrong), &mut open, &opts()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("diff_id mismatch") && msg.contains(&wrong),
        "{msg}"
    );
    let mut n = 0;
    s.walk(|_| n += 1).unwrap();
    assert_eq!(n, 0);
    assert_eq!(fs::read_dir(s.root().join("snapshots")).unwrap().count(), 0);
}

#[test]
fn long_lower_chains_mount_beyond_one_page_of_options() {
    let (tmp, s) = store(Driver::Overlay);
    let layers: Vec<Vec<u8>> = (0..120)
        .map(|i| tar_of(&[(&format!("l{i}"), b"x")]))
        .collect();
    let ids: Vec<String> = layers.iter().map(|l| diff_id(l)).collect();
    let mut open = |i: usize| -> Result<(Box<dyn Read + Send + '_>, Compression), String> {
        Ok((Box::new(&layers[i][..]), Compression::None))
    };
    let top = unpack_chain(&s, &ids, &mut open, &opts()).unwrap().unwrap();
    s.prepare("ctr", Some(&top)).unwrap();
    let opts_len: usize = s.mounts("ctr").unwrap()[0].options.join(",").len();
    assert!(
        opts_len > 4096,
        "the test needs a long option string, got {opts_len}"
    );
    let mnt = tmp.path().join("m");
    let _m = Mounted::new(&s, "ctr", &mnt);
    for i in 0..120 {
        assert!(mnt.join(format!("l{i}")).exists(), "l{i}");
    }
}

/// Child half of `kill_9_during_unpack_leaves_a_clean_store`: unpacks a layer
/// read from stdin into the store named by the environment. Does nothing
/// when run as a normal test.
#[test]
fn kill9_child_unpacks_from_stdin() {
    let Ok(root) = std::env::var("BERTH_SNAP_KILL9_ROOT") else {
        return;
    };
    let id = std::env::var("BERTH_SNAP_KILL9_DIFF").unwrap();
    let s = Snapshotter::open(Path::new(&root), Some(Driver::Overlay)).unwrap();
    let mut open = |_i: usize| -> Result<(Box<dyn Read + Send>, Compression), String> {
        Ok((Box::new(std::io::stdin()), Compression::None))
    };
    let _ = unpack_chain(
        &s,
        &[id],
        &mut open,
        &ApplyOptions {
            threads: 0,
            ..opts()
        },
    );
}

#[test]
fn kill_9_during_unpack_leaves_a_clean_store() {
    let (_tmp, s) = store(Driver::Overlay);
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("d/f{i}"), vec![b'x'; 4096]))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let layer = tar_of(&refs);
    let id = diff_id(&layer);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill9_child_unpacks_from_stdin",
            "--exact",
            "--test-threads=1",
        ])
        .env("BERTH_SNAP_KILL9_ROOT", s.root())
        .env("BERTH_SNAP_KILL9_DIFF", &id)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&layer[..layer.len() / 2]).unwrap();
    stdin.flush().unwrap();
    // Wait until the child has written files into its active snapshot.
    let snaps = s.root().join("snapshots");
    let mut seen = false;
    for _ in 0..600 {
        let written = fs::read_dir(&snaps).unwrap().flatten().any(|e| {
            fs::read_dir(e.path().join("fs/d"))
                .map(|d| d.count() > 10)
                .unwrap_or(false)
        });
        if written {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(seen, "the child never started writing its layer");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    let s = Snapshotter::open(s.root(), Some(Driver::Overlay)).unwrap();
    let mut left = Vec::new();
    s.walk(|i| left.push(i.name.clone())).unwrap();
    assert!(left.is_empty(), "leftover snapshots: {left:?}");
    assert_eq!(
        fs::read_dir(&snaps).unwrap().count(),
        0,
        "leftover directories"
    );
    let mut open = |_i: usize| -> Result<(Box<dyn Read + Send + '_>, Compression), String> {
        Ok((Box::new(&layer[..]), Compression::None))
    };
    let top = unpack_chain(&s, std::slice::from_ref(&id), &mut open, &opts())
        .unwrap()
        .unwrap();
    assert_eq!(top, id);
    assert_eq!(
        fs::read_dir(s.fs_dir(&id).unwrap().join("d"))
            .unwrap()
            .count(),
        200
    );
}

#[test]
fn concurrent_unpacks_of_one_image_share_the_layers() {
    let (_tmp, s) = store(Driver::Overlay);
    let layers: Vec<Vec<u8>> = (0..3)
        .map(|i| tar_of(&[(&format!("l{i}"), b"x")]))
        .collect();
    let ids: Vec<String> = layers.iter().map(|l| diff_id(l)).collect();
    let tops: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let s = Snapshotter::open(s.root(), None).unwrap();
                let (layers, ids) = (&layers, &ids);
                scope.spawn(move || {
                    let mut open =
                        |i: usize| -> Result<(Box<dyn Read + Send + '_>, Compression), String> {
                            Ok((Box::new(&layers[i][..]), Compression::None))
                        };
                    unpack_chain(&s, ids, &mut open, &opts()).unwrap().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(tops.iter().all(|t| t == &tops[0]));
    let mut all = Vec::new();
    s.walk(|i| all.push((i.name.clone(), i.kind))).unwrap();
    let chain = chain_ids(&ids);
    let mut want: Vec<_> = chain.iter().map(|c| (c.clone(), Kind::Committed)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(all, want, "one committed snapshot per layer, no leftovers");
    assert_eq!(fs::read_dir(s.root().join("snapshots")).unwrap().count(), 3);
}

#[test]
fn open_falls_back_to_copy_where_overlay_cannot_mount() {
    berth_testutil::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let [l, u, w, m] = ["l", "u", "w", "m"].map(|d| tmp.path().join(d));
    for d in [&l, &u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    // An overlayfs cannot hold another overlay's upper directory.
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &m,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .unwrap();
    let _unmount = Mounted(m.clone());
    let s = Snapshotter::open(&m.join("store"), None).unwrap();
    assert_eq!(s.driver(), Driver::Copy);
    let layer = tar_of(&[("f", b"x")]);
    let id = diff_id(&layer);
    let mut open = |_i: usize| -> Result<(Box<dyn Read + Send + '_>, Compression), String> {
        Ok((Box::new(&layer[..]), Compression::None))
    };
    let top = unpack_chain(&s, std::slice::from_ref(&id), &mut open, &opts())
        .unwrap()
        .unwrap();
    s.prepare("ctr", Some(&top)).unwrap();
    assert_eq!(fs::read(s.fs_dir("ctr").unwrap().join("f")).unwrap(), b"x");
    s.remove("ctr").unwrap();
    s.remove(&top).unwrap();
}
