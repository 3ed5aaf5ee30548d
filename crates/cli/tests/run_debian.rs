//! `berth run` of a real Debian image: a `debootstrap --variant=minbase
//! bookworm` rootfs (built once a day into a cache under the system temp
//! dir) with a user added, imported with Env and WorkingDir, run as that
//! user with bash.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_content::{FileLock, LockMode};
use common::{require_peer, tar_dir, Env};

/// The Debian mirror apt uses (debootstrap goes through the same one).
fn mirror() -> String {
    let sources =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    sources
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .map(str::trim)
        .find(|u| u.ends_with("/debian") || u.ends_with("/debian/"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_string()
}

/// A tarball of a minbase bookworm rootfs with user alice (uid 1000, group
/// alice 1000, supplementary group staff) and her home directory. Built
/// once per day; a failing debootstrap fails the test with its output.
fn debian_tarball() -> PathBuf {
    let cache = std::env::temp_dir().join(format!(
        "berth-debian-minbase-bookworm-{}",
        chrono::Utc::now().format("%Y-%m-%d")
    ));
    std::fs::create_dir_all(&cache).expect("create the debian cache dir");
    let tarball = cache.join("rootfs.tar");
    let _lock = FileLock::acquire(&cache.join("lock"), LockMode::Exclusive).expect("cache lock");
    if tarball.exists() {
        return tarball;
    }
    let debootstrap = require_peer("debootstrap");
    let rootfs = cache.join(format!("rootfs-{}", std::process::id()));
    let mirror = mirror();
    let out = Command::new(debootstrap)
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg(&mirror)
        .output()
        .expect("run debootstrap");
    assert!(
        out.status.success(),
        "debootstrap --variant=minbase bookworm from {mirror} failed (is the Debian mirror reachable?):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    add_user(&rootfs);
    let tmp = cache.join(format!("rootfs.tar.{}", std::process::id()));
    tar_dir(&rootfs, &tmp);
    std::fs::rename(&tmp, &tarball).expect("rename the tarball into place");
    let _ = std::fs::remove_dir_all(&rootfs);
    tarball
}

fn append(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    writeln!(f, "{line}").expect("append");
}

fn add_user(rootfs: &Path) {
    append(
        &rootfs.join("etc/passwd"),
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash",
    );
    append(&rootfs.join("etc/group"), "alice:x:1000:");
    let group = rootfs.join("etc/group");
    let text = std::fs::read_to_string(&group).expect("read group");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("staff:") {
                format!("{l}alice\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&group, text).expect("write group");
    let home = rootfs.join("home/alice");
    std::fs::create_dir_all(&home).expect("create home");
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).expect("chown home");
}

#[test]
fn debian_image_runs_bash_as_a_named_user_with_the_images_env_and_workdir() {
    let env = Env::new();
    let tarball = debian_tarball();
    env.ok(&[
        "import",
        "--change",
        "ENV FOO=from-image",
        "--change",
        "WORKDIR /home/alice",
        tarball.to_str().expect("utf-8 path"),
        "debian:bookworm",
    ]);
    let out = env.berth(&[
        "run",
        "--rm",
        "--user",
        "alice",
        "debian:bookworm",
        "bash",
        "-c",
        "id -un; id -Gn; pwd; echo $FOO; touch f && echo wrote",
    ]);
    let text = env.stdout_of(&out, 0);
    assert_eq!(text, "alice\nalice staff\n/home/alice\nfrom-image\nwrote\n");
    // Root in the same image: apt's tools are there and the file system is
    // Debian's.
    let out = env.berth(&[
        "run",
        "--rm",
        "debian:bookworm",
        "bash",
        "-c",
        "cat /etc/debian_version; dpkg-query -W -f='${Status}' bash",
    ]);
    let text = env.stdout_of(&out, 0);
    assert!(text.starts_with("12."), "Debian 12: {text:?}");
    assert!(text.ends_with("install ok installed"), "{text:?}");
    env.assert_no_containers_left();
}
