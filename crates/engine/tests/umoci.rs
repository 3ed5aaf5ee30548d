//! A multi-layer image with whiteouts, opaque directories, hardlinks,
//! symlinks, xattrs, setuid files and a FIFO gives the same tree with berth
//! (plain-copy store, and overlay store mounted) as with `umoci unpack`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use berth_archive::{fsops, ApplyOptions};
use berth_engine::{unpack, BlobProvider};
use berth_snapshot::{mount_all, unmount, Driver, Snapshotter};
use oci_spec::image::{Descriptor, MediaType};
use sha2::{Digest, Sha256};

/// Layer blobs in memory, keyed by digest.
struct Blobs(HashMap<String, Vec<u8>>);

impl BlobProvider for Blobs {
    fn open_blob(&self, desc: &Descriptor) -> std::io::Result<Box<dyn Read + Send + '_>> {
        let digest = desc.digest().to_string();
        let blob = self.0.get(&digest).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no blob {digest}"))
        })?;
        Ok(Box::new(&blob[..]))
    }
}

struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_650_000_000);
        h.set_size(0);
        h
    }
    fn dir(&mut self, p: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0, 0);
        self.b.append_data(&mut h, p, &[][..]).unwrap();
        self
    }
    fn file(&mut self, p: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, p, data).unwrap();
        self
    }
    fn xattr_file(&mut self, p: &str, data: &[u8], key: &str, value: &[u8]) -> &mut Self {
        let k = format!("SCHILY.xattr.{key}");
        self.b.append_pax_extensions([(k.as_str(), value)]).unwrap();
        self.file(p, data, 0o644, 0, 0)
    }
    fn symlink(&mut self, p: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    fn hardlink(&mut self, p: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0, 0);
        self.b.append_link(&mut h, p, target).unwrap();
        self
    }
    fn fifo(&mut self, p: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Fifo, 0o640, 0, 0);
        self.b.append_data(&mut h, p, &[][..]).unwrap();
        self
    }
    fn whiteout(&mut self, p: &str) -> &mut Self {
        self.file(p, b"", 0o644, 0, 0)
    }
    fn finish(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

fn layers() -> Vec<Vec<u8>> {
    let mut l1 = Layer::new();
    l1.dir("etc", 0o755)
        .xattr_file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\n",
            "user.origin",
            b"l1",
        )
        .file("etc/group", b"root:x:0:\n", 0o644, 0, 0)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"tool v1", 0o755, 0, 0)
        .file("usr/bin/su", b"setuid", 0o4755, 0, 0)
        .file("usr/bin/wall", b"setgid", 0o2755, 0, 5)
        .hardlink("usr/bin/tool-hl", "usr/bin/tool")
        .symlink("usr/bin/link", "tool")
        .symlink("abs", "/etc/passwd")
        .dir("home", 0o755)
        .dir("home/u", 0o700)
        .file("home/u/secret", b"s", 0o600, 1000, 1000)
        .dir("opt", 0o755)
        .dir("opt/data", 0o755)
        .file("opt/data/a", b"a", 0o644, 0, 0)
        .dir("opt/data/sub", 0o755)
        .file("opt/data/sub/b", b"b", 0o644, 0, 0)
        .dir("old", 0o755)
        .file("old/x", b"x", 0o644, 0, 0)
        .dir("run", 0o755)
        .fifo("run/pipe")
        .dir("tmp", 0o1777);
    let mut l2 = Layer::new();
    l2.dir("etc", 0o755)
        .whiteout("etc/.wh.group")
        .whiteout(".wh.old")
        .dir("opt", 0o755)
        .dir("opt/data", 0o750)
        .file("opt/data/new", b"new", 0o644, 0, 0)
        .whiteout("opt/data/.wh..wh..opq")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"tool v2", 0o755, 0, 0)
        .dir("srv", 0o2775)
        .file("srv/f", b"srv", 0o664, 33, 33);
    let mut l3 = Layer::new();
    l3.dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .symlink("usr/bin/link", "su")
        .dir("bin2", 0o755)
        .file("bin2/a", b"same inode", 0o700, 2, 2)
        .hardlink("bin2/b", "bin2/a")
        .dir("var", 0o755)
        .dir("var/log", 0o755)
        .xattr_file("var/log/f", b"log", "user.level", b"debug")
        .dir("etc", 0o755)
        .whiteout("etc/.wh.passwd")
        .file("etc/passwd", b"root:x:0:0::/root:/bin/bash\n", 0o644, 0, 0);
    vec![l1.finish(), l2.finish(), l3.finish()]
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI image layout with tag `t` holding `layers` (gzip) and returns the blobs.
fn write_layout(dir: &Path, layers: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha(b);
        fs::write(blobs.join(&d), b).unwrap();
        format!("sha256:{d}")
    };
    let gz: Vec<Vec<u8>> = layers.iter().map(|l| gzip(l)).collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let layer_descs: Vec<_> = gz
        .iter()
        .map(|g| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(g), "size": g.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "t"}}],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    gz
}

