//! `create_layer` round trips through `apply_layer`: a plain tree, an overlay
//! upper directory after real changes in a mounted overlay, and the changes
//! between two trees.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use berth_archive::{apply_layer, create_layer, fsops, ApplyOptions, Compression, LayerSource};
use sha2::{Digest, Sha256};

fn opts() -> ApplyOptions {
    ApplyOptions {
        skip_devices: false,
        ..ApplyOptions::default()
    }
}

fn tmp() -> tempfile::TempDir {
    berth_testutil::require_root();
    tempfile::Builder::new()
        .prefix("berth-create-")
        .tempdir()
        .unwrap()
}

/// Creates a layer from `source` and applies it to `target`; returns the tar names.
fn roundtrip(source: LayerSource<'_>, target: &Path, c: Compression) -> Vec<String> {
    let mut blob = Vec::new();
    let created = create_layer(source, &mut blob, c).unwrap();
    assert_eq!(
        created.digest,
        format!("sha256:{}", hex::encode(Sha256::digest(&blob)))
    );
    assert_eq!(created.compressed_size, blob.len() as u64);
    fs::create_dir_all(target).unwrap();
    let o = ApplyOptions {
        expected_diff_id: Some(created.diff_id.clone()),
        ..opts()
    };
    let applied = apply_layer(&blob[..], c, target, &o).unwrap();
    assert_eq!(applied.size, created.size);
    let tar = match c {
        Compression::Gzip => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut v)
                .unwrap();
            v
        }
        Compression::Zstd => zstd::decode_all(&blob[..]).unwrap(),
        Compression::None => blob,
    };
    tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn base_tree(dir: &Path) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/conf"), b"conf").unwrap();
    fs::create_dir_all(dir.join("old/deep")).unwrap();
    fs::write(dir.join("old/deep/x"), b"x").unwrap();
    fs::create_dir_all(dir.join("keep")).unwrap();
    fs::write(dir.join("keep/same"), b"same").unwrap();
    fs::write(dir.join("keep/gone"), b"gone").unwrap();
}

#[test]
fn a_tree_round_trips_with_links_xattrs_modes_and_long_names() {
    let t = tmp();
    let src = t.path().join("src");
    base_tree(&src);
    fs::write(src.join("etc/su"), b"su").unwrap();
    std::os::unix::fs::chown(src.join("etc/su"), Some(12), Some(34)).unwrap();
    fs::set_permissions(src.join("etc/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(src.join("etc/conf"), src.join("etc/conf-link")).unwrap();
    symlink("../etc/conf", src.join("keep/sym")).unwrap();
    fsops::lset_xattr(&src.join("etc/conf"), b"user.k", b"v").unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    fs::create_dir_all(src.join(&long).parent().unwrap()).unwrap();
    fs::write(src.join(&long), b"long").unwrap();

    let dst = t.path().join("dst");
    let names = roundtrip(LayerSource::Dir(&src), &dst, Compression::Gzip);
    assert!(names.iter().any(|n| n == &long), "{names:?}");
    let su = fs::metadata(dst.join("etc/su")).unwrap();
    assert_eq!((su.mode() & 0o7777, su.uid(), su.gid()), (0o4755, 12, 34));
    assert_eq!(
        fs::metadata(dst.join("etc/conf-link")).unwrap().ino(),
        fs::metadata(dst.join("etc/conf")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(dst.join("keep/sym")).unwrap(),
        Path::new("../etc/conf")
    );
    assert_eq!(
        fsops::lget_xattr(&dst.join("etc/conf"), b"user.k").unwrap(),
        b"v"
    );
    assert!(fs::symlink_metadata(dst.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(dst.join(&long)).unwrap(), b"long");
    let (m1, m2) = (
        fs::metadata(dst.join("etc/conf")).unwrap(),
        fs::metadata(src.join("etc/conf")).unwrap(),
    );
    assert_eq!(
        (m1.mtime(), m1.mtime_nsec()),
        (m2.mtime(), m2.mtime_nsec()),
        "PAX keeps nanoseconds"
    );
    // The same tree gives the same layer.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let ca = create_layer(LayerSource::Dir(&src), &mut a, Compression::None).unwrap();
    let cb = create_layer(LayerSource::Dir(&src), &mut b, Compression::None).unwrap();
    assert_eq!(ca.diff_id, cb.diff_id);
}

/// The changes a container makes, checked on a tree that had the base applied.
fn make_changes(root: &Path) {
    fs::remove_file(root.join("keep/gone")).unwrap();
    fs::remove_dir_all(root.join("old")).unwrap();
    fs::create_dir(root.join("old")).unwrap();
    fs::write(root.join("old/fresh"), b"fresh").unwrap();
    fs::write(root.join("etc/conf"), b"changed").unwrap();
    fs::write(root.join("new"), b"new").unwrap();
}

fn check_changed(root: &Path) {
    assert!(!root.join("keep/gone").exists());
    assert_eq!(fs::read(root.join("keep/same")).unwrap(), b"same");
    assert!(
        !root.join("old/deep").exists(),
        "recreated dir hides its old content"
    );
    assert_eq!(fs::read(root.join("old/fresh")).unwrap(), b"fresh");
    assert_eq!(fs::read(root.join("etc/conf")).unwrap(), b"changed");
    assert_eq!(fs::read(root.join("new")).unwrap(), b"new");
}

#[test]
fn an_overlay_upper_becomes_a_layer_with_whiteouts_and_opaque_markers() {
    let t = tmp();
    let [lower, upper, work, merged] =
        ["lower", "upper", "work", "merged"].map(|d| t.path().join(d));
    base_tree(&lower);
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .unwrap();
    make_changes(&merged);
    nix::mount::umount(&merged).unwrap();

    let result = t.path().join("result");
    roundtrip(LayerSource::Dir(&lower), &result, Compression::None);
    let names = roundtrip(
        LayerSource::OverlayUpper(&upper),
        &result,
        Compression::Zstd,
    );
    assert!(names.contains(&"keep/.wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&"old/.wh..wh..opq".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("same")),
        "unchanged files stay out: {names:?}"
    );
    check_changed(&result);
}

#[test]
fn changes_between_two_trees_become_a_layer() {
    let t = tmp();
    let lower = t.path().join("lower");
    base_tree(&lower);
    let upper = t.path().join("upper");
    roundtrip(LayerSource::Dir(&lower), &upper, Compression::None);
    make_changes(&upper);
    let result = t.path().join("result");
    roundtrip(LayerSource::Dir(&lower), &result, Compression::None);
    let names = roundtrip(
        LayerSource::Changes {
            lower: &lower,
            upper: &upper,
        },
        &result,
        Compression::Gzip,
    );
    assert!(names.contains(&"keep/.wh.gone".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("same")),
        "unchanged files stay out: {names:?}"
    );
    check_changed(&result);
}
