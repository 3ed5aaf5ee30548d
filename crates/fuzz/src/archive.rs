//! Targets for berth-archive: the tar entry decoder and layer application.

use std::path::Path;

use berth_archive::{apply_layer, ApplyOptions, Compression, WhiteoutMode};

use crate::scratch;

/// The tar entry stream alone (GNU long names, PAX records, header
/// checksums, sizes): `data` is an uncompressed tar stream.
pub fn tar_stream(data: &[u8]) {
    let _ = berth_archive::fuzzing::tar_entries(data);
}

/// A layer blob (plain tar, gzip or zstd, picked by its magic bytes as the
/// loader does) applied in [`WhiteoutMode::Remove`] to a target that
/// already holds files, directories and symlinks pointing out of it (`up`
/// → `../outside`, `abs` → the absolute path of `outside`). Asserts that
/// nothing outside the target changed, whatever the layer does.
pub fn layer_apply(data: &[u8]) {
    apply(data, WhiteoutMode::Remove);
}

/// The same in [`WhiteoutMode::Overlay`]: an empty upper directory over a
/// lower one (implied directories copy their metadata from it, hardlinks
/// to lower files copy them up). Asserts that neither the lower directory
/// nor anything outside changed.
pub fn layer_apply_overlay(data: &[u8]) {
    apply(data, WhiteoutMode::Overlay);
}

/// Files every target directory starts with (and the lower directory).
fn populate(dir: &Path, outside: &Path) {
    scratch::write(&dir.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n");
    scratch::write(&dir.join("dir/sub/file"), b"lower file");
    scratch::write(&dir.join("dir/other"), b"other");
    scratch::write(&dir.join("file"), b"top file");
    scratch::symlink("../outside", &dir.join("up"));
    scratch::symlink(&outside.to_string_lossy(), &dir.join("abs"));
    scratch::symlink("/etc", &dir.join("etclink"));
    scratch::symlink("dir/sub", &dir.join("rel"));
}

fn apply(data: &[u8], mode: WhiteoutMode) {
    let base = scratch::dir();
    let outside = base.path().join("outside");
    let target = base.path().join("target");
    let lower = base.path().join("lower");
    scratch::write(&outside.join("secret"), b"must not change");
    scratch::write(&outside.join("dir/file"), b"must not change either");
    std::fs::create_dir(&target).expect("create the target directory");
    std::fs::create_dir(&lower).expect("create the lower directory");
    let mut opts = ApplyOptions {
        whiteouts: mode,
        // No device nodes: a confinement bug must not hand a fuzzed layer
        // a real block device as root.
        skip_devices: true,
        max_size: 64 << 20,
        // The writer pool for odd lengths (so both paths get fuzzed, and
        // each input always takes the same one).
        threads: if data.len() % 2 == 1 { 2 } else { 0 },
        pool_above_create_ns: 0,
        ..ApplyOptions::default()
    };
    match mode {
        WhiteoutMode::Remove => populate(&target, &outside),
        WhiteoutMode::Overlay => {
            populate(&lower, &outside);
            opts.lowers = vec![lower.clone()];
        }
    }
    let outside_before = scratch::snapshot(&outside);
    let lower_before = scratch::snapshot(&lower);
    let _ = apply_layer(data, Compression::detect(data), &target, &opts);
    assert_eq!(
        scratch::snapshot(&outside),
        outside_before,
        "the layer changed a directory outside its target"
    );
    assert_eq!(
        scratch::snapshot(&lower),
        lower_before,
        "the layer changed the lower directory"
    );
    let mut names: Vec<String> = std::fs::read_dir(base.path())
        .expect("list the scratch directory")
        .map(|e| {
            e.expect("list the scratch directory")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["lower", "outside", "target"],
        "the layer created something beside its target"
    );
}
