//! End-to-end tests of berth's image commands (import, images, tag, rmi,
//! inspect, load, save, fsck, gc) against real peers: skopeo, umoci, podman.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_testutil::{busybox_rootfs, require_peer};
use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("berth-images-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn berth(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .expect("run berth")
    }

    /// Runs berth and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs berth and asserts failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            !out.status.success(),
            "berth {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs berth, asserts failure and that stderr contains every needle.
    fn fails_with(&self, args: &[&str], needles: &[&str]) -> String {
        let err = self.fails(args);
        for needle in needles {
            assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
        }
        err
    }

    /// Runs berth with `stdin` as its standard input.
    fn berth_with_stdin(&self, args: &[&str], stdin: impl Into<Stdio>) -> Output {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(stdin)
            .output()
            .expect("run berth")
    }

    /// A busybox rootfs tarball (with optional extra file contents).
    fn rootfs_tar(&self, name: &str, extra: Option<(&str, &[u8])>) -> PathBuf {
        let rootfs = self.path(&format!("{name}-rootfs"));
        busybox_rootfs(&rootfs);
        if let Some((rel, data)) = extra {
            std::fs::write(rootfs.join(rel), data).expect("write extra file");
        }
        let tar = self.path(&format!("{name}.tar"));
        run(Command::new(require_peer("tar"))
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        tar
    }

    fn import_busybox(&self, name: &str) {
        let tar = self.rootfs_tar("bb", None);
        self.ok(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh","-c","echo hi"]"#,
            tar.to_str().unwrap(),
            name,
        ]);
    }

    fn images_json(&self) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(&self.ok(&["images", "--format", "json"]))
            .expect("images JSON")
    }

    /// No image record, and a store fsck finds clean.
    fn assert_nothing_loaded(&self) {
        assert!(self.images_json().is_empty(), "no image may be recorded");
        self.assert_fsck_clean();
    }

    fn assert_fsck_clean(&self) {
        let out = self.berth(&["fsck"]);
        assert!(
            out.status.success(),
            "fsck should be clean: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `cmd`, failing the test unless it exits 0; returns its stdout.
fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&berth_testutil::run_ok(cmd).stdout).into_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    berth_core::digest::sha256_of(data).digest().to_string()
}

/// Imports busybox as `name` and saves it to the OCI archive `<name>.tar`;
/// returns the image ID and the archive.
fn saved_busybox(env: &Env, name: &str) -> (String, PathBuf) {
    env.import_busybox(name);
    let id = env.images_json()[0]["id"].as_str().unwrap().to_string();
    let archive = env.path(&format!("{}.tar", name.replace('/', "_")));
    env.ok(&["save", name, "-o", archive.to_str().unwrap()]);
    (id, archive)
}

