//! `berth pull`, `push`, `login`, `logout` and `berth run --pull` against
//! real registries started on 127.0.0.1: Debian's docker-registry (open and
//! with htpasswd) and `berth registry serve` (token auth); skopeo for
//! interop.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_testutil::require_peer;
use common::registry::*;
use common::Env;
use serde_json::Value;

/// The manifest `reference` of `repo` on the registry at `addr`, as JSON.
fn manifest(addr: &str, repo: &str, reference: &str) -> (Value, Vec<u8>) {
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    (serde_json::from_slice(&body).unwrap(), body)
}

/// Image records of a data root: `berth images -q` lines.
fn image_count(env: &Env) -> usize {
    env.ok(&["images", "-q"]).lines().count()
}

#[test]
fn push_pull_and_run_through_docker_registry() {
    let env = Env::new();
    let reg = DockerRegistry::start(&env.path(""), None);
    env.import_busybox("bb", &["ENV GREETING=hi"]);
    let dest = format!("{}/test/bb:v1", reg.addr);
    let digest = env
        .ok(&["push", "-q", "-t", "v2", "bb", &dest])
        .trim()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // Pushing again uploads nothing: the registry has every blob.
    let again = env.ok_stderr(&["push", "bb", &dest]);
    assert!(
        again.contains("exists") && !again.contains("done"),
        "{again}"
    );
    // skopeo reads what berth pushed, under both tags.
    require_peer("skopeo");
    let inspect = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/test/bb:v2", reg.addr)));
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());

    // A fresh data root pulls it and runs it.
    let other = Env::new();
    let pulled = other.ok(&["pull", "-q", &dest]);
    assert_eq!(pulled.trim(), digest);
    let out = other.ok(&["run", "--rm", &dest, "sh", "-c", "echo $GREETING"]);
    assert_eq!(out, "hi\n");
    // A second pull finds every layer present.
    let again = other.ok_stderr(&["pull", &dest]);
    assert!(
        again.contains("exists") && !again.contains("transferring"),
        "{again}"
    );

    // berth run pulls a missing image (podman's --pull missing, the default).
    let third = Env::new();
    let v2 = format!("{}/test/bb:v2", reg.addr);
    let out = third.ok(&["run", "--rm", &v2, "echo", "pulled on demand"]);
    assert_eq!(out, "pulled on demand\n");
    assert_eq!(image_count(&third), 1);
    // --pull never does not.
    let fourth = Env::new();
    let err = fourth.fails(&["run", "--rm", "--pull", "never", &v2, "true"]);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(image_count(&fourth), 0);
    // registries.conf can block a registry.
    let conf = fourth.path("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\nblocked = true\n",
            reg.addr
        ),
    )
    .unwrap();
    let out = fourth
        .command(&["pull", &v2])
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("blocked"), "{err}");
}

#[test]
fn an_image_pushed_by_skopeo_is_pulled_and_run() {
    let env = Env::new();
    require_peer("skopeo");
    env.import_busybox("bb", &["ENV GREETING=skopeo"]);
    let archive = env.path("bb.oci.tar");
    env.ok(&["save", "bb", "-o", archive.to_str().unwrap()]);
    let reg = Serve::start(&env.path("storage"), &[]);
    let image = format!("{}/seed/busybox:latest", reg.addr);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{image}")));
    let other = Env::new();
    let out = other.ok(&["run", "--rm", &image, "sh", "-c", "echo from $GREETING"]);
    assert_eq!(out, "from skopeo\n");
}

