//! `berth registry serve` against real clients: skopeo, podman, containerd's
//! ctr; auth modes through skopeo; kill -9 during an upload; SIGTERM.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testutil::{busybox_layout, require_peer, require_root, Containerd};
use common::registry::*;

#[test]
fn skopeo_copies_in_and_out() {
    require_root();
    require_peer("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let layout = busybox_layout(dir.path());
    let reg = Serve::start(&dir.path().join("storage"), &[]);
    let dest = format!("docker://{}/test/busybox:latest", reg.addr);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(&dest));
    // Copy within the registry (exercises HEAD and cross-repository mounts).
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(&dest)
        .arg(format!("docker://{}/other/busybox:v2", reg.addr)));
    let out = dir.path().join("out");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/other/busybox:v2", reg.addr))
        .arg(format!("oci:{}:copied", out.display())));
    let a = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", layout.display())));
    let b = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:copied", out.display())));
    assert_eq!(a, b, "the manifest survives the round trip byte for byte");
    let tags = run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/other/busybox", reg.addr)));
    assert!(tags.contains("\"v2\""), "{tags}");
}

/// Runs podman with its store under `dir` (vfs, no events, cgroupfs),
/// failing the test unless it succeeds; returns its stdout.
fn podman_in(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("podman-root"))
        .arg("--runroot")
        .arg(dir.join("podman-run"))
        .args([
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
        ])
        .args(args);
    run(&mut c)
}

#[test]
fn podman_pushes_and_pulls() {
    require_root();
    require_peer("podman");
    require_peer("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let reg = seeded_registry(dir.path());
    let podman = |args: &[&str]| podman_in(dir.path(), args);
    let src = format!("{}/seed/busybox:latest", reg.addr);
    podman(&["pull", "--tls-verify=false", &src]);
    let dst = format!("{}/podman/busybox:pushed", reg.addr);
    podman(&["push", "--tls-verify=false", &src, &dst]);
    podman(&["rmi", "--all", "--force"]);
    podman(&["pull", "--tls-verify=false", &dst]);
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("podman/busybox:pushed"), "{images}");
}

