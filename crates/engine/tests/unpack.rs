//! Unpacking layers into snapshots with both drivers: layer sharing,
//! diff_id failure cleanup, concurrent unpacks, crash recovery, long
//! overlay lower chains and the copy fallback.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use berth_archive::ApplyOptions;
use berth_engine::{unpack, BlobProvider};
use berth_snapshot::{chain_ids, mount_all, unmount, Driver, Kind, Snapshotter};
use oci_spec::image::{Descriptor, Digest as OciDigest, MediaType};
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

/// The descriptor of an uncompressed layer blob (its digest is its diff_id).
fn desc(tar: &[u8]) -> Descriptor {
    let digest: OciDigest = diff_id(tar).parse().unwrap();
    Descriptor::new(MediaType::ImageLayer, tar.len() as u64, digest)
}

/// Uncompressed layer blobs in memory, keyed by digest; records the digest
/// of every blob opened.
#[derive(Default)]
struct Blobs {
    blobs: HashMap<String, Vec<u8>>,
    opened: Mutex<Vec<String>>,
}

impl Blobs {
    /// Holds `layers` and returns their descriptors and diff_ids.
    fn of(layers: &[&Vec<u8>]) -> (Blobs, Vec<Descriptor>, Vec<String>) {
        let mut blobs = Blobs::default();
        let descs: Vec<Descriptor> = layers.iter().map(|l| blobs.add(l)).collect();
        let ids = layers.iter().map(|l| diff_id(l)).collect();
        (blobs, descs, ids)
    }

    fn add(&mut self, tar: &[u8]) -> Descriptor {
        self.blobs.insert(diff_id(tar), tar.to_vec());
        desc(tar)
    }

    fn opened(&self) -> Vec<String> {
        self.opened.lock().unwrap().clone()
    }
}

impl BlobProvider for Blobs {
    fn open_blob(&self, desc: &Descriptor) -> std::io::Result<Box<dyn Read + Send + '_>> {
        let digest = desc.digest().to_string();
        self.opened.lock().unwrap().push(digest.clone());
        let blob = self.blobs.get(&digest).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no blob {digest}"))
        })?;
        Ok(Box::new(&blob[..]))
    }
}

/// The layer blob is this process's stdin (for the kill -9 child).
struct Stdin;

impl BlobProvider for Stdin {
    fn open_blob(&self, _desc: &Descriptor) -> std::io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(std::io::stdin()))
    }
}

fn store(driver: Driver) -> (tempfile::TempDir, Snapshotter) {
    berth_testutil::require_root();
    let dir = tempfile::Builder::new()
        .prefix("berth-unpack-")
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

#[test]
fn shared_layers_are_unpacked_once() {
    for driver in [Driver::Overlay, Driver::Copy] {
        let (tmp, s) = store(driver);
        let base = tar_of(&[("etc/os", b"debian")]);
        let app1 = tar_of(&[("app/one", b"1")]);
        let app2 = tar_of(&[("app/two", b"2"), (".wh.etc", b"")]);
        let (blobs, _, _) = Blobs::of(&[&base, &app1, &app2]);
        let unpack_image = |layers: Vec<&Vec<u8>>| {
            let descs: Vec<Descriptor> = layers.iter().map(|l| desc(l)).collect();
            let ids: Vec<String> = layers.iter().map(|l| diff_id(l)).collect();
            unpack(&s, &blobs, &descs, &ids, &opts()).unwrap().unwrap()
        };
        let top1 = unpack_image(vec![&base, &app1]);
        let top2 = unpack_image(vec![&base, &app2]);
        assert_eq!(
            blobs.opened().len(),
            3,
            "base opened once: {:?}",
            blobs.opened()
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
    let (blobs, descs, _) = Blobs::of(&[&layer]);
    let wrong = format!("sha256:{}", "1".repeat(64));
    let e = unpack(&s, &blobs, &descs, std::slice::from_ref(&wrong), &opts()).unwrap_err();
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
    let (blobs, descs, ids) = Blobs::of(&layers.iter().collect::<Vec<_>>());
    let top = unpack(&s, &blobs, &descs, &ids, &opts()).unwrap().unwrap();
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
    let Ok(root) = std::env::var("BERTH_UNPACK_KILL9_ROOT") else {
        return;
    };
    let id = std::env::var("BERTH_UNPACK_KILL9_DIFF").unwrap();
    let size: u64 = std::env::var("BERTH_UNPACK_KILL9_SIZE")
        .unwrap()
        .parse()
        .unwrap();
    let s = Snapshotter::open(Path::new(&root), Some(Driver::Overlay)).unwrap();
    let layer = Descriptor::new(
        MediaType::ImageLayer,
        size,
        id.parse::<OciDigest>().unwrap(),
    );
    let _ = unpack(
        &s,
        &Stdin,
        &[layer],
        &[id],
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
    // The child is this test binary running only the test above.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill9_child_unpacks_from_stdin",
            "--exact",
            "--test-threads=1",
        ])
        .env("BERTH_UNPACK_KILL9_ROOT", s.root())
        .env("BERTH_UNPACK_KILL9_DIFF", &id)
        .env("BERTH_UNPACK_KILL9_SIZE", layer.len().to_string())
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
    let (blobs, descs, _) = Blobs::of(&[&layer]);
    let top = unpack(&s, &blobs, &descs, std::slice::from_ref(&id), &opts())
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
    let (blobs, descs, ids) = Blobs::of(&layers.iter().collect::<Vec<_>>());
    let tops: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let s = Snapshotter::open(s.root(), None).unwrap();
                let (blobs, descs, ids) = (&blobs, &descs, &ids);
                scope.spawn(move || unpack(&s, blobs, descs, ids, &opts()).unwrap().unwrap())
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
    let (blobs, descs, ids) = Blobs::of(&[&layer]);
    let top = unpack(&s, &blobs, &descs, &ids, &opts()).unwrap().unwrap();
    s.prepare("ctr", Some(&top)).unwrap();
    assert_eq!(fs::read(s.fs_dir("ctr").unwrap().join("f")).unwrap(), b"x");
    s.remove("ctr").unwrap();
    s.remove(&top).unwrap();
}