#[test]
fn htpasswd_login_logout_and_wrong_credentials() {
    let env = Env::new();
    let htpasswd = alice_htpasswd(&env.path(""));
    let reg = DockerRegistry::start(&env.path(""), Some(&htpasswd));
    env.import_busybox("bb", &[]);
    let dest = format!("{}/alice/bb:1", reg.addr);
    let authfile = env.path("auth.json");
    let authfile = authfile.to_str().unwrap();

    let err = env.fails(&["push", "--authfile", authfile, "bb", &dest]);
    assert!(err.contains("401") && err.contains("berth login"), "{err}");
    let err = env.fails(&["push", "--creds", "alice:wrong", "bb", &dest]);
    assert!(
        err.contains("401") && err.contains("refused the credentials of user \"alice\""),
        "{err}"
    );
    // A wrong password is refused by login too, and nothing is stored.
    let login = |password: &str| {
        let mut child = env
            .command(&[
                "login",
                "-u",
                "alice",
                "--password-stdin",
                "--authfile",
                authfile,
                &reg.addr,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("nope");
    assert!(!out.status.success(), "{}", env.describe(&out));
    assert!(!std::path::Path::new(authfile).exists());
    let out = login("s3cret");
    assert!(out.status.success(), "{}", env.describe(&out));

    env.ok(&["push", "--authfile", authfile, "bb", &dest]);
    let other = Env::new();
    let err = other.fails(&[
        "pull",
        "--authfile",
        &other.path("none.json").display().to_string(),
        &dest,
    ]);
    assert!(err.contains("401"), "{err}");
    other.ok(&["pull", "--authfile", authfile, &dest]);
    env.ok(&["logout", "--authfile", authfile, &reg.addr]);
    let third = Env::new();
    let err = third.fails(&["pull", "--authfile", authfile, &dest]);
    assert!(err.contains("401"), "{err}");
}

/// A token-auth `berth registry serve`: alice pushes and pulls alice/*.
fn token_registry(env: &Env) -> Serve {
    let htpasswd = alice_htpasswd(&env.path(""));
    let cfg = env.path("token.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nhtpasswd = \"{}\"\n[auth.token]\nservice = \"berth-test\"\n\
             [[auth.token.rules]]\naccount = \"alice\"\nrepos = \"alice/*\"\nactions = [\"pull\", \"push\"]\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    Serve::start(&env.path("storage"), &["--config", cfg.to_str().unwrap()])
}

#[test]
fn bearer_tokens_and_cross_repository_mounts() {
    let env = Env::new();
    let reg = token_registry(&env);
    env.import_busybox("bb", &[]);
    let dest = format!("{}/alice/bb:1", reg.addr);
    let err = env.fails(&["push", "bb", &dest]);
    assert!(
        err.contains("401") && err.contains("needs credentials"),
        "{err}"
    );
    env.ok(&["push", "--creds", "alice:s3cret", "bb", &dest]);

    let other = Env::new();
    let err = other.fails(&["pull", &dest]);
    assert!(err.contains("401") && err.contains("alice/bb"), "{err}");
    let err = other.fails(&["pull", "--creds", "alice:wrong", &dest]);
    assert!(err.contains("refused the credentials"), "{err}");
    other.ok(&["pull", "--creds", "alice:s3cret", &dest]);
    let out = other.ok(&["run", "--rm", "--pull", "never", &dest, "echo", "ok"]);
    assert_eq!(out, "ok\n");
    // Pushed to another repository of the same registry: mounted, not uploaded.
    let copy = format!("{}/alice/copy:1", reg.addr);
    let log = other.ok_stderr(&["push", "--creds", "alice:s3cret", &dest, &copy]);
    assert!(log.contains("mounted") && !log.contains(": done"), "{log}");
    let third = Env::new();
    third.ok(&["pull", "--creds", "alice:s3cret", &copy]);
}

#[test]
fn a_multi_platform_index_gives_the_platform_asked_for() {
    let env = Env::new();
    let reg = Serve::start(&env.path("storage"), &[]);
    env.import_busybox("amd", &["ENV P=amd64"]);
    env.import_busybox("arm", &["ENV P=arm64"]);
    let mut entries = Vec::new();
    for (name, arch) in [("amd", "amd64"), ("arm", "arm64")] {
        let digest = env
            .ok(&[
                "push",
                "-q",
                name,
                &format!("{}/multi/img:{arch}", reg.addr),
            ])
            .trim()
            .to_string();
        let (_, body) = manifest(&reg.addr, "multi/img", &digest);
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": body.len(),
            "platform": {"architecture": arch, "os": "linux"}
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let (status, _, body) = http(
        &reg.addr,
        "PUT",
        "/v2/multi/img/manifests/latest",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        &serde_json::to_vec(&index).unwrap(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let image = format!("{}/multi/img:latest", reg.addr);
    let blob = |env: &Env, digest: &Value| {
        let hex = digest
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        env.root().join("content/blobs/sha256").join(hex).exists()
    };

    let host = Env::new();
    let out = host.ok(&["run", "--rm", &image, "sh", "-c", "echo $P"]);
    assert_eq!(out, "amd64\n");
    let arm = Env::new();
    arm.ok(&["pull", "--platform", "linux/arm64", &image]);
    assert!(
        blob(&arm, &entries[1]["digest"]),
        "the arm64 manifest was pulled"
    );
    assert!(
        !blob(&arm, &entries[0]["digest"]),
        "the amd64 manifest was not"
    );
    let err = Env::new().fails(&["pull", "--platform", "linux/s390x", &image]);
    assert!(
        err.contains("linux/arm64") && err.contains("--platform"),
        "{err}"
    );
}

#[test]
fn a_blob_with_the_wrong_digest_is_refused_and_nothing_is_stored() {
    let env = Env::new();
    let reg = DockerRegistry::start(&env.path(""), None);
    env.import_busybox("bb", &[]);
    let dest = format!("{}/test/bad:1", reg.addr);
    env.ok(&["push", "bb", &dest]);
    let (m, _) = manifest(&reg.addr, "test/bad", "1");
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    // Flip one byte in the middle of the layer's data, keeping its size.
    let path = reg.blob_data(&layer);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, &data).unwrap();

    let other = Env::new();
    let err = other.fails(&["pull", &dest]);
    assert!(
        err.contains("digest mismatch") && err.contains(&layer),
        "{err}"
    );
    assert_eq!(image_count(&other), 0, "no image record");
    let hex = layer.trim_start_matches("sha256:");
    assert!(!other.root().join("content/blobs/sha256").join(hex).exists());
    assert!(other.snapshots().is_empty(), "{:?}", other.snapshots());
}

/// Reads an HTTP request head (up to the blank line) from `client`; None for
/// a TLS handshake (berth tries HTTPS first), closed at once, or a closed
/// connection.
fn request_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 || (head.is_empty() && byte[0] == 0x16) {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).to_string())
}

/// A proxy in front of `upstream` that cuts the first response to a GET of
/// `/blobs/<digest>` after `cut` bytes, and records whether a later request
/// asked for a `Range` (which it drops with `ignore_range`, as a server
/// without Range support would). One request per connection (it adds
/// `Connection: close`).
struct CuttingProxy {
    addr: String,
    ranged: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: String, digest: String, cut: usize, ignore_range: bool) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let ranged = Arc::new(AtomicBool::new(false));
        let seen = ranged.clone();
        std::thread::spawn(move || {
            let mut cut_done = false;
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Some(text) = request_head(&mut client) else {
                    continue;
                };
                let is_blob =
                    text.starts_with("GET ") && text.contains(&format!("/blobs/{digest}"));
                let mut text = text;
                if is_blob && text.to_ascii_lowercase().contains("\r\nrange: bytes=") {
                    seen.store(true, Ordering::SeqCst);
                    if ignore_range {
                        text = text
                            .split_inclusive("\r\n")
                            .filter(|l| !l.to_ascii_lowercase().starts_with("range:"))
                            .collect();
                    }
                }
                let request = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                let Ok(mut up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                up.write_all(request.as_bytes()).unwrap();
                let mut response = Vec::new();
                let _ = up.read_to_end(&mut response);
                if is_blob && !cut_done {
                    cut_done = true;
                    let _ = client.write_all(&response[..cut.min(response.len())]);
                } else {
                    let _ = client.write_all(&response);
                }
                // Dropping the client closes (or cuts) the connection.
            }
        });
        CuttingProxy { addr, ranged }
    }
}

#[test]
fn a_dropped_connection_is_resumed_by_range() {
    let env = Env::new();
    let reg = DockerRegistry::start(&env.path(""), None);
    env.import_busybox("bb", &[]);
    env.ok(&["push", "bb", &format!("{}/test/resume:1", reg.addr)]);
    let (m, _) = manifest(&reg.addr, "test/resume", "1");
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let size = m["layers"][0]["size"].as_u64().unwrap();
    assert!(size > 200_000, "the layer is big enough to cut: {size}");
    let proxy = CuttingProxy::start(reg.addr.clone(), layer.clone(), 100_000, false);
    let other = Env::new();
    let image = format!("{}/test/resume:1", proxy.addr);
    let log = other.ok_stderr(&["pull", &image]);
    assert!(log.contains("resumed at byte"), "{log}");
    assert!(
        proxy.ranged.load(Ordering::SeqCst),
        "a Range request was sent"
    );
    let out = other.ok(&["run", "--rm", &image, "echo", "resumed"]);
    assert_eq!(out, "resumed\n");

    // A server that ignores Range sends the whole blob again: the download
    // starts over under the unpacker reading it, which then reads the blob
    // from the store.
    let proxy = CuttingProxy::start(reg.addr.clone(), layer, 100_000, true);
    let third = Env::new();
    let image = format!("{}/test/resume:1", proxy.addr);
    third.ok_stderr(&["pull", &image]);
    assert!(proxy.ranged.load(Ordering::SeqCst), "a Range was asked for");
    let out = third.ok(&["run", "--rm", &image, "echo", "restarted"]);
    assert_eq!(out, "restarted\n");
    assert_eq!(third.snapshots().len(), 1, "{:?}", third.snapshots());
}

/// A proxy in front of `upstream` that sends the first response to a GET of
/// `/blobs/<digest>` up to `held` bytes, then holds the rest back until
/// `ready()` (polled) is true or 60 s have passed; `seen` records whether
/// `ready()` came true. One request per connection (`Connection: close`).
struct HoldingProxy {
    addr: String,
    seen: Arc<AtomicBool>,
}

impl HoldingProxy {
    fn start(
        upstream: String,
        digest: String,
        held: usize,
        ready: impl Fn() -> bool + Send + Sync + 'static,
    ) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(AtomicBool::new(false));
        let saw = seen.clone();
        let ready = Arc::new(ready);
        std::thread::spawn(move || {
            let held_once = Arc::new(AtomicBool::new(false));
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let (upstream, digest, held_once) =
                    (upstream.clone(), digest.clone(), held_once.clone());
                let (ready, saw) = (ready.clone(), saw.clone());
                // A thread per connection: the config is fetched while the
                // layer is held back.
                std::thread::spawn(move || {
                    let Some(text) = request_head(&mut client) else {
                        return;
                    };
                    let is_blob =
                        text.starts_with("GET ") && text.contains(&format!("/blobs/{digest}"));
                    let request = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                    let Ok(mut up) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    up.write_all(request.as_bytes()).unwrap();
                    let mut response = Vec::new();
                    let _ = up.read_to_end(&mut response);
                    if is_blob && response.len() > held && !held_once.swap(true, Ordering::SeqCst) {
                        let _ = client.write_all(&response[..held]);
                        let _ = client.flush();
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(60);
                        while std::time::Instant::now() < deadline {
                            if ready() {
                                saw.store(true, Ordering::SeqCst);
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        let _ = client.write_all(&response[held..]);
                    } else {
                        let _ = client.write_all(&response);
                    }
                });
            }
        });
        HoldingProxy { addr, seen }
    }
}

#[test]
fn a_layer_is_unpacked_while_it_downloads() {
    let env = Env::new();
    let reg = DockerRegistry::start(&env.path(""), None);
    // One layer: a directory, then 8 MiB that gzip cannot shrink.
    let dir = env.path("streamed");
    std::fs::create_dir_all(dir.join("early")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(dir.join("noise"), &noise).unwrap();
    let tar = env.path("streamed.tar");
    run(Command::new(require_peer("tar"))
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .args(["early", "noise"]));
    env.ok(&["import", tar.to_str().unwrap(), "streamed"]);
    env.ok(&["push", "streamed", &format!("{}/test/streamed:1", reg.addr)]);
    let (m, _) = manifest(&reg.addr, "test/streamed", "1");
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();

    // The registry sends 6 MiB of the layer, then waits until early/ is
    // in the snapshot being unpacked.
    let other = Env::new();
    let snapshots = other.root().join("snapshotter/snapshots");
    let proxy = HoldingProxy::start(reg.addr.clone(), layer, 6 << 20, move || {
        std::fs::read_dir(&snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().join("fs/early").is_dir())
    });
    other.ok_stderr(&["pull", &format!("{}/test/streamed:1", proxy.addr)]);
    assert!(
        proxy.seen.load(Ordering::SeqCst),
        "early/ was unpacked while the rest of its layer was still held back"
    );
    let snaps = other.snapshots();
    assert_eq!(snaps.len(), 1, "the layer, committed: {snaps:?}");
}

/// `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    run(Command::new(require_peer("openssl"))
        .current_dir(dir)
        .args(args));
}

#[test]
fn a_registry_over_tls_with_its_own_ca() {
    let env = Env::new();
    let pki = env.path("pki");
    std::fs::create_dir_all(&pki).unwrap();
    openssl(
        &pki,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        &pki,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        pki.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let cfg = env.path("tls.yml");
    std::fs::write(
        &cfg,
        format!(
            "tls:\n  cert: {}\n  key: {}\n",
            pki.join("server.crt").display(),
            pki.join("server.key").display()
        ),
    )
    .unwrap();
    let reg = Serve::start(&env.path("storage"), &["--config", cfg.to_str().unwrap()]);
    let certs = env.path("certs.d");
    std::fs::create_dir_all(certs.join(&reg.addr)).unwrap();
    std::fs::copy(pki.join("ca.crt"), certs.join(&reg.addr).join("ca.crt")).unwrap();
    let certs = certs.to_str().unwrap();

    env.import_busybox("bb", &[]);
    let dest = format!("{}/tls/bb:1", reg.addr);
    let err = env.fails(&["push", "bb", &dest]);
    assert!(
        err.contains("https://") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    env.ok(&["push", "--cert-dir", certs, "bb", &dest]);
    let other = Env::new();
    other.ok(&["pull", "--cert-dir", certs, &dest]);
    let out = other.ok(&["run", "--rm", "--pull", "never", &dest, "echo", "tls"]);
    assert_eq!(out, "tls\n");
    // A CA in the system's trust store (here $SSL_CERT_FILE, which replaces
    // /etc/ssl/certs/ca-certificates.crt) is trusted without certs.d.
    let third = Env::new();
    let out = third
        .command(&["pull", &dest])
        .env("SSL_CERT_FILE", pki.join("ca.crt"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", third.describe(&out));
    let out = third
        .command(&["pull", &dest])
        .env("SSL_CERT_FILE", pki.join("server.key"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("server.key")
            && err.contains("not a PEM certificate"),
        "{err}"
    );
}