/// A skopeo-written OCI layout of a berth-imported busybox, for tampering.
fn skopeo_layout(env: &Env, name: &str) -> PathBuf {
    let (_, archive) = saved_busybox(env, name);
    let layout = env.path("layout");
    run(Command::new(require_peer("skopeo"))
        .arg("copy")
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:v1", layout.display())));
    layout
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("parse json")
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// (manifest digest, manifest JSON) of the only image in a layout.
fn layout_manifest(layout: &Path) -> (String, Value) {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    (digest.clone(), read_json(&blob(layout, &digest)))
}

/// The digest and file of the first layer of a layout's only image.
fn first_layer(layout: &Path) -> (String, PathBuf) {
    let (_, manifest) = layout_manifest(layout);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = blob(layout, &layer);
    (layer, path)
}

/// Writes `data` as a blob and returns its digest.
fn put_blob(layout: &Path, data: &[u8]) -> String {
    let hex = sha256_hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

/// Points the layout's index.json at a new manifest.
fn set_manifest(layout: &Path, manifest: &Value) {
    let data = serde_json::to_vec(manifest).unwrap();
    let digest = put_blob(layout, &data);
    let mut index = read_json(&layout.join("index.json"));
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = data.len().into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn import_images_tag_inspect_rmi() {
    let env = Env::new();
    env.import_busybox("busybox");
    let table = env.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY")
            && lines[0].contains("IMAGE ID")
            && lines[0].contains("SIZE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("busybox") && lines[1].contains("latest"),
        "{table}"
    );

    let images = env.images_json();
    assert_eq!(images.len(), 1);
    // BERTH_ROOT selects the same data root as --root.
    let via_env = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_ROOT", env.root())
        .args(["images", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&via_env.stdout).unwrap(),
        Value::Array(images.clone())
    );
    assert_eq!(images[0]["name"], "docker.io/library/busybox:latest");
    let id = images[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sha256:") && images[0]["size"].as_u64().unwrap() > 100_000);

    env.ok(&["tag", "busybox", "localhost:5000/team/bb:v1"]);
    let table = env.ok(&["images"]);
    assert!(
        table.contains("localhost:5000/team/bb") && table.contains("v1"),
        "{table}"
    );

    let inspect: Vec<Value> =
        serde_json::from_str(&env.ok(&["inspect", "localhost:5000/team/bb:v1"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["Config"]["Cmd"][2], "echo hi");
    assert_eq!(inspect[0]["RepoTags"].as_array().unwrap().len(), 2);
    assert_eq!(
        inspect[0]["RootFS"]["diff_ids"].as_array().unwrap().len(),
        1
    );
    // Lookup by a short image ID prefix.
    env.ok(&["inspect", &id["sha256:".len().."sha256:".len() + 12]]);

    assert!(env
        .ok(&["rmi", "docker.io/library/busybox"])
        .contains("Untagged: docker.io/library/busybox:latest"));
    assert_eq!(env.images_json().len(), 1);
    env.fails_with(&["rmi", "nosuch"], &["\"nosuch\" not found"]);
    env.fails_with(
        &["tag", "localhost:5000/team/bb:v1", "Bad:Name"],
        &["Bad:Name", "lowercase"],
    );
    env.assert_fsck_clean();
}

#[test]
fn import_refuses_a_file_that_is_not_a_tarball() {
    let env = Env::new();
    let junk = env.path("junk.tar");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    env.fails_with(
        &["import", junk.to_str().unwrap(), "junk"],
        &["junk.tar", "not a tar archive"],
    );
    env.assert_nothing_loaded();
}

#[test]
fn skopeo_round_trip_through_oci_layout_and_archive() {
    let env = Env::new();
    let (id, archive) = saved_busybox(&env, "busybox");
    // skopeo reads berth's archive ...
    let skopeo = require_peer("skopeo");
    let config = run(Command::new(&skopeo)
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", archive.display())));
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["Cmd"][2], "echo hi");
    let layout = env.path("layout");
    run(Command::new(&skopeo)
        .arg("copy")
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:v2", layout.display())));
    let back = env.path("back.tar");
    run(Command::new(&skopeo)
        .arg("copy")
        .arg(format!("oci:{}:v2", layout.display()))
        .arg(format!("oci-archive:{}:v3", back.display())));

    // ... and berth reads what skopeo wrote, as a directory and as an archive.
    let other = Env::new();
    let err = other.fails(&["load", layout.to_str().unwrap()]);
    assert!(
        err.contains("--name"),
        "a tag-only name needs --name: {err}"
    );
    assert!(other
        .ok(&["load", layout.to_str().unwrap(), "--name", "example.com/rt"])
        .contains("Loaded image: example.com/rt:v2"));
    assert!(other
        .ok(&[
            "load",
            "-i",
            back.to_str().unwrap(),
            "--name",
            "example.com/rt"
        ])
        .contains("Loaded image: example.com/rt:v3"));
    for image in other.images_json() {
        assert_eq!(
            image["id"],
            id.as_str(),
            "the config survives the round trip byte for byte"
        );
    }
    other.assert_fsck_clean();
}

#[test]
fn umoci_layouts_load_and_berth_archives_unpack_with_umoci() {
    let env = Env::new();
    let umoci = require_peer("umoci");
    // umoci builds an image: empty base, unpack, add busybox, repack.
    let layout = env.path("umoci-layout");
    run(Command::new(&umoci).args(["init", "--layout"]).arg(&layout));
    run(Command::new(&umoci)
        .args(["new", "--image"])
        .arg(format!("{}:base", layout.display())));
    let bundle = env.path("bundle");
    run(Command::new(&umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:base", layout.display()))
        .arg(&bundle));
    busybox_rootfs(&bundle.join("rootfs"));
    std::fs::write(bundle.join("rootfs/etc/umoci-made"), "yes\n").unwrap();
    run(Command::new(&umoci)
        .args(["repack", "--image"])
        .arg(format!("{}:built", layout.display()))
        .arg(&bundle));
    run(Command::new(&umoci)
        .args(["config", "--image"])
        .arg(format!("{}:built", layout.display()))
        .args(["--config.cmd", "/bin/sh"]));

    let out = env.ok(&["load", layout.to_str().unwrap(), "--name", "umoci/test"]);
    assert!(
        out.contains("umoci/test:base") && out.contains("umoci/test:built"),
        "{out}"
    );
    let inspect: Vec<Value> =
        serde_json::from_str(&env.ok(&["inspect", "umoci/test:built"])).unwrap();
    assert_eq!(
        inspect[0]["RootFS"]["diff_ids"].as_array().unwrap().len(),
        1
    );
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "/bin/sh");
    env.assert_fsck_clean();

    // umoci unpacks what berth saves.
    let archive = env.path("out.tar");
    env.ok(&["save", "umoci/test:built", "-o", archive.to_str().unwrap()]);
    let extracted = env.path("extracted");
    std::fs::create_dir(&extracted).unwrap();
    run(Command::new(require_peer("tar"))
        .arg("-C")
        .arg(&extracted)
        .arg("-xf")
        .arg(&archive));
    let unpacked = env.path("unpacked");
    run(Command::new(&umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:built", extracted.display()))
        .arg(&unpacked));
    assert_eq!(
        std::fs::read_to_string(unpacked.join("rootfs/etc/umoci-made")).unwrap(),
        "yes\n"
    );
    assert!(unpacked.join("rootfs/bin/busybox").is_file());
    // berth writes OCI layout directories too, and adds to existing ones.
    let copied = env.path("copied-layout");
    std::fs::create_dir(&copied).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", layout.display()))
        .arg(&copied));
    env.ok(&["tag", "umoci/test:built", "umoci/test:again"]);
    env.ok(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        copied.to_str().unwrap(),
        "umoci/test:again",
    ]);
    let tags = run(Command::new(&umoci).args(["ls", "--layout"]).arg(&copied));
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    assert_eq!(tags, ["again", "base", "built"]);
    let unpacked = env.path("unpacked-again");
    run(Command::new(&umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:again", copied.display()))
        .arg(&unpacked));
    assert!(unpacked.join("rootfs/etc/umoci-made").is_file());
}

/// An archive of a busybox image written by `podman save --format FORMAT`
/// (`docker-archive`: docker save's layout; `oci-archive`).
fn podman_archive(env: &Env, format: &str) -> PathBuf {
    let tar = env.rootfs_tar("p", None);
    let podman = require_peer("podman");
    let podman = |args: &[&str]| {
        run(Command::new(&podman)
            .arg("--root")
            .arg(env.path("podman-root"))
            .arg("--runroot")
            .arg(env.path("podman-run"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(args))
    };
    podman(&["import", tar.to_str().unwrap(), "localhost/pbox:1"]);
    let archive = env.path(&format!("{format}.tar"));
    podman(&[
        "save",
        "--format",
        format,
        "-o",
        archive.to_str().unwrap(),
        "localhost/pbox:1",
    ]);
    archive
}

#[test]
fn podman_oci_archives_load() {
    let env = Env::new();
    let archive = podman_archive(&env, "oci-archive");
    assert!(env
        .ok(&["load", archive.to_str().unwrap()])
        .contains("Loaded image: localhost/pbox:1"));
    env.assert_fsck_clean();
}

#[test]
fn docker_save_archives_load() {
    let env = Env::new();
    let archive = podman_archive(&env, "docker-archive");
    assert!(env
        .ok(&["load", archive.to_str().unwrap()])
        .contains("Loaded image: localhost/pbox:1"));
    let inspect: Vec<Value> =
        serde_json::from_str(&env.ok(&["inspect", "localhost/pbox:1"])).unwrap();
    assert_eq!(
        inspect[0]["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    env.assert_fsck_clean();
    // And a gzip-compressed docker save archive.
    let gz = env.path("docker.tar.gz");
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {}",
        archive.display(),
        gz.display()
    )));
    // And a gzip-compressed docker save archive, piped on stdin.
    let other = Env::new();
    let out = other.berth_with_stdin(&["load", "-"], std::fs::File::open(&gz).unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: localhost/pbox:1"));
    other.assert_fsck_clean();
}

#[test]
fn fsck_names_a_corrupted_blob() {
    let env = Env::new();
    env.import_busybox("busybox");
    env.assert_fsck_clean();
    let inspect: Vec<Value> = serde_json::from_str(&env.ok(&["inspect", "busybox"])).unwrap();
    let layer = inspect[0]["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = blob(&env.root().join("content"), &layer);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&path, data).unwrap();
    let out = env.berth(&["fsck"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("corrupt blob {layer}"))
            && stdout.contains(&path.display().to_string()),
        "{stdout}"
    );
}

#[test]
fn load_refuses_a_blob_with_the_wrong_digest() {
    let env = Env::new();
    let layout = skopeo_layout(&env, "src");
    let (layer, path) = first_layer(&layout);
    let mut data = std::fs::read(&path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    let other = Env::new();
    // Longer than its descriptor says: refused as soon as it overflows.
    let mut longer = data.clone();
    longer.extend_from_slice(b"extra");
    std::fs::write(&path, &longer).unwrap();
    let err = other.fails(&["load", layout.to_str().unwrap(), "--name", "x"]);
    assert!(
        err.contains("size mismatch") && err.contains(&layer) && err.matches(&layer).count() <= 3,
        "{err}"
    );
    std::fs::write(&path, &data).unwrap();
    other.fails_with(
        &["load", layout.to_str().unwrap(), "--name", "x"],
        &["digest mismatch", &layer, &path.display().to_string()],
    );
    other.assert_nothing_loaded();
}

#[test]
fn load_refuses_a_truncated_blob() {
    let env = Env::new();
    let layout = skopeo_layout(&env, "src");
    let (layer, path) = first_layer(&layout);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() / 2]).unwrap();
    // As a directory and as an archive.
    let other = Env::new();
    other.fails_with(
        &["load", layout.to_str().unwrap(), "--name", "x"],
        &["truncated", &layer],
    );
    // In an archive the tar header gives the (short) size, so the digest fails.
    let archive = env.path("short-blob.tar");
    run(Command::new(require_peer("tar"))
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    other.fails_with(
        &["load", archive.to_str().unwrap(), "--name", "x"],
        &["digest mismatch", &layer, "short-blob.tar:blobs/sha256/"],
    );
    // An archive cut short in the middle of a blob (an interrupted copy).
    let saved = std::fs::read(env.path("src.tar")).unwrap();
    let cut = env.path("cut.tar");
    std::fs::write(&cut, &saved[..saved.len() * 2 / 3]).unwrap();
    other.fails_with(
        &["load", cut.to_str().unwrap(), "--name", "x"],
        &["cut.tar"],
    );
    other.assert_nothing_loaded();
}

#[test]
fn load_refuses_bad_json() {
    let env = Env::new();
    let layout = skopeo_layout(&env, "src");
    // A manifest blob whose digest is right but whose content is not JSON.
    let bad = put_blob(&layout, b"{\"schemaVersion\": 2, oops");
    let mut index = read_json(&layout.join("index.json"));
    index["manifests"][0]["digest"] = bad.clone().into();
    index["manifests"][0]["size"] = 25.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let other = Env::new();
    other.fails_with(
        &["load", layout.to_str().unwrap(), "--name", "x"],
        &["invalid JSON", &bad, "manifest"],
    );
    // A broken index.json itself.
    std::fs::write(layout.join("index.json"), b"[").unwrap();
    other.fails_with(
        &["load", layout.to_str().unwrap(), "--name", "x"],
        &["index.json", "invalid JSON"],
    );
    other.assert_nothing_loaded();
}

#[test]
fn load_refuses_a_wrong_diff_id() {
    let env = Env::new();
    let layout = skopeo_layout(&env, "src");
    let (_, mut manifest) = layout_manifest(&layout);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config = read_json(&blob(&layout, &config_digest));
    let wrong = format!("sha256:{}", "0".repeat(64));
    config["rootfs"]["diff_ids"][0] = wrong.clone().into();
    let data = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put_blob(&layout, &data).into();
    manifest["config"]["size"] = data.len().into();
    set_manifest(&layout, &manifest);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let other = Env::new();
    other.fails_with(
        &["load", layout.to_str().unwrap(), "--name", "x"],
        &["diff_id mismatch", &wrong, &layer],
    );
    other.assert_nothing_loaded();
}

/// Saves a busybox image with a large, incompressible file as an OCI
/// archive, so that loading it takes long enough to be interrupted.
fn big_archive(env: &Env) -> PathBuf {
    let mut noise = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let tar = env.rootfs_tar("big", Some(("noise", &noise)));
    drop(noise);
    env.ok(&["import", tar.to_str().unwrap(), "big"]);
    let archive = env.path("big-oci.tar");
    env.ok(&["save", "big", "-o", archive.to_str().unwrap()]);
    archive
}

/// Starts `berth load ARCHIVE` into `env` and returns once part of a blob
/// has been written to the ingest area (and, if `committed` is set, at
/// least that many blobs have been committed).
fn start_load(env: &Env, archive: &Path, committed: usize) -> std::process::Child {
    let ingest = env.root().join("content/ingest");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(env.root())
        .args(["load", archive.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn berth load");
    while child.try_wait().expect("wait").is_none() {
        let partial = std::fs::read_dir(&ingest)
            .map(|entries| {
                entries.flatten().any(|e| {
                    std::fs::metadata(e.path().join("data"))
                        .map(|m| m.len() > 0)
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false);
        let blobs = std::fs::read_dir(env.root().join("content/blobs/sha256"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        if partial && blobs >= committed {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("the load finished before any partial ingest was seen; make the layer bigger");
}

#[test]
fn gc_during_a_load_waits_and_keeps_the_new_image() {
    let env = Env::new();
    let archive = big_archive(&env);
    // Re-pack it so the small blobs come first: they are committed (but
    // not yet referenced by a record) while the big layer still streams.
    let layout = env.path("big-layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new(require_peer("tar"))
        .arg("-C")
        .arg(&layout)
        .arg("-xf")
        .arg(&archive));
    let mut blobs: Vec<(u64, String)> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.metadata().unwrap().len(),
                format!("blobs/sha256/{}", e.file_name().to_string_lossy()),
            )
        })
        .collect();
    blobs.sort();
    let ordered = env.path("small-first.tar");
    run(Command::new(require_peer("tar"))
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&ordered)
        .args(["oci-layout", "index.json"])
        .args(blobs.iter().map(|(_, name)| name)));
    let other = Env::new();
    let load = start_load(&other, &ordered, blobs.len() - 1);
    // GC runs while the load holds its lease: it must wait, then find
    // nothing to delete.
    let gc = other.ok(&["gc"]);
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the load must survive a concurrent gc"
    );
    assert!(gc.contains("removed 0 blobs"), "{gc}");
    assert_eq!(other.images_json().len(), 1);
    other.assert_fsck_clean();
    other.ok(&[
        "save",
        "big",
        "-o",
        other.path("again.tar").to_str().unwrap(),
    ]);
}

#[test]
fn kill_during_load_leaves_a_clean_store_and_a_rerun_succeeds() {
    let env = Env::new();
    let archive = big_archive(&env);
    let other = Env::new();
    let ingest = other.root().join("content/ingest");
    let mut child = start_load(&other, &archive, 0);
    child.kill().expect("kill -9 berth load");
    child.wait().unwrap();

    assert!(
        other.images_json().is_empty(),
        "no record for a half-loaded image"
    );
    other.assert_fsck_clean();
    assert!(other
        .ok(&["load", archive.to_str().unwrap()])
        .contains("Loaded image: docker.io/library/big:latest"));
    other.assert_fsck_clean();
    assert!(other.ok(&["gc"]).contains("removed 0 blobs"));
    assert!(
        std::fs::read_dir(&ingest).unwrap().next().is_none(),
        "no ingest left after gc"
    );
}

#[test]
fn gc_removes_only_unreferenced_blobs() {
    let env = Env::new();
    env.import_busybox("keep");
    let tar = env.rootfs_tar("other", Some(("marker", b"other")));
    env.ok(&["import", tar.to_str().unwrap(), "drop"]);
    env.ok(&["rmi", "drop"]);
    let out = env.ok(&["gc"]);
    assert!(
        out.contains("removed 3 blobs"),
        "layer, config and manifest of the removed image: {out}"
    );
    env.assert_fsck_clean();
    // The kept image is whole: it still saves.
    env.ok(&["save", "keep", "-o", env.path("keep.tar").to_str().unwrap()]);
    assert!(env.ok(&["gc"]).contains("removed 0 blobs"));
}

/// Unpacks `name`'s layers into the data root's snapshotter, as `berth run`
/// does; returns the top chain ID.
fn unpack(env: &Env, name: &str) -> String {
    berth_engine::Engine::open(&env.root())
        .expect("open the data root")
        .unpack(name)
        .expect("unpack")
        .expect("the image has layers")
}

#[test]
fn gc_removes_snapshots_of_removed_images_only() {
    let env = Env::new();
    env.import_busybox("keep");
    let tar = env.rootfs_tar("other", Some(("marker", b"other")));
    env.ok(&["import", tar.to_str().unwrap(), "drop"]);
    let kept = unpack(&env, "keep");
    let dropped = unpack(&env, "drop");
    assert_ne!(kept, dropped);
    assert!(
        env.ok(&["gc"]).contains("0 snapshots"),
        "nothing to collect while both images exist"
    );
    env.ok(&["rmi", "drop"]);
    let out = env.ok(&["gc"]);
    assert!(
        out.contains(&format!("deleted snapshot: {dropped}")) && out.contains("1 snapshots"),
        "{out}"
    );
    let snapshotter = berth_snapshot::Snapshotter::open(
        &berth_engine::Layout::new(env.root()).snapshotter(),
        None,
    )
    .unwrap();
    assert!(
        snapshotter.stat(&kept).is_ok(),
        "the kept image's snapshot survives"
    );
    assert!(snapshotter.stat(&dropped).is_err());
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn multi_platform_index_loads_and_resolves_by_platform() {
    let env = Env::new();
    let layout = skopeo_layout(&env, "src");
    let index = read_json(&layout.join("index.json"));
    let mut host = index["manifests"][0].clone();
    host.as_object_mut().unwrap().remove("annotations");
    host["platform"] = serde_json::json!({"os": "linux", "architecture": host_arch()});
    // A second platform whose manifest is not in the layout (a partial copy).
    let absent = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", "e".repeat(64)),
        "size": 500,
        "platform": {"os": "linux", "architecture": "riscv64"}
    });
    // An attestation-style artifact beside the image (not an image config).
    let empty = put_blob(&layout, b"{}");
    let statement = put_blob(&layout, b"{\"predicate\":{}}");
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.attestation",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": statement, "size": 16}]
    }))
    .unwrap();
    let artifact = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put_blob(&layout, &artifact),
        "size": artifact.len(),
        "platform": {"os": "unknown", "architecture": "unknown"}
    });
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [absent, artifact, host]
    });
    let data = serde_json::to_vec(&list).unwrap();
    let digest = put_blob(&layout, &data);
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": data.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        }]
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let other = Env::new();
    other.ok(&[
        "load",
        layout.to_str().unwrap(),
        "--name",
        "example.com/multi",
    ]);
    let images = other.images_json();
    assert_eq!(
        images[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(images[0]["digest"], digest.as_str());
    let inspect: Vec<Value> =
        serde_json::from_str(&other.ok(&["inspect", "example.com/multi:multi"])).unwrap();
    assert_eq!(inspect[0]["Architecture"], host_arch());
    other.fails_with(
        &[
            "inspect",
            "--platform",
            "linux/s390x",
            "example.com/multi:multi",
        ],
        &[
            "linux/s390x",
            "linux/riscv64",
            &format!("linux/{}", host_arch()),
        ],
    );
    other.assert_fsck_clean();
    // The saved archive carries the index and the platform that is present.
    let archive = other.path("multi.tar");
    other.ok(&[
        "save",
        "example.com/multi:multi",
        "-o",
        archive.to_str().unwrap(),
    ]);
    let third = Env::new();
    third.ok(&["load", archive.to_str().unwrap()]);
    assert_eq!(third.images_json()[0]["digest"], digest.as_str());
    let stored = third.root().join("content/blobs/sha256");
    assert!(
        stored
            .join(statement.trim_start_matches("sha256:"))
            .is_file(),
        "the artifact travels with the index"
    );
    third.assert_fsck_clean();
}

#[test]
fn import_reads_stdin() {
    let env = Env::new();
    let tar = env.rootfs_tar("bb", None);
    let out = env.berth_with_stdin(
        &[
            "import",
            "-",
            "piped",
            "--change",
            "ENV A=b",
            "--change",
            "WORKDIR /tmp",
        ],
        std::fs::File::open(&tar).unwrap(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: Vec<Value> = serde_json::from_str(&env.ok(&["inspect", "piped"])).unwrap();
    assert_eq!(inspect[0]["Config"]["Env"][0], "A=b");
    assert_eq!(inspect[0]["Config"]["WorkingDir"], "/tmp");
    env.fails_with(
        &["import", tar.to_str().unwrap(), "x", "--change", "RUN make"],
        &["RUN", "unsupported"],
    );
}

#[test]
fn save_to_stdout_pipes_into_load() {
    let env = Env::new();
    env.import_busybox("piped/one");
    let other = Env::new();
    let mut save = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(env.root())
        .args(["save", "piped/one"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = other.berth_with_stdin(&["load", "-"], save.stdout.take().unwrap());
    assert!(save.wait().unwrap().success());
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert!(
        String::from_utf8_lossy(&load.stdout).contains("Loaded image: docker.io/piped/one:latest")
    );
    assert_eq!(other.images_json()[0]["id"], env.images_json()[0]["id"]);
    other.assert_fsck_clean();
}

#[test]
fn tampered_docker_save_archives_are_refused() {
    let env = Env::new();
    let archive = podman_archive(&env, "docker-archive");
    let dir = env.path("unpacked-docker");
    std::fs::create_dir(&dir).unwrap();
    let tar = require_peer("tar");
    run(Command::new(&tar)
        .arg("-C")
        .arg(&dir)
        .arg("-xf")
        .arg(&archive));
    let manifest: Value = read_json(&dir.join("manifest.json"));
    let config = dir.join(manifest[0]["Config"].as_str().unwrap());
    let layer = dir.join(manifest[0]["Layers"][0].as_str().unwrap());
    let repack = |name: &str| {
        let out = env.path(name);
        run(Command::new(&tar)
            .arg("-C")
            .arg(&dir)
            .arg("-cf")
            .arg(&out)
            .arg("."));
        out
    };
    let other = Env::new();

    // A config whose content no longer matches its <digest>.json name.
    let original = std::fs::read(&config).unwrap();
    let mut edited: Value = serde_json::from_slice(&original).unwrap();
    edited["author"] = "someone else".into();
    std::fs::write(&config, serde_json::to_vec(&edited).unwrap()).unwrap();
    let bad = repack("bad-config.tar");
    other.fails_with(
        &["load", bad.to_str().unwrap()],
        &["digest mismatch", manifest[0]["Config"].as_str().unwrap()],
    );
    std::fs::write(&config, &original).unwrap();

    // A layer whose content no longer matches the config's diff_id.
    let mut data = std::fs::read(&layer).unwrap();
    data.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&layer, &data).unwrap();
    let bad = repack("bad-layer.tar");
    other.fails_with(
        &["load", bad.to_str().unwrap()],
        &["diff_id mismatch", "layer 1 of 1"],
    );

    // manifest.json that is not JSON.
    std::fs::write(dir.join("manifest.json"), b"[{").unwrap();
    let bad = repack("bad-manifest.tar");
    other.fails_with(
        &["load", bad.to_str().unwrap()],
        &["manifest.json", "invalid"],
    );
    other.assert_nothing_loaded();
}

#[test]
fn docker_schema2_manifests_load_resolve_and_save() {
    let env = Env::new();
    let (id, archive) = saved_busybox(&env, "busybox");
    let skopeo = require_peer("skopeo");
    let layout = env.path("v2s2");
    run(Command::new(&skopeo)
        .args(["copy", "--format", "v2s2"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:v2", layout.display())));

    let other = Env::new();
    other.ok(&["load", layout.to_str().unwrap(), "--name", "docker-types"]);
    let inspect: Vec<Value> =
        serde_json::from_str(&other.ok(&["inspect", "docker-types:v2"])).unwrap();
    assert_eq!(
        inspect[0]["MediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(
        inspect[0]["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    other.assert_fsck_clean();
    // Saved again, skopeo reads it and converts it back to OCI.
    let again = other.path("again.tar");
    other.ok(&["save", "docker-types:v2", "-o", again.to_str().unwrap()]);
    let config = run(Command::new(&skopeo)
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", again.display())));
    assert!(config.contains("echo hi"), "{config}");
}

#[test]
fn zstd_layers_load_with_their_diff_ids_checked() {
    let env = Env::new();
    let (_, archive) = saved_busybox(&env, "busybox");
    let layout = env.path("zstd");
    run(Command::new(require_peer("skopeo"))
        .args(["copy", "--dest-compress", "--dest-compress-format", "zstd"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:z", layout.display())));
    let (layer, _) = first_layer(&layout);

    let other = Env::new();
    other.ok(&["load", layout.to_str().unwrap(), "--name", "zst"]);
    let inspect: Vec<Value> = serde_json::from_str(&other.ok(&["inspect", "zst:z"])).unwrap();
    assert_eq!(
        inspect[0]["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        inspect[0]["Manifest"]["layers"][0]["digest"],
        layer.as_str()
    );
    other.assert_fsck_clean();

    // Declared as gzip, but the content is zstd: refused by name.
    let (digest, mut manifest) = layout_manifest(&layout);
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
    set_manifest(&layout, &manifest);
    let third = Env::new();
    third.fails_with(
        &["load", layout.to_str().unwrap(), "--name", "zst"],
        &[
            "declared as application/vnd.oci.image.layer.v1.tar+gzip",
            "Zstd",
            &layer,
        ],
    );
    third.assert_nothing_loaded();
    assert_ne!(digest, layout_manifest(&layout).0);
}

#[test]
fn non_root_users_get_a_store_under_their_home() {
    let env = Env::new();
    let user = berth_testutil::user::TestUser::new(true);
    let tar = user.dir().join("bb.tar");
    std::fs::copy(env.rootfs_tar("bb", None), &tar).unwrap();
    user.chown(&tar);
    let as_user = |args: &[&str]| {
        let out = user
            .command(Path::new(env!("CARGO_BIN_EXE_berth")))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run berth as the test user");
        assert!(
            out.status.success(),
            "berth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    as_user(&["import", tar.to_str().unwrap(), "mine"]);
    let out = as_user(&["images", "--format", "json"]);
    let images: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(images[0]["name"], "docker.io/library/mine:latest");
    let store = user.dir().join(".local/share/berth/content/oci-layout");
    assert!(store.is_file(), "{} is missing", store.display());
}

#[test]
fn an_unnamed_image_loads_and_is_listed_by_digest() {
    let env = Env::new();
    let layout = skopeo_layout(&env, "bb");
    // Drop the name: skopeo copies to `oci:DIR` without a reference do the same.
    let mut index = read_json(&layout.join("index.json"));
    index["manifests"][0]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let (digest, _) = layout_manifest(&layout);

    let other = Env::new();
    let out = other.ok(&["load", layout.to_str().unwrap()]);
    assert_eq!(out, format!("Loaded image: {digest}\n"));
    let table = other.ok(&["images"]);
    let row = table.lines().nth(1).expect("one image row");
    assert!(
        row.starts_with("<none>") && row.contains("<none>"),
        "{table}"
    );
    let listed = other.images_json();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap().to_string();
    other.assert_fsck_clean();
    // Found by digest; named later, it is no longer listed as <none>.
    other.ok(&["inspect", &digest]);
    other.ok(&["tag", &digest, "example.com/now/named:1"]);
    let table = other.ok(&["images"]);
    assert!(
        table.contains("example.com/now/named") && !table.contains("<none>"),
        "{table}"
    );
    other.ok(&["rmi", "example.com/now/named:1"]);
    assert!(other.images_json().is_empty());

    // Removed by ID like any image.
    let third = Env::new();
    third.ok(&["load", layout.to_str().unwrap()]);
    third.ok(&["rmi", &id]);
    assert!(third.images_json().is_empty());
}

#[test]
fn load_and_save_take_skopeo_style_oci_names() {
    let env = Env::new();
    env.import_busybox("example.com/app:1");
    let dir = env.path("layout");
    let archive = env.path("app.tar");
    env.ok(&[
        "save",
        "example.com/app:1",
        "-o",
        &format!("oci:{}:stable", dir.display()),
    ]);
    env.ok(&[
        "save",
        "example.com/app:1",
        "-o",
        &format!("oci-archive:{}:edge", archive.display()),
    ]);
    // skopeo reads both under the reference given.
    let skopeo = require_peer("skopeo");
    for image in [
        format!("oci:{}:stable", dir.display()),
        format!("oci-archive:{}:edge", archive.display()),
    ] {
        run(Command::new(&skopeo).args(["inspect", &image]));
    }
    // skopeo adds a second image to the layout; berth loads the one asked for.
    run(Command::new(&skopeo)
        .arg("copy")
        .arg(format!("oci:{}:stable", dir.display()))
        .arg(format!("oci:{}:other", dir.display())));
    let other = Env::new();
    let out = other.ok(&[
        "load",
        "--name",
        "example.com/picked",
        &format!("oci:{}:other", dir.display()),
    ]);
    assert_eq!(out, "Loaded image: example.com/picked:other\n");
    // berth's own archive also carries the full name, which wins.
    let out = other.ok(&["load", &format!("oci-archive:{}:edge", archive.display())]);
    assert_eq!(out, "Loaded image: example.com/app:1\n");
    let err = other.fails(&["load", &format!("oci:{}:missing", dir.display())]);
    assert!(
        err.contains("\"missing\"") && err.contains("stable") && err.contains("other"),
        "{err}"
    );
    let err = other.fails(&["load", &format!("oci:{}", archive.display())]);
    assert!(err.contains("not an OCI layout directory"), "{err}");
    let err = other.fails(&[
        "save",
        "example.com/app:1",
        "example.com/picked:other",
        "-o",
        &format!("oci:{}:x", env.path("two").display()),
    ]);
    assert!(err.contains("one reference names one image"), "{err}");
}