/// Everything a user could observe about a tree, except directory times.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut HashMap<u64, String>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let mut xattrs: Vec<String> = fsops::llist_xattrs(&p)
            .unwrap()
            .into_iter()
            .filter(|k| !k.starts_with(b"trusted.overlay.") && !k.starts_with(b"security.selinux"))
            .map(|k| {
                let v = fsops::lget_xattr(&p, &k).unwrap();
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                )
            })
            .collect();
        xattrs.sort();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink->{}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            // Hardlink groups by inode identity within the tree (an overlay
            // reports a hidden lower link in nlink, so nlink is not compared).
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
            format!(
                "file sha={} mtime={} inode-of={first}",
                &sha(&fs::read(&p).unwrap())[..12],
                m.mtime()
            )
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else if ft.is_char_device() {
            format!("chardev {}", m.rdev())
        } else {
            "other".to_string()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{what} mode={mode:o} owner={}:{} xattrs={xattrs:?}",
                m.uid(),
                m.gid()
            ),
        );
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

fn assert_same(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>, what: &str) {
    for (k, v) in theirs {
        assert_eq!(ours.get(k), Some(v), "{what}: {k} differs from umoci");
    }
    for k in ours.keys() {
        assert!(
            theirs.contains_key(k),
            "{what}: {k} exists in berth's tree but not umoci's"
        );
    }
}

#[test]
fn multi_layer_image_matches_umoci_unpack() {
    berth_testutil::require_root();
    let umoci = berth_testutil::require_peer("umoci");
    let tmp = tempfile::Builder::new()
        .prefix("berth-umoci-")
        .tempdir()
        .unwrap();
    let layout = tmp.path().join("layout");
    let layers = layers();
    let gz = write_layout(&layout, &layers);
    let bundle = tmp.path().join("bundle");
    let out = Command::new(umoci)
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = describe(&bundle.join("rootfs"));
    assert!(
        theirs.contains_key("usr/bin/su") && !theirs.contains_key("old"),
        "{theirs:#?}"
    );
    // The comparison only means something if umoci kept these properties.
    assert!(theirs["var/log/f"].contains("user.level"), "{theirs:#?}");
    assert!(theirs["bin2/b"].contains("inode-of=bin2/a"), "{theirs:#?}");
    assert!(theirs["usr/bin/su"].contains("mode=4755"), "{theirs:#?}");
    assert!(theirs["opt/data/new"].starts_with("file") && !theirs.contains_key("opt/data/a"));

    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    let descs: Vec<Descriptor> = gz
        .iter()
        .map(|g| {
            let digest: oci_spec::image::Digest = format!("sha256:{}", sha(g)).parse().unwrap();
            Descriptor::new(MediaType::ImageLayerGzip, g.len() as u64, digest)
        })
        .collect();
    let blobs = Blobs(
        descs
            .iter()
            .zip(&gz)
            .map(|(d, g)| (d.digest().to_string(), g.clone()))
            .collect(),
    );
    for driver in [Driver::Copy, Driver::Overlay] {
        let s =
            Snapshotter::open(&tmp.path().join(format!("store-{driver:?}")), Some(driver)).unwrap();
        let opts = ApplyOptions {
            skip_devices: false,
            ..ApplyOptions::default()
        };
        let top = unpack(&s, &blobs, &descs, &diff_ids, &opts)
            .unwrap()
            .unwrap();
        let ours = match driver {
            Driver::Copy => describe(&s.fs_dir(&top).unwrap()),
            Driver::Overlay => {
                s.view("check", Some(&top)).unwrap();
                let mnt = tmp.path().join("mnt");
                fs::create_dir_all(&mnt).unwrap();
                mount_all(&s.mounts("check").unwrap(), &mnt).unwrap();
                let d = describe(&mnt);
                unmount(&mnt).unwrap();
                d
            }
        };
        assert_same(&ours, &theirs, &format!("{driver:?}"));
    }
}