#[test]
fn containerd_ctr_pushes_and_pulls() {
    require_root();
    require_peer("containerd");
    require_peer("ctr");
    require_peer("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let reg = seeded_registry(dir.path());
    let cd = Containerd::start(dir.path());
    let ctr = |args: &[&str]| run(&mut cd.ctr(args));
    let src = format!("{}/seed/busybox:latest", reg.addr);
    ctr(&["images", "pull", "--plain-http", &src]);
    let dst = format!("{}/ctr/busybox:pushed", reg.addr);
    ctr(&["images", "tag", &src, &dst]);
    ctr(&["images", "push", "--plain-http", &dst]);
    // --sync: wait for containerd's garbage collection, which otherwise
    // races the prune below ("content digest ...: not found").
    ctr(&["images", "rm", "--sync", &src, &dst]);
    ctr(&["content", "prune", "references"]);
    ctr(&["images", "pull", "--plain-http", &dst]);
    let list = ctr(&["images", "ls", "-q"]);
    assert!(list.contains(&dst), "{list}");
    let a = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{src}")));
    let b = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{dst}")));
    assert_eq!(a, b);
}

#[test]
fn skopeo_against_htpasswd_and_token_auth() {
    require_root();
    require_peer("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let layout = busybox_layout(dir.path());
    let htpasswd = alice_htpasswd(dir.path());
    let src = format!("oci:{}:latest", layout.display());
    let push = |creds: Option<&str>, dest: &str| {
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--dest-creds", c]);
        }
        skopeo(&args, &[&src, &dest]).status.success()
    };
    let pull = |creds: Option<&str>, image: &str| {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--creds", c]);
        }
        skopeo(&args, &[&image]).status.success()
    };

    // htpasswd Basic.
    let cfg = dir.path().join("basic.yml");
    std::fs::write(&cfg, format!("auth:\n  htpasswd: {}\n", htpasswd.display())).unwrap();
    let reg = Serve::start(&dir.path().join("s1"), &["--config", cfg.to_str().unwrap()]);
    let dest = format!("docker://{}/b/busybox:1", reg.addr);
    assert!(!push(None, &dest), "anonymous push must be refused");
    assert!(
        !push(Some("alice:wrong"), &dest),
        "a wrong password must be refused"
    );
    assert!(push(Some("alice:s3cret"), &dest));
    assert!(!pull(None, &dest), "anonymous pull must be refused");
    assert!(pull(Some("alice:s3cret"), &dest));
    drop(reg);

    // Token flow: alice pushes to alice/*, anyone pulls public/*.
    let cfg = dir.path().join("token.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nhtpasswd = \"{}\"\n[auth.token]\nservice = \"berth-test\"\n\
             [[auth.token.rules]]\naccount = \"alice\"\nrepos = \"alice/*\"\nactions = [\"pull\", \"push\"]\n\
             [[auth.token.rules]]\naccount = \"alice\"\nrepos = \"public/*\"\nactions = [\"pull\", \"push\"]\n\
             [[auth.token.rules]]\naccount = \"anonymous\"\nrepos = \"public/*\"\nactions = [\"pull\"]\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    let reg = Serve::start(&dir.path().join("s2"), &["--config", cfg.to_str().unwrap()]);
    let mine = format!("docker://{}/alice/busybox:1", reg.addr);
    let public = format!("docker://{}/public/busybox:1", reg.addr);
    assert!(push(Some("alice:s3cret"), &mine));
    assert!(push(Some("alice:s3cret"), &public));
    assert!(
        !pull(None, &mine),
        "anonymous pull of alice/* must be refused"
    );
    assert!(pull(None, &public), "anonymous pull of public/* is allowed");
    let anon_dest = format!("docker://{}/public/busybox:anon", reg.addr);
    assert!(
        !push(None, &anon_dest),
        "anonymous push to public/* must be refused"
    );
    assert!(pull(Some("alice:s3cret"), &mine));
}

#[test]
fn containerd_ctr_uses_the_token_flow() {
    require_root();
    require_peer("containerd");
    require_peer("ctr");
    require_peer("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = alice_htpasswd(dir.path());
    let cfg = dir.path().join("token.yml");
    std::fs::write(
        &cfg,
        format!(
            "auth:\n  htpasswd: {}\n  token:\n    rules:\n      - {{ account: alice, repos: \"alice/*\", actions: [pull, push] }}\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    let layout = busybox_layout(dir.path());
    let reg = Serve::start(
        &dir.path().join("storage"),
        &["--config", cfg.to_str().unwrap()],
    );
    let src = format!("{}/alice/busybox:latest", reg.addr);
    assert!(skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:s3cret"
        ],
        &[
            &format!("oci:{}:latest", layout.display()),
            &format!("docker://{src}")
        ]
    )
    .status
    .success());
    let cd = Containerd::start(dir.path());
    let ctr = |args: &[&str]| cd.ctr(args).output().expect("run ctr");
    let anon = ctr(&["images", "pull", "--plain-http", &src]);
    assert!(
        !anon.status.success(),
        "anonymous pull of alice/* must be refused"
    );
    let ok = ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        "alice:s3cret",
        &src,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dst = format!("{}/alice/busybox:from-ctr", reg.addr);
    assert!(ctr(&["images", "tag", &src, &dst]).status.success());
    let push = ctr(&[
        "images",
        "push",
        "--plain-http",
        "--user",
        "alice:s3cret",
        &dst,
    ]);
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let wrong = ctr(&[
        "images",
        "push",
        "--plain-http",
        "--user",
        "alice:nope",
        &dst,
    ]);
    assert!(!wrong.status.success(), "a wrong password must be refused");
}

#[test]
fn kill_9_during_an_upload_keeps_committed_blobs_and_the_upload_resumes() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let mut reg = Serve::start(&storage, &[]);

    let committed: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let cd = format!("sha256:{}", sha256_hex(&committed));
    let (status, _, _) = http(
        &reg.addr,
        "POST",
        &format!("/v2/k/blobs/uploads/?digest={cd}"),
        &[],
        &committed,
    );
    assert_eq!(status, 201);

    let (status, h, _) = http(&reg.addr, "POST", "/v2/k/blobs/uploads/", &[], b"");
    assert_eq!(status, 202);
    let loc = header(&h, "location").to_string();
    let id = loc.rsplit('/').next().unwrap().to_string();
    let data: Vec<u8> = (0..8_000_000u32).map(|i| (i % 241) as u8).collect();

    // A first PATCH of 2 MB completes; a second one streams 3 of its 6 MB
    // and the server is killed mid-request.
    let first = 2_000_000;
    let (status, _, body) = http(
        &reg.addr,
        "PATCH",
        &loc,
        &[("Content-Range", &format!("0-{}", first - 1))],
        &data[..first],
    );
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let mut s = TcpStream::connect(&reg.addr).unwrap();
    write!(s, "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n", reg.addr, data.len() - first).unwrap();
    s.write_all(&data[first..first + 3_000_000]).unwrap();
    let session = storage.join("uploads").join(&id);
    let stored = || -> u64 {
        std::fs::read_dir(&session)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("data-"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored() < first as u64 + 1_000_000 {
        assert!(
            Instant::now() < deadline,
            "the server never wrote the second request's data"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    reg.kill9();
    drop(s);

    let reg = Serve::start(&storage, &[]);
    let (status, h, body) = http(&reg.addr, "GET", &format!("/v2/k/blobs/{cd}"), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(header(&h, "docker-content-digest"), cd);
    assert_eq!(body, committed, "the committed blob survives kill -9");

    // The session survives with what completed requests stored: a request
    // cut off counts for nothing, and the client resumes from the Range.
    let (status, h, _) = http(&reg.addr, "GET", &loc, &[], b"");
    assert_eq!(status, 204, "the upload session survives kill -9");
    let range = header(&h, "range").to_string();
    let have: usize = range.split('-').nth(1).unwrap().parse::<usize>().unwrap() + 1;
    assert_eq!(have, first, "{range}");
    let rest = &data[have..];
    let cr = format!("{have}-{}", data.len() - 1);
    let (status, _, body) = http(&reg.addr, "PATCH", &loc, &[("Content-Range", &cr)], rest);
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let d = format!("sha256:{}", sha256_hex(&data));
    let (status, _, body) = http(&reg.addr, "PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http(&reg.addr, "GET", &format!("/v2/k/blobs/{d}"), &[], b"");
    assert_eq!(status, 200);
    assert!(
        body == data,
        "the resumed upload has exactly the original bytes"
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Serve::start(&dir.path().join("storage"), &[]);
    let (status, h, _) = http(&reg.addr, "GET", "/v2/", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "docker-distribution-api-version"),
        "registry/2.0"
    );
    run(Command::new("kill").args(["-TERM", &reg.child.id().to_string()]));
    let status = reg.child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn access_log_has_one_json_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut reg = Serve::start_with_stdout(&dir.path().join("storage"), &[], out.into());
    let (status, _, _) = http(&reg.addr, "GET", "/v2/", &[], b"");
    assert_eq!(status, 200);
    let (status, _, _) = http(&reg.addr, "GET", "/v2/none/manifests/latest", &[], b"");
    assert_eq!(status, 404);
    // SIGTERM flushes the log on the way out.
    run(Command::new("kill").args(["-TERM", &reg.child.id().to_string()]));
    assert!(reg.child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("\"path\":\"/v2/\"") && lines[0].contains("\"status\":200"),
        "{text}"
    );
    assert!(
        lines[1].contains("\"method\":\"GET\"") && lines[1].contains("\"status\":404"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('{') && l.contains("\"micros\":")),
        "{text}"
    );
}

#[test]
fn serve_refuses_a_bad_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yml");
    std::fs::write(&cfg, "gc:\n  grace: 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["registry", "serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml") && err.contains("grace"), "{err}");
}

/// The interop the registry client owes its peers: what `berth push` puts
/// on Debian's docker-registry, containerd's ctr and podman pull and run.
#[test]
fn an_image_pushed_by_berth_is_pulled_and_run_by_ctr_and_podman() {
    require_root();
    for peer in ["containerd", "ctr", "runc", "podman"] {
        require_peer(peer);
    }
    let env = common::Env::new();
    env.import_busybox("bb", &["ENV GREETING=pushed-by-berth"]);
    let reg = DockerRegistry::start(&env.path(""), None);
    let image = format!("{}/interop/bb:v1", reg.addr);
    env.ok(&["push", "bb", &image]);
    let say = ["/bin/sh", "-c", "echo $GREETING"];

    let cd = Containerd::start(&env.path("containerd"));
    run(&mut cd.ctr(&["images", "pull", "--plain-http", &image]));
    let out = run(cd.ctr(&["run", "--rm", &image, "interop-ctr"]).args(say));
    assert_eq!(out, "pushed-by-berth\n", "ctr runs berth's push");

    let dir = env.path("podman");
    podman_in(&dir, &["pull", "--tls-verify=false", &image]);
    let mut args = vec!["run", "--rm", "--network", "none"];
    // podman's default rlimits are above what this machine lets it set.
    args.extend([
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    args.push(&image);
    args.extend(say);
    assert_eq!(
        podman_in(&dir, &args),
        "pushed-by-berth\n",
        "podman runs berth's push"
    );
}
