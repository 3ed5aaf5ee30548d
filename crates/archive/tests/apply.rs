//! Behaviour of `apply_layer` on real directories: entry kinds, metadata,
//! whiteouts in both modes, digests, and a hostile-archive suite.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_archive::{
    apply_layer, fsops, Applied, ApplyError, ApplyOptions, Compression, WhiteoutMode,
};
use sha2::{Digest, Sha256};

/// Builds tar streams entry by entry, including malformed ones.
struct Tar {
    buf: Vec<u8>,
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ' '=' '\n'
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl Tar {
    fn new() -> Tar {
        Tar { buf: Vec::new() }
    }

    fn raw(
        &mut self,
        name: &[u8],
        kind: u8,
        data: &[u8],
        link: &[u8],
        mode: u32,
        size_field: Option<u64>,
    ) {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size_field.unwrap_or(data.len() as u64));
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        self.raw(b"PaxHeader", b'x', &data, b"", 0o644, None);
    }

    fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Tar {
        self.raw(name.as_bytes(), b'0', data, b"", mode, None);
        self
    }

    fn file_owned(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Tar {
        self.pax(&[
            ("uid", uid.to_string().as_bytes()),
            ("gid", gid.to_string().as_bytes()),
        ]);
        self.file(name, data, mode)
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Tar {
        self.raw(name.as_bytes(), b'5', b"", b"", mode, None);
        self
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(name.as_bytes(), b'2', b"", target.as_bytes(), 0o777, None);
        self
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(name.as_bytes(), b'1', b"", target.as_bytes(), 0o644, None);
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        b.extend(std::iter::repeat_n(0u8, 1024));
        b
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A sandbox: `root` is the layer target, `outside` a sibling that must stay empty.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        berth_testutil::require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-archive-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        Sandbox { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    fn apply(&self, tar: &[u8], opts: &ApplyOptions) -> Result<Applied, ApplyError> {
        apply_layer(tar, Compression::None, &self.root(), opts)
    }
    fn assert_outside_untouched(&self) {
        let n = fs::read_dir(self.outside()).unwrap().count();
        assert_eq!(n, 0, "something was written outside the layer root");
        let names: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "unexpected files next to the root: {names:?}"
        );
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        skip_devices: false,
        ..ApplyOptions::default()
    }
}

#[test]
fn applies_every_entry_kind_with_metadata() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("etc/", 0o755);
    t.file_owned("etc/conf", b"hello", 0o640, 1000, 1001);
    t.file_owned("bin/su", b"#!suid", 0o4755, 0, 0);
    t.symlink("etc/link", "/etc/conf");
    t.hardlink("etc/hard", "etc/conf");
    t.pax(&[
        ("SCHILY.xattr.user.color", b"blue"),
        ("mtime", b"1500000000.25"),
    ]);
    t.file("etc/xattr", b"x", 0o600);
    t.raw(b"dev/null", b'3', b"", b"", 0o666, None);
    t.raw(b"run/fifo", b'6', b"", b"", 0o644, None);
    t.dir("ro/", 0o555);
    let tar = t.finish();
    let applied = apply_layer(&gzip(&tar)[..], Compression::Gzip, &sb.root(), &opts()).unwrap();
    assert_eq!(applied.diff_id, sha(&tar));
    assert_eq!(applied.size, tar.len() as u64);
    let r = sb.root();
    assert_eq!(fs::read(r.join("etc/conf")).unwrap(), b"hello");
    let m = fs::symlink_metadata(r.join("etc/conf")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(m.nlink(), 2, "hardlink shares the inode");
    assert_eq!(
        fs::symlink_metadata(r.join("etc/hard")).unwrap().ino(),
        m.ino()
    );
    let su = fs::metadata(r.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!(
        fs::read_link(r.join("etc/link")).unwrap(),
        Path::new("/etc/conf")
    );
    assert_eq!(
        fsops::lget_xattr(&r.join("etc/xattr"), b"user.color").unwrap(),
        b"blue"
    );
    let x = fs::metadata(r.join("etc/xattr")).unwrap();
    assert_eq!((x.mtime(), x.mtime_nsec()), (1_500_000_000, 250_000_000));
    assert!(fs::symlink_metadata(r.join("dev/null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(fs::symlink_metadata(r.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let ro = fs::metadata(r.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_600_000_000, "directory times are set last");
    assert_eq!(fs::metadata(r.join("etc")).unwrap().mtime(), 1_600_000_000);
    sb.assert_outside_untouched();
}

#[test]
fn devices_are_skipped_when_asked() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.raw(b"dev/null", b'3', b"", b"", 0o666, None);
    t.raw(b"fifo", b'6', b"", b"", 0o644, None);
    t.file("dev/keep", b"k", 0o644);
    let o = ApplyOptions {
        skip_devices: true,
        ..opts()
    };
    sb.apply(&t.finish(), &o).unwrap();
    assert!(!sb.root().join("dev/null").exists());
    assert!(fs::symlink_metadata(sb.root().join("fifo")).is_err());
    assert!(sb.root().join("dev/keep").exists());
}

#[test]
fn zstd_gzip_and_plain_give_the_same_tree_and_diff_id() {
    let mut t = Tar::new();
    t.dir("a/", 0o755).file("a/b", b"bee", 0o644);
    let tar = t.finish();
    let z = zstd::encode_all(&tar[..], 3).unwrap();
    for (blob, c) in [
        (tar.clone(), Compression::None),
        (gzip(&tar), Compression::Gzip),
        (z, Compression::Zstd),
    ] {
        let sb = Sandbox::new();
        let a = apply_layer(&blob[..], c, &sb.root(), &opts()).unwrap();
        assert_eq!(a.diff_id, sha(&tar), "{c:?}");
        assert_eq!(fs::read(sb.root().join("a/b")).unwrap(), b"bee");
    }
}

#[test]
fn whiteouts_remove_lower_files_but_not_this_layers() {
    let sb = Sandbox::new();
    let mut l1 = Tar::new();
    l1.dir("d/", 0o755)
        .file("d/old", b"1", 0o644)
        .file("d/keep", b"k", 0o644)
        .dir("gone/", 0o755)
        .file("gone/x", b"x", 0o644);
    sb.apply(&l1.finish(), &opts()).unwrap();
    let mut l2 = Tar::new();
    l2.file("d/new", b"n", 0o644);
    l2.file("d/.wh.old", b"", 0o644);
    l2.file("d/.wh.new", b"", 0o644); // same layer: must not delete d/new
    l2.file(".wh.gone", b"", 0o644);
    l2.dir(".wh..wh.plnk/", 0o700); // aufs bookkeeping: ignored
    l2.file(".wh..wh.aufs", b"aufs xino data", 0o644);
    l2.file("d/.wh.keep-not", b"marker with data", 0o644);
    l2.file("d/after", b"a", 0o644); // parsed correctly after markers with data
    sb.apply(&l2.finish(), &opts()).unwrap();
    let r = sb.root();
    assert!(!r.join("d/old").exists());
    assert!(r.join("d/keep").exists());
    assert_eq!(fs::read(r.join("d/new")).unwrap(), b"n");
    assert_eq!(fs::read(r.join("d/after")).unwrap(), b"a");
    assert!(!r.join("gone").exists());
    assert!(
        !r.join("d/.wh.old").exists(),
        "whiteout markers are not files"
    );
}

#[test]
fn opaque_marker_clears_lower_content_wherever_it_appears() {
    let sb = Sandbox::new();
    let mut l1 = Tar::new();
    l1.dir("o/", 0o755)
        .file("o/lower", b"l", 0o644)
        .dir("o/sub/", 0o755)
        .file("o/sub/deep", b"d", 0o644);
    sb.apply(&l1.finish(), &opts()).unwrap();
    let mut l2 = Tar::new();
    l2.dir("o/", 0o750).file("o/upper", b"u", 0o644);
    l2.file("o/.wh..wh..opq", b"", 0o644); // after this layer's own file
    sb.apply(&l2.finish(), &opts()).unwrap();
    let names: Vec<_> = fs::read_dir(sb.root().join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("upper")]);
    assert_eq!(
        fs::metadata(sb.root().join("o")).unwrap().mode() & 0o777,
        0o750
    );
}

#[test]
fn overlay_mode_writes_overlay_whiteouts_and_opaque_xattr() {
    let sb = Sandbox::new();
    let lower = sb.dir.path().join("lower");
    fs::create_dir_all(lower.join("usr/share")).unwrap();
    fs::set_permissions(lower.join("usr"), fs::Permissions::from_mode(0o711)).unwrap();
    let mut t = Tar::new();
    t.file("usr/share/.wh.doc", b"", 0o644);
    t.file("opq/.wh..wh..opq", b"", 0o644);
    t.file("opq/f", b"f", 0o644);
    t.pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")]);
    t.dir("forged/", 0o755);
    let o = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        lowers: vec![lower.clone()],
        ..opts()
    };
    sb.apply(&t.finish(), &o).unwrap();
    let r = sb.root();
    let wh = fs::symlink_metadata(r.join("usr/share/doc")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        fs::metadata(r.join("usr")).unwrap().mode() & 0o777,
        0o711,
        "implied parent copies the lower's mode"
    );
    assert_eq!(
        fsops::lget_xattr(&r.join("opq"), b"trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert_eq!(fs::read(r.join("opq/f")).unwrap(), b"f");
    assert!(
        fsops::lget_xattr(&r.join("forged"), b"trusted.overlay.opaque").is_err(),
        "overlay xattrs from the archive are dropped"
    );
}

#[test]
fn parallel_and_inline_writers_agree_on_overwrites_and_links() {
    let mut t = Tar::new();
    t.dir("p/", 0o755);
    for i in 0..300 {
        t.file(&format!("p/f{i}"), format!("v1-{i}").as_bytes(), 0o644);
    }
    for i in (0..300).step_by(7) {
        t.file(&format!("p/f{i}"), format!("v2-{i}").as_bytes(), 0o600);
        t.hardlink(&format!("p/h{i}"), &format!("p/f{i}"));
    }
    t.symlink("p/f3", "f4");
    let big = vec![7u8; 3 << 20];
    t.file("p/big", &big, 0o644);
    let tar = t.finish();
    for threads in [0, 4] {
        let sb = Sandbox::new();
        sb.apply(
            &tar,
            &ApplyOptions {
                threads,
                pool_above_create_ns: 0,
                ..opts()
            },
        )
        .unwrap();
        let r = sb.root().join("p");
        for i in 0..300 {
            let f = r.join(format!("f{i}"));
            if i == 3 {
                assert_eq!(fs::read_link(&f).unwrap(), Path::new("f4"));
            } else if i % 7 == 0 {
                assert_eq!(
                    fs::read(&f).unwrap(),
                    format!("v2-{i}").as_bytes(),
                    "threads={threads}"
                );
                let h = fs::metadata(r.join(format!("h{i}"))).unwrap();
                assert_eq!(h.ino(), fs::metadata(&f).unwrap().ino());
                assert_eq!(h.mode() & 0o777, 0o600);
            } else {
                assert_eq!(
                    fs::read(&f).unwrap(),
                    format!("v1-{i}").as_bytes(),
                    "threads={threads}"
                );
            }
        }
        assert_eq!(fs::read(r.join("big")).unwrap(), big);
    }
}

/// Everything a user can see of a tree: per path (sorted) the type, owner,
/// mode, mtime, content or link target, user xattrs, and which earlier
/// path it shares an inode with.
fn tree_snapshot(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, inodes: &mut Vec<(u64, String)>, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let p = dir.join(&name);
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(&p).unwrap().display())
            } else {
                format!("file sha {}", sha(&fs::read(&p).unwrap()))
            };
            let link = if m.is_file() && m.nlink() > 1 {
                match inodes.iter().find(|(ino, _)| *ino == m.ino()) {
                    Some((_, first)) => format!(" same inode as {first}"),
                    None => {
                        inodes.push((m.ino(), rel.clone()));
                        String::new()
                    }
                }
            } else {
                String::new()
            };
            let xattr = fsops::lget_xattr(&p, b"user.k")
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            out.push(format!(
                "{rel}: {what}{link} owner {}:{} mode {:o} mtime {}.{} xattr {xattr:?}",
                m.uid(),
                m.gid(),
                m.mode() & 0o7777,
                m.mtime(),
                m.mtime_nsec(),
            ));
            if m.is_dir() {
                walk(root, &p, inodes, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut Vec::new(), &mut out);
    out
}

#[test]
fn the_writer_pool_gives_the_same_tree_as_one_writer() {
    // A rootfs-like layer: directories of many small files with varied
    // owners, modes (setuid, read-only, none), times and xattrs, hardlinks
    // within and across directories, symlinks, files replaced later in the
    // stream, and files too big for the pool.
    let mut t = Tar::new();
    t.dir("usr/", 0o755);
    for d in 0..12 {
        t.pax(&[("mtime", format!("1500000{d:03}.5").as_bytes())]);
        t.dir(&format!("usr/d{d}/"), [0o755, 0o700, 0o2775][d % 3]);
        for f in 0..60 {
            let i = d * 60 + f;
            let mode = [0o644, 0o755, 0o4755, 0o444, 0o600, 0o000, 0o2711][i % 7];
            let mut pax = vec![
                ("uid".to_string(), (i % 5 * 1000).to_string().into_bytes()),
                ("gid".to_string(), (i % 3 * 1000).to_string().into_bytes()),
                (
                    "mtime".to_string(),
                    format!("{}.{:09}", 1_600_000_000 + i, i * 7).into_bytes(),
                ),
            ];
            if i % 11 == 0 {
                pax.push((
                    "SCHILY.xattr.user.k".to_string(),
                    format!("v{i}").into_bytes(),
                ));
            }
            let pax: Vec<(&str, &[u8])> = pax.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
            t.pax(&pax);
            let size = [0, 1, 100, 4096, 70_000][i % 5] + i;
            let data: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
            t.file(&format!("usr/d{d}/f{f}"), &data, mode);
            if i % 13 == 0 {
                t.hardlink(&format!("usr/d{d}/h{f}"), &format!("usr/d{d}/f{f}"));
                t.hardlink(&format!("usr/x{i}"), &format!("usr/d{d}/f{f}"));
            }
            if i % 17 == 0 {
                t.symlink(&format!("usr/d{d}/s{f}"), &format!("f{f}"));
            }
        }
        // Replaced after the pool may have been handed the first version.
        t.file(
            &format!("usr/d{d}/f3"),
            format!("again {d}").as_bytes(),
            0o640,
        );
        t.file(
            &format!("usr/d{d}/big"),
            &vec![d as u8; (1 << 20) + 1],
            0o644,
        );
    }
    let tar = t.finish();
    let run = |threads: usize, pool_above_create_ns: u64| {
        let sb = Sandbox::new();
        let applied = sb
            .apply(
                &tar,
                &ApplyOptions {
                    threads,
                    pool_above_create_ns,
                    ..opts()
                },
            )
            .unwrap();
        sb.assert_outside_untouched();
        (tree_snapshot(&sb.root()), applied.writers)
    };
    let (serial, writers) = run(0, 0);
    assert_eq!(writers, 0, "threads: 0 starts no writer");
    assert!(serial.len() > 12 * 60, "{} entries", serial.len());
    assert!(serial
        .iter()
        .any(|l| l.starts_with("usr/d0/f2: ") && l.contains("mode 4755")));
    let same = |other: &[String], how: &str| {
        let diff: Vec<_> = serial
            .iter()
            .zip(other)
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        assert!(
            diff.is_empty() && serial.len() == other.len(),
            "{how}: {} entries against {} serially; first differences (serial, {how}): {diff:#?}",
            other.len(),
            serial.len()
        );
    };
    let (pooled, writers) = run(4, 0);
    assert!(
        (1..=4).contains(&writers),
        "pool forced on: 1 to 4 writers, got {writers}"
    );
    same(&pooled, "pool forced on");
    let (adaptive, _) = run(4, u64::MAX);
    same(&adaptive, "pool only while the parser is behind");
    let (default, _) = run(ApplyOptions::default().threads, opts().pool_above_create_ns);
    same(&default, "defaults");
}

// ---- errors a user sees ----

#[test]
fn wrong_diff_id_is_a_clear_error() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.file("a", b"a", 0o644);
    let want = format!("sha256:{}", "0".repeat(64));
    let o = ApplyOptions {
        expected_diff_id: Some(want.clone()),
        ..opts()
    };
    let e = sb.apply(&t.finish(), &o).unwrap_err();
    assert!(matches!(e, ApplyError::DiffIdMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&want) && msg.contains("diff_id"), "{msg}");
}

#[test]
fn truncated_blobs_are_clear_errors() {
    let mut t = Tar::new();
    t.file("big", &vec![1u8; 100_000], 0o644);
    let tar = t.finish();
    let sb = Sandbox::new();
    let e = sb.apply(&tar[..50_000], &opts()).unwrap_err();
    assert!(matches!(e, ApplyError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("\"big\""), "{e}");
    let gz = gzip(&tar);
    let sb = Sandbox::new();
    let e = apply_layer(&gz[..gz.len() / 2], Compression::Gzip, &sb.root(), &opts()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

// ---- hostile archives: one per class; nothing may land outside the root ----

fn assert_refused(sb: &Sandbox, tar: &[u8], entry: &str, what: &str) {
    let e = sb.apply(tar, &opts()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(entry), "error should name {entry:?}: {msg}");
    assert!(msg.contains(what), "error should say {what:?}: {msg}");
    sb.assert_outside_untouched();
}

#[test]
fn hostile_dotdot_name_is_refused() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.file("../outside/pwned", b"x", 0o644);
    assert_refused(&sb, &t.finish(), "../outside/pwned", "'..'");
}

#[test]
fn hostile_absolute_name_lands_inside_the_root() {
    // GNU tar, containerd and podman take a leading "/" off; umoci writes
    // the layer root itself as "/".
    let sb = Sandbox::new();
    let target = format!("{}/pwned", sb.outside().display());
    let mut t = Tar::new();
    t.dir("/", 0o750);
    t.file(&target, b"x", 0o644);
    sb.apply(&t.finish(), &opts()).unwrap();
    let inside = sb.root().join(target.trim_start_matches('/'));
    assert_eq!(fs::read(&inside).unwrap(), b"x");
    let mode = fs::metadata(sb.root()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750, "the \"/\" entry is the layer root");
    sb.assert_outside_untouched();
}

#[test]
fn hostile_root_symlink_is_refused() {
    // "." or "/." as a symlink would turn the root itself into a link out.
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.symlink("./", "/.");
    assert_refused(&sb, &t.finish(), "./", "layer root");
}

#[test]
fn hostile_symlink_parent_is_resolved_inside_the_root() {
    let sb = Sandbox::new();
    let out = sb.outside();
    let mut t = Tar::new();
    t.symlink("up", "/.");
    t.symlink("esc", &out.display().to_string());
    t.symlink("rel", "../../../../../../../..");
    t.file("up/etc-file", b"in", 0o644);
    t.dir("esc/", 0o755); // replaces the symlink, is not followed
    t.file("esc/f", b"in", 0o644);
    t.file("rel/g", b"in", 0o644);
    sb.apply(&t.finish(), &opts()).unwrap();
    let r = sb.root();
    assert_eq!(fs::read(r.join("etc-file")).unwrap(), b"in");
    assert!(fs::symlink_metadata(r.join("esc")).unwrap().is_dir());
    assert_eq!(fs::read(r.join("g")).unwrap(), b"in");
    sb.assert_outside_untouched();
}

/// An entry under a symlink whose target, resolved inside the root, does not
/// exist is refused naming the link (was "open parent directory failed: No
/// such file or directory", which hid the symlink).
#[test]
fn an_entry_under_a_symlink_leading_nowhere_names_the_link() {
    let sb = Sandbox::new();
    let out = sb.outside();
    let target = format!("{}/sub", out.display());
    for (name, link) in [("esc", target.as_str()), ("rel", "../../missing")] {
        let mut t = Tar::new();
        t.symlink(name, link);
        t.file(&format!("{name}/f"), b"in", 0o644);
        let e = sb.apply(&t.finish(), &opts()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{name}/f"))
                && e.contains(&format!("{name:?} is a symlink to {link:?}"))
                && e.contains("inside the image's root"),
            "{e}"
        );
        sb.assert_outside_untouched();
    }
}

#[test]
fn hostile_hardlink_out_of_root_is_refused() {
    let host_file = tempfile::NamedTempFile::new().unwrap();
    for target in [
        "../outside/x".to_string(),
        host_file.path().display().to_string(),
    ] {
        let sb = Sandbox::new();
        let mut t = Tar::new();
        t.hardlink("h", &target);
        assert_refused(&sb, &t.finish(), "\"h\"", "hardlink target");
    }
    // Through a symlink: resolved inside the root, where it does not exist.
    let sb = Sandbox::new();
    fs::write(sb.outside().join("secret"), b"s").unwrap();
    let mut t = Tar::new();
    t.symlink("l", &sb.outside().display().to_string());
    t.hardlink("h", "l/secret");
    let e = sb.apply(&t.finish(), &opts()).unwrap_err();
    assert!(
        e.to_string().contains("hardlink target \"l/secret\"")
            && e.to_string().contains("layer root"),
        "{e}"
    );
    assert_eq!(
        fs::metadata(sb.outside().join("secret")).unwrap().nlink(),
        1
    );
}

#[test]
fn hostile_pax_size_desync_is_refused() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.pax(&[("size", b"0")]);
    // The header says 1024 bytes of data, which hide a second header.
    let mut inner = Tar::new();
    inner.file("smuggled", b"x", 0o644);
    let hidden = inner.finish();
    t.raw(b"innocent", b'0', &hidden[..1024], b"", 0o644, None);
    assert_refused(&sb, &t.finish(), "innocent", "PAX size");
    assert!(!sb.root().join("smuggled").exists());
}

#[test]
fn hostile_sizes_at_the_top_of_u64_are_refused() {
    let sb = Sandbox::new();
    // In the header (base-256) and in a PAX record beside a zeroed header.
    let mut t = Tar::new();
    t.raw(b"huge", b'0', b"", b"", 0o644, Some(u64::MAX));
    assert_refused(&sb, &t.finish(), "huge", "size");
    let mut t = Tar::new();
    t.pax(&[("size", b"18446744073709551615")]);
    t.raw(b"paxhuge", b'0', b"", b"", 0o644, Some(0));
    assert_refused(&sb, &t.finish(), "paxhuge", "size");
}

#[test]
fn hostile_data_on_a_symlink_is_refused() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.raw(b"s", b'2', &[0u8; 512], b"t", 0o777, None);
    assert_refused(&sb, &t.finish(), "\"s\"", "non-zero size");
}

#[test]
fn hostile_decompression_bomb_is_refused() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.file("zeros", &vec![0u8; 64 << 20], 0o644);
    let gz = gzip(&t.finish());
    let o = ApplyOptions {
        max_ratio: 100,
        ..opts()
    };
    let e = apply_layer(&gz[..], Compression::Gzip, &sb.root(), &o).unwrap_err();
    assert!(matches!(e, ApplyError::Bomb { .. }), "{e}");
    assert!(e.to_string().contains("zeros"), "{e}");
    let o = ApplyOptions {
        max_size: 1 << 20,
        ..opts()
    };
    let e = apply_layer(&gz[..], Compression::Gzip, &sb.root(), &o).unwrap_err();
    assert!(e.to_string().contains("size limit"), "{e}");
    sb.assert_outside_untouched();
}

#[test]
fn overlay_hardlink_to_a_lower_file_copies_it_up() {
    let sb = Sandbox::new();
    let lower = sb.dir.path().join("lower");
    let hidden = sb.dir.path().join("hidden");
    fs::create_dir_all(lower.join("bin")).unwrap();
    fs::create_dir_all(&hidden).unwrap();
    fs::write(lower.join("bin/tool"), b"tool").unwrap();
    fs::set_permissions(lower.join("bin/tool"), fs::Permissions::from_mode(0o4711)).unwrap();
    fsops::lset_xattr(&lower.join("bin/tool"), b"user.k", b"v").unwrap();
    // `gone` exists in a deeper lower but a higher one whites it out.
    fs::write(hidden.join("gone"), b"x").unwrap();
    nix::sys::stat::mknod(
        &lower.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let o = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        lowers: vec![lower.clone(), hidden.clone()],
        ..opts()
    };
    let mut t = Tar::new();
    t.hardlink("bin/alias", "bin/tool");
    sb.apply(&t.finish(), &o).unwrap();
    let r = sb.root();
    let tool = fs::metadata(r.join("bin/tool")).unwrap();
    assert_eq!(fs::read(r.join("bin/tool")).unwrap(), b"tool");
    assert_eq!(tool.mode() & 0o7777, 0o4711);
    assert_eq!(fs::metadata(r.join("bin/alias")).unwrap().ino(), tool.ino());
    assert_eq!(
        fsops::lget_xattr(&r.join("bin/tool"), b"user.k").unwrap(),
        b"v"
    );
    let mut t = Tar::new();
    t.hardlink("again", "gone");
    let e = sb.apply(&t.finish(), &o).unwrap_err();
    assert!(e.to_string().contains("\"gone\" does not exist"), "{e}");
}

/// Child half of `devices_and_fifos_are_skipped_in_a_user_namespace`: runs in
/// a new user namespace and applies a layer with default options. Does
/// nothing when run as a normal test.
#[test]
fn userns_child_applies_with_defaults() {
    let Ok(root) = std::env::var("BERTH_ARCHIVE_USERNS_ROOT") else {
        return;
    };
    assert!(
        fsops::in_user_namespace(),
        "the child should run in a user namespace"
    );
    let mut t = Tar::new();
    t.raw(b"dev/null", b'3', b"", b"", 0o666, None);
    t.raw(b"fifo", b'6', b"", b"", 0o644, None);
    t.file("file", b"f", 0o644);
    apply_layer(
        &t.finish()[..],
        Compression::None,
        Path::new(&root),
        &ApplyOptions::default(),
    )
    .unwrap();
}

#[test]
fn devices_and_fifos_are_skipped_in_a_user_namespace() {
    let sb = Sandbox::new();
    let unshare = berth_testutil::require_peer("unshare");
    let out = std::process::Command::new(unshare)
        .args(["--user", "--map-root-user"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "userns_child_applies_with_defaults",
            "--exact",
            "--test-threads=1",
        ])
        .env("BERTH_ARCHIVE_USERNS_ROOT", sb.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(sb.root().join("file")).unwrap(), b"f");
    assert!(fs::symlink_metadata(sb.root().join("fifo")).is_err());
    assert!(fs::symlink_metadata(sb.root().join("dev/null")).is_err());
}

#[test]
fn mutated_archives_never_panic_or_escape() {
    // A fixed-seed xorshift so failures reproduce.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut t = Tar::new();
    t.dir("a/", 0o755)
        .file("a/f", b"data", 0o644)
        .symlink("a/s", "f")
        .hardlink("a/h", "a/f");
    t.pax(&[("SCHILY.xattr.user.x", b"y"), ("path", b"a/long")]);
    t.file("ignored", b"pax named", 0o600);
    t.file("a/.wh.gone", b"", 0o644);
    let good = t.finish();
    // Mutate header blocks and fix their checksums, so the mutations reach the
    // header logic instead of stopping at the checksum test.
    let headers: Vec<usize> = (0..good.len() / 512)
        .map(|b| b * 512)
        .filter(|&o| {
            tar::Header::from_byte_slice(&good[o..o + 512])
                .cksum()
                .ok()
                .is_some_and(|c| c != 0)
        })
        .collect();
    assert!(headers.len() >= 6, "{headers:?}");
    let (mut applied, mut refused) = (0, 0);
    for round in 0..300 {
        let mut bad = good.clone();
        for _ in 0..1 + next() % 6 {
            let h = headers[(next() as usize) % headers.len()];
            let i = h + (next() as usize) % 512;
            bad[i] = match next() % 4 {
                0 => b'/',
                1 => b'.',
                2 => b'0' + (next() % 8) as u8,
                _ => next() as u8,
            };
        }
        if round % 7 == 3 {
            // A numeric field at the top of its range (base-256): the size
            // of u64::MAX once overflowed the padded length.
            let h = headers[(next() as usize) % headers.len()];
            let (field, len) = [(124, 12), (136, 12), (108, 8), (116, 8)][(next() % 4) as usize];
            bad[h + field] = 0x80;
            let top = &mut bad[h + field + 1..h + field + len];
            let zeros = top.len().saturating_sub(8);
            top[..zeros].fill(0);
            top[zeros..].fill(0xff);
        }
        for &h in &headers {
            let mut hdr = tar::Header::new_old();
            hdr.as_mut_bytes().copy_from_slice(&bad[h..h + 512]);
            hdr.set_cksum();
            bad[h..h + 512].copy_from_slice(hdr.as_bytes());
        }
        if round % 5 == 0 {
            bad.truncate((next() as usize) % bad.len());
        }
        let sb = Sandbox::new();
        match sb.apply(&bad, &opts()) {
            Ok(_) => applied += 1,
            Err(_) => refused += 1,
        }
        sb.assert_outside_untouched();
    }
    assert!(
        applied > 0 && refused > 0,
        "applied {applied}, refused {refused}"
    );
}
